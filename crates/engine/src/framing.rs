//! Content-type keys and the JSON message framing of stored records.

/// The comparable key of a content type: its media type (before any `;` parameters), trimmed
/// and lower-cased. `Text/Plain; charset=utf-8` and `text/plain` share a key.
pub fn media_key(content_type: &str) -> String {
    content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase()
}

/// Byte length of the first `n` messages of a stored JSON record (messages each followed by
/// `,`), or `None` if the record holds fewer than `n`.
///
/// The record was validated when stored, so a `,` at nesting depth 0 outside a string always
/// ends a message.
pub fn json_prefix_len(record: &[u8], n: u64) -> Option<usize> {
    if n == 0 {
        return Some(0);
    }
    let mut seen = 0u64;
    let mut depth = 0usize;
    let mut in_string = false;
    let mut escaped = false;
    for (i, &b) in record.iter().enumerate() {
        if in_string {
            match (escaped, b) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'[' | b'{' => depth += 1,
            b']' | b'}' => depth = depth.saturating_sub(1),
            b',' if depth == 0 => {
                seen += 1;
                if seen == n {
                    return Some(i + 1);
                }
            }
            _ => {}
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn media_keys_ignore_case_and_parameters() {
        assert_eq!(media_key("Text/Plain; charset=utf-8"), "text/plain");
        assert_eq!(media_key(" application/json "), "application/json");
    }

    #[test]
    fn json_prefix_counts_top_level_messages() {
        let rec = br#"{"a":"x,y"},[1,2],"q\",",3,"#;
        assert_eq!(json_prefix_len(rec, 0), Some(0));
        assert_eq!(json_prefix_len(rec, 1), Some(12));
        assert_eq!(
            &rec[..json_prefix_len(rec, 2).unwrap()],
            br#"{"a":"x,y"},[1,2],"#
        );
        assert_eq!(json_prefix_len(rec, 3), Some(rec.len() - 2));
        assert_eq!(json_prefix_len(rec, 4), Some(rec.len()));
        assert_eq!(json_prefix_len(rec, 5), None);
    }
}
