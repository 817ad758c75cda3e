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
use tokio::task::JoinHandle;

use super::Clock;
use super::load::{Done, Load, Op, run_worker};
use super::sse::{SseEvent, SseParser};
use super::sse_conn;
use crate::client::{Conn, Failure, REQUEST_TIMEOUT, Target, header, query_escape};
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
                Some((seq, ts)) => self.observe(seq, ts, now, self.size as u64),
                None => {
                    self.disorder += 1;
                    self.delivered += 1;
                    self.bytes += self.size as u64;
                }
            }
            pos += self.size;
        }
        self.buf.drain(..pos);
    }

    /// Counts record `seq` (sent at `ts_ns`, received at `now`, `bytes` long), timing it
    /// when it was sent after the warm-up.
    pub fn observe(&mut self, seq: u64, ts_ns: u64, now: u64, bytes: u64) {
        if seq != self.next_seq {
            self.disorder += 1;
        }
        self.next_seq = seq + 1;
        if ts_ns >= self.measure_ns {
            self.lat_us.push(now.saturating_sub(ts_ns) / 1000);
        }
        self.delivered += 1;
        self.bytes += bytes;
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

/// What a subscriber does after an SSE event.
pub enum Next {
    Go,
    /// The subscription is over (the stream or topic is gone, or the server stops).
    Stop,
}

/// A subscriber's decoder, its end (`stop`: the number of records written, once known) and
/// the signal of its first connection.
pub struct Until {
    pub dec: Decoder,
    pub stop: watch::Receiver<u64>,
    pub connected: Option<Connected>,
}

/// An SSE subscriber on one connection, until it has received `stop` records (the writer's
/// count) or `on_event` says [`Next::Stop`]. `url(&state)` is the URL of each (re)connection,
/// asked for with `headers`; the server ending a response means reconnecting. `on_event`
/// decodes each event into `dec` and keeps what a reconnection needs in `state`.
pub async fn sse_subscriber<S>(
    target: Target,
    mut state: S,
    url: impl Fn(&S) -> String,
    headers: &[(&str, &str)],
    mut on_event: impl FnMut(&mut S, SseEvent, &mut Decoder, &mut Errors) -> Next,
    until: Until,
) -> Tail {
    let Until {
        mut dec,
        mut stop,
        mut connected,
    } = until;
    let mut errors = Errors::new();
    let mut reconnects = 0;
    let mut events = Vec::new();
    let mut data = Vec::new();
    'outer: while dec.next_seq < *stop.borrow() {
        let mut body = match sse_conn::open(&target, &url(&state), headers, REQUEST_TIMEOUT).await {
            Ok(body) => body,
            Err(f) => {
                count(&mut errors, f.key());
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        if let Some(c) = connected.take() {
            c.count.fetch_add(1, Ordering::Relaxed);
            drop(c.permit); // let the next subscriber connect
        } else {
            reconnects += 1;
        }
        let mut parser = SseParser::default();
        loop {
            if dec.next_seq >= *stop.borrow() {
                break 'outer;
            }
            data.clear();
            let read = tokio::select! {
                r = body.read(&mut data) => r,
                _ = stop.changed() => continue,
            };
            let ended = match read {
                Ok(more) => !more,
                Err(f) => {
                    count(&mut errors, format!("sse-{}", f.key()));
                    break;
                }
            };
            // The body's end may come in the same read as its last events: they count.
            parser.feed(&data, &mut events);
            for ev in events.drain(..) {
                if let Next::Stop = on_event(&mut state, ev, &mut dec, &mut errors) {
                    break 'outer;
                }
            }
            if ended {
                break;
            }
        }
    }
    Tail {
        dec,
        errors,
        reconnects,
    }
}

/// Tails `path` by SSE from `offset` until `stop` (the number of records written) is reached,
/// reconnecting from the last `streamNextOffset` when the server ends the response.
/// The fields of a Durable Streams SSE `control` event the readers use.
#[derive(serde::Deserialize)]
struct Control<'a> {
    #[serde(rename = "streamNextOffset", borrow)]
    next_offset: Option<&'a str>,
    #[serde(rename = "streamClosed")]
    closed: Option<bool>,
}

pub async fn sse_reader(
    target: Target,
    path: String,
    offset: String,
    dec: Decoder,
    stop: watch::Receiver<u64>,
    connected: Option<Connected>,
) -> Tail {
    let url = |offset: &String| format!("{path}?offset={}&live=sse", query_escape(offset));
    let on_event = |offset: &mut String, ev: SseEvent, dec: &mut Decoder, _: &mut Errors| {
        match ev.event.as_str() {
            "data" => dec.feed(&ev.data),
            "control" => {
                // Typed and borrowed: one of these follows every event at every subscriber, and
                // at K = 10,000 a map per event made the load generator the bottleneck.
                if let Ok(c) = serde_json::from_slice::<Control>(&ev.data) {
                    if let Some(o) = c.next_offset {
                        offset.clear();
                        offset.push_str(o);
                    }
                    if c.closed == Some(true) {
                        return Next::Stop;
                    }
                }
            }
            _ => {}
        }
        Next::Go
    };
    let until = Until {
        dec,
        stop,
        connected,
    };
    sse_subscriber(target, offset, url, &[], on_event, until).await
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
    /// What was acknowledged (for topics, `acked` holds the seq of each record).
    pub ledger: Ledger,
    /// Records acknowledged (all of them, warm-up included): the readers' target.
    pub records: u64,
    /// Records acknowledged inside the measured window, and their bytes.
    pub measured: u64,
    pub measured_bytes: u64,
    /// The first wrong answers to the writes.
    pub bad: Vec<String>,
}

impl Writer {
    /// Runs `fut` (a writer) on a thread and runtime of its own. Latency is measured from a
    /// write's scheduled time, so a writer that shared this process's runtime with thousands
    /// of busy readers would count their backlog as the server's; on its own thread the
    /// kernel wakes it on time.
    pub fn spawn<F>(fut: F) -> JoinHandle<Writer>
    where
        F: Future<Output = Writer> + Send + 'static,
    {
        let shared = tokio::runtime::Handle::current();
        tokio::task::spawn_blocking(move || {
            match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(own) => own.block_on(fut),
                // No runtime of its own (out of threads or descriptors): the shared one.
                Err(_) => shared.block_on(fut),
            }
        })
    }

    /// Runs `op`, which keeps its acknowledgements in a ledger, at `rate` per second on
    /// `clock`'s schedule on one connection.
    pub async fn run<O: Op>(
        target: Target,
        op: O,
        rate: f64,
        clock: Clock,
        counters: Arc<Counters>,
        ledger: impl FnOnce(O) -> Ledger,
    ) -> Writer {
        let load = Load {
            clock,
            rate: Some(rate),
            counters,
        };
        let (t, op) = run_worker(&target, &load, 0, 1, op).await;
        let ledger = ledger(op);
        Writer {
            lat: t.lat,
            errors: t.errors,
            records: ledger.messages,
            ledger,
            measured: t.requests,
            measured_bytes: t.bytes,
            bad: t.bad,
        }
    }
}

/// Appends timestamped records to a stream; record `n` is the `n`-th acknowledged one.
struct AppendRecords {
    ledger: Ledger,
    size: usize,
}

impl Op for AppendRecords {
    async fn call(&mut self, conn: &mut Conn, _i: u64, sent: Instant) -> Result<Done, Failure> {
        let body = record(self.ledger.messages, ns_of(sent), self.size);
        let n = body.len() as u64;
        let (h, _) = conn
            .call(
                Method::POST,
                &self.ledger.path,
                &[("content-type", "text/plain")],
                body,
                &[200, 204],
                REQUEST_TIMEOUT,
            )
            .await?;
        let l = &mut self.ledger;
        l.acked
            .push(header(&h, "stream-next-offset").unwrap_or("").to_string());
        l.bytes += n;
        l.messages += 1;
        Ok(Done { units: 1, bytes: n })
    }
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
    let op = AppendRecords { ledger, size };
    Writer::run(target, op, rate, clock, counters, |op| op.ledger).await
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
