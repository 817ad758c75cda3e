//! `Stream-Cursor`: the 20-second interval number since 2024-10-09T00:00:00Z, always strictly
//! greater than the cursor the client echoed, so CDN-collapsed long-polls never loop on one
//! cached response.

const EPOCH_MS: i64 = 1_728_432_000_000;
const INTERVAL_MS: i64 = 20_000;

pub fn next_cursor(now_ms: i64, client: Option<&str>) -> String {
    let current = u64::try_from((now_ms - EPOCH_MS).max(0) / INTERVAL_MS).unwrap_or(0);
    match client.and_then(|c| c.parse::<u64>().ok()) {
        Some(c) if c >= current => {
            let jitter_secs = fastrand::u64(1..=3600);
            c.saturating_add(jitter_secs.div_ceil(20).max(1))
                .to_string()
        }
        _ => current.to_string(),
    }
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
}
