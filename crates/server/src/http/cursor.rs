//! `Stream-Cursor`: the 20-second interval number since 2024-10-09T00:00:00Z, always strictly
//! greater than the cursor the client echoed, so CDN-collapsed long-polls never loop on one
//! cached response.

const EPOCH_MS: i64 = 1_728_432_000_000;
const INTERVAL_MS: i64 = 20_000;

pub fn next_cursor(now_ms: i64, client: Option<&str>) -> String {
    let current = u64::try_from((now_ms - EPOCH_MS).max(0) / INTERVAL_MS).unwrap_or(0);
    // A cursor is a decimal string: compared and advanced as one, so even a client's cursor
    // past u64 gets a greater one back.
    let client = client
        .filter(|c| !c.is_empty() && c.bytes().all(|b| b.is_ascii_digit()))
        .map(|c| match c.trim_start_matches('0') {
            "" => "0",
            digits => digits,
        });
    match client {
        Some(c) if at_least(c, &current.to_string()) => {
            let jitter_secs = fastrand::u64(1..=3600);
            add(c, jitter_secs.div_ceil(20).max(1))
        }
        _ => current.to_string(),
    }
}

/// `a >= b` for decimal strings without leading zeros.
fn at_least(a: &str, b: &str) -> bool {
    (a.len(), a) >= (b.len(), b)
}

/// The decimal string `a` (no leading zeros; empty is 0) plus `n`.
fn add(a: &str, mut n: u64) -> String {
    let mut digits: Vec<u8> = a.bytes().rev().map(|b| b - b'0').collect();
    let mut i = 0;
    while n > 0 {
        if i == digits.len() {
            digits.push(0);
        }
        let sum = u64::from(digits[i]) + n % 10;
        digits[i] = (sum % 10) as u8;
        n = n / 10 + sum / 10;
        i += 1;
    }
    let s: String = digits.iter().rev().map(|d| char::from(b'0' + d)).collect();
    if s.is_empty() { "0".to_string() } else { s }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interval_number() {
        assert_eq!(next_cursor(EPOCH_MS + 45_000, None), "2");
        assert_eq!(next_cursor(EPOCH_MS + 45_000, Some("1")), "2");
        assert_eq!(next_cursor(EPOCH_MS + 45_000, Some("junk")), "2");
    }

    #[test]
    fn always_ahead_of_the_client() {
        for _ in 0..100 {
            let c: u64 = next_cursor(EPOCH_MS + 45_000, Some("2")).parse().unwrap();
            assert!((3..=182).contains(&c), "{c}");
            let far: u64 = next_cursor(EPOCH_MS, Some("1000000")).parse().unwrap();
            assert!(far > 1_000_000);
        }
    }

    #[test]
    fn past_u64_the_cursor_still_grows() {
        let max = u64::MAX.to_string();
        let next = next_cursor(EPOCH_MS, Some(&max));
        assert!(at_least(&next, &max) && next != max, "{next}");
        let big = "18446744073709551616";
        let next = next_cursor(EPOCH_MS, Some(big));
        assert!(next.len() == big.len() && next.as_str() > big, "{next}");
        assert_eq!(add("999", 1), "1000");
        assert_eq!(add("", 5), "5");
        let next: u64 = next_cursor(EPOCH_MS + 45_000, Some("0002"))
            .parse()
            .unwrap();
        assert!(next > 2, "{next}");
    }
}
