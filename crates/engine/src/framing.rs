//! Content-type keys and the JSON message framing of stored records.

/// The comparable key of a content type: its media type (before any `;` parameters), trimmed
/// and lower-cased. `Text/Plain; charset=utf-8` and `text/plain` share a key.
pub fn media_key(content_type: &str) -> String {
    media_type(content_type).to_ascii_lowercase()
}

/// The media type of a content type as written: before any `;`, trimmed, case kept.
pub fn media_type(content_type: &str) -> &str {
    // Content types come from header values, which are visible ASCII: ASCII trimming suffices.
    let end = content_type
        .bytes()
        .position(|b| b == b';')
        .unwrap_or(content_type.len());
    content_type[..end].trim_ascii()
}

/// Whether `content_type` has the media type `key` (a [`media_key`]), without allocating: it is
/// asked on every append.
pub fn has_media_key(content_type: &str, key: &str) -> bool {
    // Clients nearly always send the type as the key spells it: one comparison decides.
    if let Some(rest) = content_type.as_bytes().strip_prefix(key.as_bytes())
        && matches!(rest.first(), None | Some(b';'))
    {
        return true;
    }
    media_type(content_type).eq_ignore_ascii_case(key)
}

/// End offsets (just past each `,`) of the messages of a stored JSON record: messages each
/// followed by `,`.
///
/// The record was validated when stored, so a `,` at nesting depth 0 outside a string always
/// ends a message.
fn json_message_ends(record: &[u8]) -> impl Iterator<Item = usize> + '_ {
    let mut depth = 0usize;
    let mut in_string = false;
    let mut escaped = false;
    record.iter().enumerate().filter_map(move |(i, &b)| {
        if in_string {
            match (escaped, b) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_string = false,
                _ => {}
            }
            return None;
        }
        match b {
            b'"' => in_string = true,
            b'[' | b'{' => depth += 1,
            b']' | b'}' => depth = depth.saturating_sub(1),
            b',' if depth == 0 => return Some(i + 1),
            _ => {}
        }
        None
    })
}

/// Byte length of the first `n` messages of a stored JSON record, or `None` if the record
/// holds fewer than `n`.
pub fn json_prefix_len(record: &[u8], n: u64) -> Option<usize> {
    if n == 0 {
        return Some(0);
    }
    json_message_ends(record).nth(usize::try_from(n - 1).ok()?)
}

/// Number of messages in a stored JSON record.
pub fn json_message_count(record: &[u8]) -> u64 {
    json_message_ends(record).count() as u64
}

/// Whether byte `at` of a stored JSON record falls between two messages.
pub fn json_is_boundary(record: &[u8], at: usize) -> bool {
    at == 0
        || json_message_ends(record)
            .take_while(|&e| e <= at)
            .any(|e| e == at)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn media_keys_ignore_case_and_parameters() {
        assert_eq!(media_key("Text/Plain; charset=utf-8"), "text/plain");
        assert_eq!(media_key(" application/json "), "application/json");
        assert!(has_media_key(
            "Application/JSON; charset=utf-8",
            "application/json"
        ));
        assert!(!has_media_key("application/jsonl", "application/json"));
        assert!(has_media_key("application/json;x=1", "application/json"));
        assert!(has_media_key("application/json ; x=1", "application/json"));
        assert!(!has_media_key("application/json x", "application/json"));
        assert_eq!(media_type(" Text/Plain ; q=1"), "Text/Plain");
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
        assert_eq!(json_message_count(rec), 4);
        assert!(json_is_boundary(rec, 0) && json_is_boundary(rec, 12));
        assert!(!json_is_boundary(rec, 1) && !json_is_boundary(rec, 6));
    }
}
