//! Live tailing, shared by `rtt` and `fanout`: timestamped records, a writer at a fixed rate,
//! and long-poll and SSE readers that measure append-to-delivery latency.
//!
//! A record is `size` bytes: `SSSSSSSSSS:TTTTTTTTTTTTTTTTTTTT:` (sequence number, send time in
//! ns since the process's epoch) padded with `x`. Writer and readers share one process and one
//! clock. Records carry no newline, so SSE data lines never split one. Readers check that the
//! sequence numbers arrive in order, without gaps or repeats.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::Method;
use http_body_util::BodyExt;
use tokio::sync::{OwnedSemaphorePermit, watch};

use super::sse::SseParser;
use super::{Clock, due, wait_due};
use crate::client::{Conn, REQUEST_TIMEOUT, Target, header, query_escape};
use crate::stats::{Counters, Errors, Lat};
use crate::verify::Ledger;

/// Bytes of the record header; the smallest record size.
pub const HEADER: usize = 32;

static EPOCH: OnceLock<Instant> = OnceLock::new();

/// Nanoseconds since the first call in this process.
pub fn now_ns() -> u64 {
    EPOCH.get_or_init(Instant::now).elapsed().as_nanos() as u64
}

/// `now_ns()` of an `Instant`.
pub fn ns_of(t: Instant) -> u64 {
    let e = *EPOCH.get_or_init(Instant::now);
    t.saturating_duration_since(e).as_nanos() as u64
}

pub fn record(seq: u64, ts_ns: u64, size: usize) -> Bytes {
    let mut s = format!("{seq:010}:{ts_ns:020}:");
    s.extend(std::iter::repeat_n('x', size.max(HEADER) - HEADER));
    Bytes::from(s)
}

fn parse_record(r: &[u8]) -> Option<(u64, u64)> {
    let s = std::str::from_utf8(&r[..HEADER]).ok()?;
    Some((s.get(0..10)?.parse().ok()?, s.get(11..31)?.parse().ok()?))
}

/// Reassembles records from delivered data and measures their latency.
pub struct Decoder {
    size: usize,
    buf: Vec<u8>,
    /// The sequence number expected next (= records received when in order).
    pub next_seq: u64,
    /// Records sent before this instant (warm-up) are not timed.
    measure_ns: u64,
    /// Latencies (µs) of the timed records; a plain vector is far smaller than one HDR
    /// histogram per subscriber when there are a thousand of them.
    pub lat_us: Vec<u64>,
    pub delivered: u64,
    pub bytes: u64,
    /// Records out of order, repeated, after a gap, or unparseable.
    pub disorder: u64,
}

impl Decoder {
    pub fn new(size: usize, measure: Instant) -> Self {
        Self {
            size: size.max(HEADER),
            buf: Vec::new(),
            next_seq: 0,
            measure_ns: ns_of(measure),
            lat_us: Vec::new(),
            delivered: 0,
            bytes: 0,
            disorder: 0,
        }
    }

    pub fn feed(&mut self, data: &[u8]) {
        let now = now_ns();
        self.buf
            .extend(data.iter().filter(|&&b| b != b'\n' && b != b'\r'));
        let mut pos = 0;
        while self.buf.len() - pos >= self.size {
            match parse_record(&self.buf[pos..pos + self.size]) {
                Some((seq, ts)) => {
                    if seq != self.next_seq {
                        self.disorder += 1;
                    }
                    self.next_seq = seq + 1;
                    if ts >= self.measure_ns {
                        self.lat_us.push(now.saturating_sub(ts) / 1000);
                    }
                }
                None => self.disorder += 1,
            }
            self.delivered += 1;
            self.bytes += self.size as u64;
            pos += self.size;
        }
        self.buf.drain(..pos);
    }

    pub fn record_into(&self, lat: &mut Lat) {
        for &us in &self.lat_us {
            lat.record(Duration::from_micros(us));
        }
    }
}

/// What a reader ends with.
pub struct Tail {
    pub dec: Decoder,
    pub errors: Errors,
    pub reconnects: u64,
}

fn count(errors: &mut Errors, key: String) {
    *errors.entry(key).or_default() += 1;
}

/// Signals the first successful connection of a subscriber.
pub struct Connected {
    pub count: Arc<AtomicUsize>,
    pub permit: Option<OwnedSemaphorePermit>,
}

/// Tails `path` by SSE from `offset` until `stop` (the number of records written) is reached,
/// reconnecting from the last `streamNextOffset` when the server ends the response.
pub async fn sse_reader(
    target: Target,
    path: String,
    mut offset: String,
    mut dec: Decoder,
    mut stop: watch::Receiver<u64>,
    mut connected: Option<Connected>,
) -> Tail {
    let mut conn = Conn::new(&target);
    let mut t = Tail {
        dec: Decoder::new(0, Instant::now()),
        errors: Errors::new(),
        reconnects: 0,
    };
    let mut events = Vec::new();
    'outer: loop {
        if dec.next_seq >= *stop.borrow() {
            break;
        }
        let url = format!("{path}?offset={}&live=sse", query_escape(&offset));
        let resp = match conn
            .send(Method::GET, &url, &[], Bytes::new(), REQUEST_TIMEOUT)
            .await
        {
            Ok(r) if r.status() == 200 => r,
            Ok(r) => {
                count(&mut t.errors, r.status().as_u16().to_string());
                conn.reset();
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
            Err(f) => {
                count(&mut t.errors, f.key());
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        if let Some(c) = connected.take() {
            c.count.fetch_add(1, Ordering::Relaxed);
            drop(c.permit); // let the next subscriber connect
        } else {
            t.reconnects += 1;
        }
        let mut body = resp.into_body();
        let mut parser = SseParser::default();
        loop {
            if dec.next_seq >= *stop.borrow() {
                break 'outer;
            }
            let frame = tokio::select! {
                f = body.frame() => f,
                _ = stop.changed() => continue,
            };
            let data = match frame {
                None => break,
                Some(Err(e)) => {
                    count(&mut t.errors, format!("sse-{}", e.kind_word()));
                    break;
                }
                Some(Ok(f)) => match f.into_data() {
                    Ok(d) => d,
                    Err(_) => continue,
                },
            };
            parser.feed(&data, &mut events);
            for ev in events.drain(..) {
                match ev.event.as_str() {
                    "data" => dec.feed(&ev.data),
                    "control" => {
                        if let Ok(v) = serde_json::from_slice::<serde_json::Value>(&ev.data) {
                            if let Some(o) = v.get("streamNextOffset").and_then(|o| o.as_str()) {
                                offset = o.to_string();
                            }
                            if v.get("streamClosed") == Some(&serde_json::Value::Bool(true)) {
                                break 'outer;
                            }
                        }
                    }
                    _ => {}
                }
            }
        }
        conn.reset();
    }
    t.dec = dec;
    t
}

trait KindWord {
    fn kind_word(&self) -> &'static str;
}

impl KindWord for hyper::Error {
    fn kind_word(&self) -> &'static str {
        if self.is_incomplete_message() {
            "incomplete"
        } else {
            "io"
        }
    }
}

/// Tails `path` by long-poll from `offset` until `stop` is reached, echoing `Stream-Cursor`.
pub async fn long_poll_reader(
    target: Target,
    path: String,
    mut offset: String,
    mut dec: Decoder,
    mut stop: watch::Receiver<u64>,
) -> Tail {
    let mut conn = Conn::new(&target);
    let mut errors = Errors::new();
    let mut cursor: Option<String> = None;
    loop {
        if dec.next_seq >= *stop.borrow() {
            break;
        }
        let mut url = format!("{path}?offset={}&live=long-poll", query_escape(&offset));
        if let Some(c) = &cursor {
            url.push_str(&format!("&cursor={}", query_escape(c)));
        }
        let sent = conn.send(
            Method::GET,
            &url,
            &[],
            Bytes::new(),
            Duration::from_secs(120),
        );
        let resp = tokio::select! {
            r = sent => r,
            _ = stop.changed() => {
                conn.reset();
                continue;
            }
        };
        let resp = match resp {
            Ok(r) if r.status() == 200 || r.status() == 204 => r,
            Ok(r) => {
                count(&mut errors, r.status().as_u16().to_string());
                conn.reset();
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
            Err(f) => {
                count(&mut errors, f.key());
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        if let Some(n) = header(resp.headers(), "stream-next-offset") {
            offset = n.to_string();
        }
        cursor = header(resp.headers(), "stream-cursor").map(str::to_string);
        let closed = header(resp.headers(), "stream-closed") == Some("true");
        let mut body = resp.into_body();
        while let Some(frame) = body.frame().await {
            match frame {
                Ok(f) => {
                    if let Some(d) = f.data_ref() {
                        dec.feed(d);
                    }
                }
                Err(e) => {
                    count(&mut errors, format!("long-poll-{}", e.kind_word()));
                    conn.reset();
                    break;
                }
            }
        }
        if closed {
            break;
        }
    }
    Tail {
        dec,
        errors,
        reconnects: 0,
    }
}

/// What the writer of a live scenario did.
pub struct Writer {
    pub lat: Lat,
    pub errors: Errors,
    pub ledger: Ledger,
    /// Records acknowledged (all of them, warm-up included): the readers' target.
    pub records: u64,
    /// Records acknowledged inside the measured window, and their bytes.
    pub measured: u64,
    pub measured_bytes: u64,
}

/// Appends records to `path` at `rate` per second on `clock`'s schedule.
pub async fn writer(
    target: Target,
    ledger: Ledger,
    size: usize,
    rate: f64,
    clock: Clock,
    counters: Arc<Counters>,
) -> Writer {
    let mut conn = Conn::new(&target);
    let mut w = Writer {
        lat: Lat::default(),
        errors: Errors::new(),
        ledger,
        records: 0,
        measured: 0,
        measured_bytes: 0,
    };
    let mut i = 0u64;
    while let Some(due_at) = due(&clock, rate, 0, 1, i) {
        i += 1;
        let sent = wait_due(due_at).await;
        let body = record(w.records, ns_of(sent), size);
        let r = conn
            .call(
                Method::POST,
                &w.ledger.path,
                &[("content-type", "text/plain")],
                body.clone(),
                &[200, 204],
                REQUEST_TIMEOUT,
            )
            .await;
        match r {
            Ok((h, _)) => {
                w.records += 1;
                w.ledger
                    .acked
                    .push(header(&h, "stream-next-offset").unwrap_or("").to_string());
                w.ledger.bytes += body.len() as u64;
                w.ledger.messages += 1;
                if due_at >= clock.measure {
                    w.lat.record(sent.elapsed());
                    w.measured += 1;
                    w.measured_bytes += body.len() as u64;
                    counters.op();
                }
            }
            Err(f) => {
                count(&mut w.errors, f.key());
                counters.error();
            }
        }
    }
    w
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip() {
        let r = record(42, 123_456_789, 64);
        assert_eq!(r.len(), 64);
        assert_eq!(parse_record(&r), Some((42, 123_456_789)));
    }

    #[test]
    fn decoder_reassembles_split_records() {
        let mut d = Decoder::new(40, Instant::now());
        let mut all = Vec::new();
        for s in 0..3 {
            all.extend_from_slice(&record(s, now_ns(), 40));
        }
        d.feed(&all[..17]);
        d.feed(&all[17..90]);
        d.feed(&all[90..]);
        assert_eq!((d.delivered, d.disorder, d.next_seq), (3, 0, 3));
        d.feed(&record(7, 0, 40));
        assert_eq!(d.disorder, 1);
    }
}
