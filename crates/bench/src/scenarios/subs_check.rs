//! The checks of `subs`: wake latencies matched from appends to the claims that covered
//! them, and the subscription's and the wake stream's state after the drain.

use std::time::Instant;

use anyhow::{Result, anyhow, bail};
use bytes::Bytes;
use http::Method;
use http_body_util::BodyExt;
use serde::Deserialize;

use super::subs::Names;
use super::subs_worker::Mark;
use crate::client::{Conn, REQUEST_TIMEOUT, header, query_escape};
use crate::stats::{Lat, Verify};

#[derive(Deserialize)]
pub struct SubState {
    pub streams: Vec<LinkState>,
}

#[derive(Deserialize)]
pub struct LinkState {
    path: String,
    acked_offset: String,
}

#[derive(Deserialize)]
struct Event {
    #[serde(rename = "type")]
    kind: String,
    subscription_id: String,
    generation: u64,
}

/// After the drain: every link acked at its stream's tail, and the wake stream's events in
/// generation order.
pub async fn check_state(
    conn: &mut Conn,
    names: &Names,
    tails: &[String],
    appends: &[Mark],
    gens: &[u64],
) -> Verify {
    let mut v = Verify::new();
    let mut want = tails.to_vec();
    for (i, end, _) in appends {
        let w = &mut want[*i as usize];
        if end > w {
            *w = end.clone();
        }
    }
    let got = conn
        .call(
            Method::GET,
            &names.sub_path,
            &[],
            Bytes::new(),
            &[200],
            REQUEST_TIMEOUT,
        )
        .await
        .map_err(|e| anyhow!("GET {}: {e}", names.sub_path))
        .and_then(|(_, b)| Ok(serde_json::from_slice::<SubState>(&b)?));
    match got {
        Ok(s) => {
            let prefix = format!("{}/s", names.dir);
            let mut at_tail = 0;
            let mut first_off = None;
            for l in &s.streams {
                let i = l
                    .path
                    .strip_prefix(&prefix)
                    .and_then(|i| i.parse::<usize>().ok());
                match i.and_then(|i| want.get(i)) {
                    Some(w) if *w == l.acked_offset => at_tail += 1,
                    w => {
                        first_off.get_or_insert_with(|| {
                            format!("{} acked at {} (tail {w:?})", l.path, l.acked_offset)
                        });
                    }
                }
            }
            v.check(
                at_tail == tails.len() && s.streams.len() == tails.len(),
                format!(
                    "GET afterwards: {} links, {at_tail} acked at their stream's tail (want {}){}",
                    s.streams.len(),
                    tails.len(),
                    first_off.map_or(String::new(), |f| format!(", first off: {f}"))
                ),
            );
        }
        Err(e) => v.fail(format!("{e:#}")),
    }
    match read_events(conn, &names.wake_path).await {
        Ok(events) => {
            let id = &names.dir;
            let ordered = events.windows(2).all(|w| w[0].generation < w[1].generation);
            let ours = events
                .iter()
                .all(|e| e.kind == "wake" && e.subscription_id == *id);
            let claimed = events
                .iter()
                .filter(|e| gens.binary_search(&e.generation).is_ok())
                .count();
            v.check(
                ordered && ours,
                format!(
                    "wake stream: {} events, in generation order, all wakes of this subscription; {claimed} of their generations claimed, {} claims of a wake without an event (made by the claim, or claimed after next_wake before its event)",
                    events.len(),
                    gens.len().saturating_sub(claimed)
                ),
            );
        }
        Err(e) => v.fail(format!("reading the wake stream: {e:#}")),
    }
    v
}

/// Every event of the wake stream.
async fn read_events(conn: &mut Conn, path: &str) -> Result<Vec<Event>> {
    let mut offset = "-1".to_string();
    let mut out = Vec::new();
    loop {
        let url = format!("{path}?offset={}", query_escape(&offset));
        let resp = conn
            .send(Method::GET, &url, &[], Bytes::new(), REQUEST_TIMEOUT)
            .await
            .map_err(|e| anyhow!("GET {url}: {e}"))?;
        if resp.status() != 200 {
            bail!("GET {url}: HTTP {}", resp.status());
        }
        let next = header(resp.headers(), "stream-next-offset").map(str::to_string);
        let done = header(resp.headers(), "stream-up-to-date") == Some("true");
        let body = resp.into_body().collect().await?.to_bytes();
        if !body.is_empty() {
            out.extend(serde_json::from_slice::<Vec<Event>>(&body)?);
        }
        let next = next.ok_or_else(|| anyhow!("GET {url}: no Stream-Next-Offset"))?;
        if done || next == offset {
            return Ok(out);
        }
        offset = next;
    }
}

/// Wake latencies of appends, from the claims that covered them.
#[derive(Default)]
pub struct Coverage {
    /// Append send to the answer of the first claim covering it, for appends sent in the
    /// measured window.
    pub lat: Lat,
    /// Appends no claim covered, and the first of them.
    pub uncovered: u64,
    pub first_uncovered: Option<String>,
}

/// For each append, the first claim answer that covers it: its stream's `tail_offset` at or
/// past the append's end (offsets are fixed-width, so they compare as strings). Appends sent
/// in `[measure, end)` are timed.
pub fn match_wakes(
    streams: usize,
    appends: &[Mark],
    claims: &[Mark],
    measure: Instant,
    end: Instant,
) -> Coverage {
    let mut by_stream: Vec<Vec<(&str, Instant)>> = vec![Vec::new(); streams];
    for (i, tail, at) in claims {
        if let Some(v) = by_stream.get_mut(*i as usize) {
            v.push((tail.as_str(), *at));
        }
    }
    // Sorted by tail, each entry then holds the earliest answer among the claims at or past it.
    for v in &mut by_stream {
        v.sort_unstable();
        for k in (0..v.len().saturating_sub(1)).rev() {
            v[k].1 = v[k].1.min(v[k + 1].1);
        }
    }
    let mut cov = Coverage::default();
    for (i, end_offset, sent) in appends {
        let v = &by_stream[*i as usize];
        let k = v.partition_point(|(t, _)| *t < end_offset.as_str());
        match v.get(k) {
            Some((_, at)) => {
                if *sent >= measure && *sent < end {
                    cov.lat.record(at.saturating_duration_since(*sent));
                }
            }
            None => {
                cov.uncovered += 1;
                cov.first_uncovered
                    .get_or_insert_with(|| format!("stream s{i} up to {end_offset}"));
            }
        }
    }
    cov
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn the_first_covering_claim_times_an_append() {
        let t0 = Instant::now();
        let ms = |n| t0 + Duration::from_millis(n);
        let m = |i: u32, o: &str, t| (i, o.to_string(), ms(t));
        let appends = [
            m(0, "05", 10),
            m(0, "09", 20),
            m(1, "03", 30),
            m(1, "07", 40),
        ];
        // Stream 0: a claim at 50 up to 05, one at 80 up to 09. Stream 1: a claim up to 03 at
        // 45, and 07 never claimed.
        let claims = [m(0, "09", 80), m(0, "05", 50), m(1, "03", 45)];
        let c = match_wakes(2, &appends, &claims, ms(15), ms(100));
        let s = c.lat.summary();
        assert_eq!(c.uncovered, 1);
        assert_eq!(c.first_uncovered.as_deref(), Some("stream s1 up to 07"));
        // Timed (sent at or after 15): "09" -> 80 - 20 = 60 ms, "03" -> 45 - 30 = 15 ms.
        assert_eq!(s.count, 2);
        assert!((14_900..=15_100).contains(&s.p50_us) || (59_900..=60_100).contains(&s.p50_us));
        assert!((59_900..=60_100).contains(&s.max_us));
    }

    #[test]
    fn a_later_claim_with_a_lower_tail_does_not_win() {
        let t0 = Instant::now();
        let ms = |n| t0 + Duration::from_millis(n);
        let appends = [(0, "05".to_string(), ms(0))];
        // The earliest claim at or past 05 is the one at 30 (tail 08), not the one at 60.
        let claims = [(0, "08".to_string(), ms(30)), (0, "05".to_string(), ms(60))];
        let c = match_wakes(1, &appends, &claims, t0, ms(100));
        assert_eq!(c.uncovered, 0);
        assert!((29_900..=30_100).contains(&c.lat.summary().max_us));
    }
}
