//! Offsets on the wire: `%016d_%016d`, the first part reserved (always 0 today) and the second
//! the byte position in the stream's stored form. Sentinels: `-1` (start) and `now` (tail).

use super::super::ApiError;
use http::HeaderValue;
use riffle_engine::ReadFrom;

/// The protocol's offset text for byte position `pos`: `%016d_%016d`, first part always 0.
pub fn format_offset(pos: u64) -> String {
    match offset_digits(pos) {
        Some(buf) => String::from_utf8(buf.to_vec()).expect("offset digits are ASCII"),
        None => format!("{:016}_{pos:016}", 0),
    }
}

/// [`format_offset`] as a header value, without the intermediate `String` (every response
/// carries one).
pub fn offset_header(pos: u64) -> HeaderValue {
    match offset_digits(pos) {
        Some(buf) => HeaderValue::from_bytes(&buf).expect("offset digits are visible ASCII"),
        None => {
            HeaderValue::from_str(&format_offset(pos)).expect("offset digits are visible ASCII")
        }
    }
}

/// The digits of a position that fits 16 of them, filled in place (no formatter).
fn offset_digits(pos: u64) -> Option<[u8; 33]> {
    const WIDTH: u64 = 10_000_000_000_000_000; // 10^16
    if pos >= WIDTH {
        return None;
    }
    let mut buf = *b"0000000000000000_0000000000000000";
    let (mut n, mut i) = (pos, buf.len());
    while n > 0 {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
    }
    Some(buf)
}

/// Parse a client-supplied offset. An offset that is well-formed but names no position this
/// server could have minted (a non-zero first part, or digits past `u64`) maps to `u64::MAX`,
/// which every stream treats as beyond its tail.
pub fn parse_offset(s: &str) -> Result<ReadFrom, ApiError> {
    match s {
        "-1" => return Ok(ReadFrom::Start),
        "now" => return Ok(ReadFrom::Tail),
        _ => {}
    }
    let bad = || {
        ApiError::bad_request(format!(
            "malformed offset {s:?}: expected -1, now or digits_digits"
        ))
    };
    let (hi, lo) = s.split_once('_').ok_or_else(bad)?;
    let digits = |p: &str| !p.is_empty() && p.len() <= 32 && p.bytes().all(|b| b.is_ascii_digit());
    if !digits(hi) || !digits(lo) {
        return Err(bad());
    }
    let hi_zero = hi.bytes().all(|b| b == b'0');
    let pos = match lo.parse::<u64>() {
        Ok(p) if hi_zero => p,
        _ => u64::MAX,
    };
    Ok(ReadFrom::At(pos))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        assert_eq!(format_offset(0), "0000000000000000_0000000000000000");
        assert_eq!(format_offset(42), "0000000000000000_0000000000000042");
        assert_eq!(parse_offset(&format_offset(42)).unwrap(), ReadFrom::At(42));
        for pos in [
            1,
            9,
            10,
            123_456_789,
            9_999_999_999_999_999,
            10_000_000_000_000_000,
            u64::MAX,
        ] {
            assert_eq!(format_offset(pos), format!("{:016}_{pos:016}", 0));
            assert_eq!(offset_header(pos), format_offset(pos).as_str());
        }
    }

    #[test]
    fn sentinels_and_garbage() {
        assert_eq!(parse_offset("-1").unwrap(), ReadFrom::Start);
        assert_eq!(parse_offset("now").unwrap(), ReadFrom::Tail);
        assert_eq!(
            parse_offset("9999999999999999_9999999999999999").unwrap(),
            ReadFrom::At(u64::MAX)
        );
        for bad in [
            "", "_", "1_", "_1", "a_1", "1,2", "../x", "1_2_3", "-2", "NOW", "1 _2", "\0",
        ] {
            assert!(parse_offset(bad).is_err(), "{bad:?}");
        }
    }
}
