//! Canonical request paths, so that every spelling a normalizing proxy or client library
//! might turn into another one names the same stream, or is refused.
//!
//! A stream's key is its path, so `/v1/stream/x/../y` and `/v1/stream/y`, or `a%2Fb` and
//! `a/b`, must not be two streams: a proxy that normalizes the path would send a request for
//! one to the other. The rule (RFC 3986 §6.2.2 normalization, plus refusals where the
//! spellings cannot be told apart safely):
//!
//! - percent-escapes of unreserved characters (`A-Z a-z 0-9 - . _ ~`) are decoded
//!   (`a%62` is `ab`); every other escape is kept, with upper-case hex (`%c3%a9` is `%C3%A9`);
//! - a byte that may not appear raw in a path segment (a space, `"`, non-ASCII, ...) is
//!   escaped, so the raw and escaped spellings are one name;
//! - refused: empty segments (`//`, a trailing `/`), dot segments (`.`, `..`, also as
//!   `%2e`), an escaped `/` (`%2F`), a backslash raw or escaped (URL parsers turn it into `/`),
//!   control characters (escaped: NUL, CR, LF, DEL, ...), and a `%` not followed by two hex
//!   digits.
//!
//! The canonical form is itself a valid path in canonical form, so `Location` values and
//! `Stream-Forked-From` round-trip.

use std::borrow::Cow;
use std::fmt;

/// Why a path has no canonical form.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PathError {
    NotAbsolute,
    EmptySegment,
    DotSegment,
    EncodedSlash,
    Backslash,
    ControlCharacter,
    BadEscape,
}

impl fmt::Display for PathError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::NotAbsolute => "the path must start with /",
            Self::EmptySegment => "the path has an empty segment (// or a trailing /)",
            Self::DotSegment => "the path has a . or .. segment (also as %2e)",
            Self::EncodedSlash => "the path has an encoded slash (%2F)",
            Self::Backslash => "the path has a backslash (raw or %5C)",
            Self::ControlCharacter => "the path has an encoded control character",
            Self::BadEscape => "the path has a % not followed by two hex digits",
        })
    }
}

/// A byte that stays as it is in a canonical path segment: RFC 3986 `pchar` minus `%`.
fn is_raw(b: u8) -> bool {
    b.is_ascii_alphanumeric()
        || matches!(
            b,
            b'-' | b'.'
                | b'_'
                | b'~'
                | b'!'
                | b'$'
                | b'&'
                | b'\''
                | b'('
                | b')'
                | b'*'
                | b'+'
                | b','
                | b';'
                | b'='
                | b':'
                | b'@'
        )
}

fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

fn is_control(b: u8) -> bool {
    b < 0x20 || b == 0x7f
}

fn hex(b: u8) -> Option<u8> {
    char::from(b)
        .to_digit(16)
        .and_then(|d| u8::try_from(d).ok())
}

/// The canonical form of `path` (an absolute path, no query). Borrowed when `path` already
/// is canonical, which is the case for every ordinary request.
pub fn canonical(path: &str) -> Result<Cow<'_, str>, PathError> {
    let bytes = path.as_bytes();
    if bytes.first() != Some(&b'/') {
        return Err(PathError::NotAbsolute);
    }
    if path == "/" {
        return Ok(Cow::Borrowed(path));
    }
    // The common case, checked without allocating: only raw bytes, no escapes.
    if bytes[1..].iter().all(|&b| b == b'/' || is_raw(b)) {
        check_segments(path)?;
        return Ok(Cow::Borrowed(path));
    }
    let mut out = String::with_capacity(path.len() + 8);
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b == b'%' {
            let (Some(hi), Some(lo)) = (
                bytes.get(i + 1).copied().and_then(hex),
                bytes.get(i + 2).copied().and_then(hex),
            ) else {
                return Err(PathError::BadEscape);
            };
            let decoded = hi << 4 | lo;
            match decoded {
                b'/' => return Err(PathError::EncodedSlash),
                b'\\' => return Err(PathError::Backslash),
                d if is_control(d) => return Err(PathError::ControlCharacter),
                d if is_unreserved(d) => out.push(char::from(d)),
                d => push_escape(&mut out, d),
            }
            i += 3;
            continue;
        }
        match b {
            b'/' => out.push('/'),
            b'\\' => return Err(PathError::Backslash),
            b if is_control(b) => return Err(PathError::ControlCharacter),
            b if is_raw(b) => out.push(char::from(b)),
            b => push_escape(&mut out, b),
        }
        i += 1;
    }
    check_segments(&out)?;
    Ok(Cow::Owned(out))
}

fn push_escape(out: &mut String, b: u8) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    out.push('%');
    out.push(char::from(HEX[usize::from(b >> 4)]));
    out.push(char::from(HEX[usize::from(b & 15)]));
}

/// Refuse empty and dot segments of a path whose escapes are already decoded where they
/// matter (an escaped `.` is decoded, so `%2e%2E` is seen here as `..`).
fn check_segments(path: &str) -> Result<(), PathError> {
    for segment in path[1..].split('/') {
        match segment {
            "" => return Err(PathError::EmptySegment),
            "." | ".." => return Err(PathError::DotSegment),
            _ => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(p: &str) -> String {
        canonical(p)
            .unwrap_or_else(|e| panic!("{p}: {e}"))
            .into_owned()
    }

    #[test]
    fn ordinary_paths_are_borrowed() {
        for p in [
            "/",
            "/healthz",
            "/v1/stream/a-b_c.d~e",
            "/v1/stream/a/b",
            "/v1/stream/a:b@c",
        ] {
            assert!(matches!(canonical(p), Ok(Cow::Borrowed(_))), "{p}");
        }
    }

    #[test]
    fn equivalent_spellings_have_one_form() {
        assert_eq!(ok("/v1/stream/a%62"), "/v1/stream/ab");
        assert_eq!(ok("/v1/%73tream/x"), "/v1/stream/x");
        assert_eq!(ok("/v1/stream/a%2Eb"), "/v1/stream/a.b");
        assert_eq!(ok("/v1/stream/%7e"), "/v1/stream/~");
        assert_eq!(ok("/v1/stream/%c3%a9"), "/v1/stream/%C3%A9");
        assert_eq!(ok("/v1/stream/\u{e9}"), "/v1/stream/%C3%A9");
        assert_eq!(ok("/v1/stream/a b"), "/v1/stream/a%20b");
        assert_eq!(ok("/v1/stream/a%3ab"), "/v1/stream/a%3Ab");
        assert_eq!(ok("/v1/stream/%25"), "/v1/stream/%25");
        // The canonical form is a fixed point.
        for p in ["/v1/stream/%C3%A9", "/v1/stream/a%20b", "/v1/stream/%25"] {
            assert_eq!(ok(p), p);
        }
    }

    #[test]
    fn ambiguous_spellings_are_refused() {
        use PathError as E;
        for (p, e) in [
            ("v1/stream/a", E::NotAbsolute),
            ("", E::NotAbsolute),
            ("/v1/stream//a", E::EmptySegment),
            ("/v1/stream/a/", E::EmptySegment),
            ("/v1/stream/", E::EmptySegment),
            ("/v1/stream/./a", E::DotSegment),
            ("/v1/stream/x/../y", E::DotSegment),
            ("/v1/stream/..", E::DotSegment),
            ("/v1/stream/%2e%2E", E::DotSegment),
            ("/v1/stream/.%2e/a", E::DotSegment),
            ("/v1/stream/%2e", E::DotSegment),
            ("/v1/stream/a%2Fb", E::EncodedSlash),
            ("/v1/stream/a%2fb", E::EncodedSlash),
            ("/v1/stream/a\\b", E::Backslash),
            ("/v1/stream/a%5cb", E::Backslash),
            ("/v1/stream/%00", E::ControlCharacter),
            ("/v1/stream/a%0Ab", E::ControlCharacter),
            ("/v1/stream/%7F", E::ControlCharacter),
            ("/v1/stream/a\u{1}", E::ControlCharacter),
            ("/v1/stream/%", E::BadEscape),
            ("/v1/stream/%4", E::BadEscape),
            ("/v1/stream/%zz", E::BadEscape),
        ] {
            assert_eq!(canonical(p), Err(e), "{p:?}");
        }
    }
}
