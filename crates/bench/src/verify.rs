//! Self-verification: a fast but wrong server must not win.
//!
//! Offsets are opaque strings to the protocol, so the checks that hold for any server are:
//! every acknowledged append got a distinct `Stream-Next-Offset`, the highest one equals the
//! tail a `HEAD` reports afterwards, and reading the stream back from `offset=-1` returns
//! exactly the bytes (or JSON messages) acknowledged.
//!
//! When offsets have the shape `%016d_%016d` (Riffle, durable-streams 0.1.5 and the Node server)
//! or `%016x_%016x` (durable-streams-server 0.3.0), the second number is taken as a byte
//! position, and the sum of the per-append deltas is compared with the payload bytes
//! acknowledged. Riffle advances it by exactly the payload; a server may count a fixed framing
//! overhead per append (the Node reference server counts 5 bytes), which is reported, and
//! refused under `--strict-offsets`.

use anyhow::{Result, anyhow, bail};
use bytes::Bytes;
use http::Method;
use http_body_util::BodyExt;

use crate::client::{Conn, REQUEST_TIMEOUT, header, query_escape};
use crate::stats::Verify;

/// `(epoch, position)` of an offset of shape `%016d_%016d` (`radix` 10, Riffle, ds-0.1.5 and
/// the Node server) or `%016x_%016x` (`radix` 16, durable-streams-server 0.3.0).
pub fn parse_offset_radix(s: &str, radix: u32) -> Option<(u64, u64)> {
    let (a, b) = s.split_once('_')?;
    let ok = |x: &str| x.len() == 16 && x.chars().all(|c| c.is_digit(radix));
    if !ok(a) || !ok(b) {
        return None;
    }
    Some((
        u64::from_str_radix(a, radix).ok()?,
        u64::from_str_radix(b, radix).ok()?,
    ))
}

/// Offsets read as byte positions in one radix: the sum of the per-append deltas over all
/// streams and the distinct per-append deltas; `None` when an offset does not parse or either
/// part goes backwards. The first part is not a byte count (0 throughout in Riffle and the
/// Node server; a message sequence number in durable-streams-server 0.3.0).
fn account(ledgers: &[Ledger], ends: &[String], radix: u32) -> Option<(u64, Vec<u64>)> {
    let mut total = 0;
    let mut seen = std::collections::BTreeSet::new();
    for (l, end) in ledgers.iter().zip(ends) {
        let s = parse_offset_radix(&l.start, radix)?;
        let e = parse_offset_radix(end, radix)?;
        let mut sorted = l.acked.clone();
        sorted.sort();
        sorted.dedup();
        let mut prev = s;
        for o in &sorted {
            let p = parse_offset_radix(o, radix)?;
            if p.0 < prev.0 || p.1 <= prev.1 {
                return None;
            }
            seen.insert(p.1 - prev.1);
            prev = p;
        }
        if e.0 < prev.0 || e.1 < prev.1 {
            return None;
        }
        total += e.1 - s.1;
    }
    Some((total, seen.into_iter().collect()))
}

/// What one stream was sent and acknowledged during a run.
#[derive(Clone, Debug, Default)]
pub struct Ledger {
    pub path: String,
    /// The tail before the run.
    pub start: String,
    /// `Stream-Next-Offset` of every acknowledged append.
    pub acked: Vec<String>,
    /// Payload bytes acknowledged (JSON: the bytes of the messages).
    pub bytes: u64,
    /// Messages acknowledged (JSON mode), or appends.
    pub messages: u64,
}

impl Ledger {
    pub fn new(path: String, start: String) -> Self {
        Self {
            path,
            start,
            ..Self::default()
        }
    }

    pub fn merge(&mut self, other: &Ledger) {
        self.acked.extend(other.acked.iter().cloned());
        self.bytes += other.bytes;
        self.messages += other.messages;
    }
}

/// Checks the offsets of the ledgers against the tails read after the run.
/// `per_append` is the payload of every append (constant within a run).
pub fn check_offsets(ledgers: &[Ledger], ends: &[String], per_append: u64, strict: bool) -> Verify {
    let mut v = Verify::new();
    let mut bad = Vec::new();
    for (l, end) in ledgers.iter().zip(ends) {
        let mut sorted = l.acked.clone();
        sorted.sort();
        sorted.dedup();
        if sorted.len() != l.acked.len() {
            bad.push(format!(
                "{}: {} appends acknowledged with a duplicate Stream-Next-Offset",
                l.path,
                l.acked.len() - sorted.len()
            ));
        }
        let top = sorted.last().unwrap_or(&l.start);
        if top != end {
            bad.push(format!(
                "{}: highest acknowledged offset {top} but HEAD says {end}",
                l.path
            ));
        }
    }
    let appends: u64 = ledgers.iter().map(|l| l.acked.len() as u64).sum();
    let acked: u64 = ledgers.iter().map(|l| l.bytes).sum();
    v.check(
        bad.is_empty(),
        format!("{appends} acknowledged appends: distinct offsets, highest = HEAD tail"),
    );
    for b in bad.iter().take(5) {
        v.fail(b.clone());
    }
    // Decimal first (Riffle's shape); hex when decimal does not parse or does not add up.
    let shapes: Vec<(&str, (u64, Vec<u64>))> = [("%016d_%016d", 10), ("%016x_%016x", 16)]
        .into_iter()
        .filter_map(|(name, radix)| account(ledgers, ends, radix).map(|a| (name, a)))
        .collect();
    if let Some((name, (sum, _))) = shapes.iter().find(|(_, (sum, _))| *sum == acked) {
        v.pass(format!(
            "offsets {name}: sum of Stream-Next-Offset deltas = {sum} B = bytes acknowledged"
        ));
    } else if let Some((name, (sum, deltas))) = shapes
        .iter()
        .find(|(_, (_, d))| d.len() == 1 && d[0] >= per_append)
    {
        let k = deltas[0] - per_append;
        let msg = format!(
            "offsets {name}: sum of Stream-Next-Offset deltas = {sum} B = {acked} B acknowledged + {k} B per append (server framing)"
        );
        if strict {
            v.fail(format!("{msg}; --strict-offsets wants 0"));
        } else {
            v.pass(msg);
        }
    } else if let Some((name, (sum, deltas))) = shapes.first() {
        v.fail(format!(
            "offsets {name}: sum of Stream-Next-Offset deltas = {sum} B but {acked} B acknowledged (per-append deltas {:?})",
            &deltas[..deltas.len().min(5)]
        ));
    } else {
        v.pass("offsets are neither %016d_%016d nor %016x_%016x: byte accounting by offsets skipped (read-back still checks)");
    }
    v
}

/// What a full read of a stream returned.
#[derive(Default, Debug, Clone, Copy)]
pub struct ReadBack {
    pub bytes: u64,
    /// JSON streams: the messages; otherwise 0.
    pub messages: u64,
    pub requests: u64,
}

/// Reads a stream from `offset=-1` to its tail, following `Stream-Next-Offset`.
/// JSON bodies are parsed to count messages; other bodies are only counted.
pub async fn read_all(conn: &mut Conn, path: &str, json: bool) -> Result<ReadBack> {
    let mut rb = ReadBack::default();
    let mut offset = "-1".to_string();
    loop {
        let url = format!("{path}?offset={}", query_escape(&offset));
        let resp = conn
            .send(Method::GET, &url, &[], Bytes::new(), REQUEST_TIMEOUT)
            .await
            .map_err(|e| anyhow!("read {path}: {e}"))?;
        if resp.status() != 200 {
            conn.reset();
            bail!("read {path}: HTTP {}", resp.status());
        }
        let next = header(resp.headers(), "stream-next-offset").map(str::to_string);
        let done = header(resp.headers(), "stream-up-to-date") == Some("true")
            || header(resp.headers(), "stream-closed") == Some("true");
        let body = resp.into_body().collect().await?.to_bytes();
        rb.requests += 1;
        rb.bytes += body.len() as u64;
        if json && !body.is_empty() {
            let v: serde_json::Value = serde_json::from_slice(&body)?;
            rb.messages += v.as_array().map_or(1, |a| a.len() as u64);
        }
        let next = next.ok_or_else(|| anyhow!("read {path}: no Stream-Next-Offset"))?;
        if done || (body.is_empty() && next == offset) {
            return Ok(rb);
        }
        offset = next;
    }
}

/// Reads every ledger's stream back and compares with what was acknowledged.
pub async fn check_readback(conn: &mut Conn, ledgers: &[Ledger], json: bool) -> Verify {
    let mut v = Verify::new();
    let (mut want, mut got) = (0u64, 0u64);
    let mut bad = Vec::new();
    for l in ledgers {
        match read_all(conn, &l.path, json).await {
            Ok(rb) => {
                let (w, g) = if json {
                    (l.messages, rb.messages)
                } else {
                    (l.bytes, rb.bytes)
                };
                want += w;
                got += g;
                if w != g {
                    bad.push(format!("{}: read back {g}, acknowledged {w}", l.path));
                }
            }
            Err(e) => bad.push(e.to_string()),
        }
    }
    let unit = if json { "messages" } else { "bytes" };
    v.check(
        bad.is_empty(),
        format!("read back {got} {unit} from offset -1 = {want} {unit} acknowledged"),
    );
    for b in bad.iter().take(5) {
        v.fail(b.clone());
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    fn off(n: u64) -> String {
        format!("{:016}_{n:016}", 0)
    }

    fn ledger(step: u64, appends: u64, payload: u64) -> (Ledger, String) {
        let mut l = Ledger::new("/s".into(), off(0));
        for i in 1..=appends {
            l.acked.push(off(i * step));
            l.bytes += payload;
        }
        (l, off(appends * step))
    }

    #[test]
    fn offsets_equal_to_bytes_pass_strict() {
        let (l, end) = ledger(100, 10, 100);
        let v = check_offsets(&[l], &[end], 100, true);
        assert!(v.ok, "{:?}", v.checks);
    }

    #[test]
    fn framing_overhead_is_reported_and_refused_when_strict() {
        let (l, end) = ledger(105, 10, 100);
        assert!(
            check_offsets(
                std::slice::from_ref(&l),
                std::slice::from_ref(&end),
                100,
                false
            )
            .ok
        );
        assert!(!check_offsets(&[l], &[end], 100, true).ok);
    }

    #[test]
    fn hex_offsets_are_accounted() {
        let hex = |n: u64| format!("{:016x}_{n:016x}", n / 64);
        let mut l = Ledger::new("/s".into(), hex(0));
        for i in 1..=3u64 {
            l.acked.push(hex(i * 64));
            l.bytes += 64;
        }
        let v = check_offsets(&[l], &[hex(192)], 64, true);
        assert!(v.ok && v.checks[1].contains("%016x"), "{:?}", v.checks);
    }

    #[test]
    fn duplicate_offsets_and_wrong_tail_fail() {
        let (mut l, end) = ledger(100, 10, 100);
        l.acked[3] = l.acked[2].clone();
        assert!(!check_offsets(&[l], &[end], 100, false).ok);
        let (l, _) = ledger(100, 10, 100);
        assert!(!check_offsets(&[l], &[off(2000)], 100, false).ok);
    }

    #[test]
    fn opaque_offsets_skip_byte_accounting() {
        let mut l = Ledger::new("/s".into(), "a".into());
        l.acked = vec!["b".into(), "c".into()];
        l.bytes = 2;
        assert!(check_offsets(&[l], &["c".into()], 1, true).ok);
        assert_eq!(
            parse_offset_radix("0000000000000000_0000000000000005", 10),
            Some((0, 5))
        );
        assert_eq!(parse_offset_radix("5_6", 10), None);
        assert_eq!(
            parse_offset_radix("000000000000000a_00000000000000ff", 16),
            Some((10, 255))
        );
    }
}
