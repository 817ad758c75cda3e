//! The protocol's glob over stream paths: `*` matches exactly one path segment, `**` zero or
//! more segments; any other segment matches itself.

/// Whether `path` matches `pattern` (both `/`-separated, root-relative).
pub fn matches(pattern: &str, path: &str) -> bool {
    let pat: Vec<&str> = pattern.split('/').collect();
    let segs: Vec<&str> = path.split('/').collect();
    seg_match(&pat, &segs)
}

fn seg_match(pat: &[&str], segs: &[&str]) -> bool {
    // Dynamic programming over (pattern segment, path segment): linear in their product, so
    // no pattern (many `**`s) makes a match exponential.
    // `ok[j]`: the pattern so far matches the first `j` path segments.
    let mut ok = vec![false; segs.len() + 1];
    ok[0] = true;
    for p in pat {
        let mut next = vec![false; segs.len() + 1];
        if *p == "**" {
            let mut any = false;
            for j in 0..=segs.len() {
                any |= ok[j];
                next[j] = any;
            }
        } else {
            for j in 0..segs.len() {
                next[j + 1] = ok[j] && (*p == "*" || *p == segs[j]);
            }
        }
        ok = next;
    }
    ok[segs.len()]
}

#[cfg(test)]
mod tests {
    use super::matches;

    #[test]
    fn star_is_one_segment_and_double_star_any_number() {
        for (pat, path, want) in [
            ("events/*", "events/a", true),
            ("events/*", "events/a/b", false),
            ("events/*", "events", false),
            ("events/**", "events", true),
            ("events/**", "events/a/b", true),
            ("**/x", "x", true),
            ("**/x", "a/b/x", true),
            ("**/x", "a/b/y", false),
            ("a/*/c", "a/b/c", true),
            ("a/*/c", "a/b/d", false),
            ("exact/path", "exact/path", true),
            ("exact/path", "exact/pat", false),
            ("**", "anything/at/all", true),
        ] {
            assert_eq!(matches(pat, path), want, "{pat} vs {path}");
        }
    }
}
