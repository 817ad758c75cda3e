//! What the topics `/v0` scenarios share: topic paths, creation in a durability class, write
//! and diff requests whose answers are checked (status, `first_seq`/`last_seq`/`count`, `$seq`
//! of every record), record bodies of an exact size, and a read-back of a whole topic.
//!
//! The `/v0` API lives on the same host and port as the `--url` of the Durable Streams
//! prefix; its path is always `/v0`.

use anyhow::{Result, anyhow, bail};
use bytes::Bytes;
use http::Method;
use serde::Deserialize;
use serde::de::{DeserializeOwned, IgnoredAny};

use super::live::{Writer, ns_of};
use super::load::{Done, Op};
use super::{Clock, Common};
use crate::client::Target;
use crate::client::{Conn, Failure, REQUEST_TIMEOUT};
use crate::stats::Counters;
use crate::stats::Verify;
use crate::verify::Ledger;
use std::sync::Arc;
use std::time::Instant;
use tokio::task::JoinHandle;

pub const JSON: (&str, &str) = ("content-type", "application/json");

/// The durability classes of `PUT /v0/topics/:t`.
pub const CLASSES: [&str; 4] = ["fsync", "disk", "memory", "ephemeral"];

pub fn topic_path(name: &str) -> String {
    format!("/v0/topics/{name}")
}

/// A topic name unique to this run.
pub fn topic_name(c: &Common, scenario: &str, i: usize) -> String {
    format!("{}-{scenario}-{i}", c.run_id)
}

/// Creates topic `name` in durability class `class` (201, or 200 when it exists already)
/// and returns its state.
pub async fn create_topic(conn: &mut Conn, name: &str, class: &str) -> Result<TopicState> {
    let body = format!("{{\"durability\":\"{class}\"}}");
    let (_, b) = conn
        .call(
            Method::PUT,
            &topic_path(name),
            &[JSON],
            Bytes::from(body),
            &[200, 201],
            REQUEST_TIMEOUT,
        )
        .await
        .map_err(|e| anyhow!("PUT {}: {e}", topic_path(name)))?;
    let put: Put = serde_json::from_slice(&b)
        .map_err(|e| anyhow!("PUT {}: unexpected answer ({e})", topic_path(name)))?;
    if put.config.durability != class {
        bail!(
            "PUT {}: asked for durability {class}, got {}",
            topic_path(name),
            put.config.durability
        );
    }
    topic_state(conn, name).await
}

#[derive(Deserialize)]
struct Put {
    config: PutConfig,
}

#[derive(Deserialize)]
struct PutConfig {
    durability: String,
}

/// `GET /v0/topics/:t`, the parts the scenarios check.
#[derive(Debug, Deserialize)]
pub struct TopicState {
    pub head_seq: u64,
    pub earliest_seq: u64,
    pub count: u64,
}

/// The state of topic `name`; `None` when it does not exist.
pub async fn find_topic(conn: &mut Conn, name: &str) -> Result<Option<TopicState>> {
    let path = format!("{}?touch=false", topic_path(name));
    match conn
        .call(
            Method::GET,
            &path,
            &[],
            Bytes::new(),
            &[200],
            REQUEST_TIMEOUT,
        )
        .await
    {
        Ok((_, b)) => serde_json::from_slice(&b)
            .map(Some)
            .map_err(|e| anyhow!("GET {path}: unexpected answer ({e})")),
        Err(Failure::Status(s)) if s == 404 => Ok(None),
        Err(e) => Err(anyhow!("GET {path}: {e}")),
    }
}

pub async fn topic_state(conn: &mut Conn, name: &str) -> Result<TopicState> {
    find_topic(conn, name)
        .await?
        .ok_or_else(|| anyhow!("GET {}: topic not found", topic_path(name)))
}

/// Deletes topics (best effort) unless `--keep`.
pub async fn delete_topics(c: &Common, names: &[String]) {
    if c.keep {
        return;
    }
    let mut conn = Conn::new(&c.target);
    for n in names {
        let _ = conn
            .call(
                Method::DELETE,
                &topic_path(n),
                &[],
                Bytes::new(),
                &[200],
                REQUEST_TIMEOUT,
            )
            .await;
    }
}

/// `{"p":"xxx…"}`-style JSON data of exactly `size` bytes when `size` leaves room: `fields`
/// (already JSON, e.g. `"i":3`) then a padding string.
pub fn data_json(fields: &str, size: usize) -> String {
    let sep = if fields.is_empty() { "" } else { "," };
    let bare = fields.len() + sep.len() + 8; // {…,"p":""}
    format!(
        "{{{fields}{sep}\"p\":\"{}\"}}",
        "x".repeat(size.saturating_sub(bare))
    )
}

/// A write body: `{"records":[{"data":D}, …]}`.
pub fn records_body<'a>(data: impl IntoIterator<Item = &'a str>) -> Bytes {
    let mut out = String::from("{\"records\":[");
    for (i, d) in data.into_iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str("{\"data\":");
        out.push_str(d);
        out.push('}');
    }
    out.push_str("]}");
    Bytes::from(out)
}

/// Whether a write of `n` records was answered as it should: `n` contiguous new seqs, not
/// deduped, and the `seqs` list (present exactly when asked for) equal to them.
pub fn check_ack(ack: &WriteAck, n: u64, want_seqs: bool) -> Result<(), String> {
    let contiguous = ack.last_seq >= ack.first_seq && ack.last_seq - ack.first_seq + 1 == n;
    if ack.count != n || !contiguous || ack.deduped || ack.head_seq < ack.last_seq {
        return Err(format!(
            "{n} records written: count {}, seqs {}..={}, head {}, deduped {}",
            ack.count, ack.first_seq, ack.last_seq, ack.head_seq, ack.deduped
        ));
    }
    match (&ack.seqs, want_seqs) {
        (Some(s), true) if s.iter().copied().eq(ack.first_seq..=ack.last_seq) => Ok(()),
        (None, false) => Ok(()),
        (s, _) => Err(format!(
            "seqs {:?} for {}..={} (asked for them: {want_seqs})",
            s.as_ref().map(|s| &s[..s.len().min(5)]),
            ack.first_seq,
            ack.last_seq
        )),
    }
}

/// The answer to a write.
#[derive(Debug, Deserialize)]
pub struct WriteAck {
    pub first_seq: u64,
    pub last_seq: u64,
    pub head_seq: u64,
    pub count: u64,
    pub deduped: bool,
    pub seqs: Option<Vec<u64>>,
}

fn bad(what: impl Into<String>) -> Failure {
    Failure::Bad(what.into())
}

/// Writes `n` records (the body) to `path` (a topic path, with any query) and checks the
/// answer: 200 (201 if the write created the topic), `n` contiguous new seqs, not deduped,
/// the seqs list (when asked for) equal to them.
pub async fn write(
    conn: &mut Conn,
    path: &str,
    body: Bytes,
    n: u64,
    want_seqs: bool,
) -> Result<WriteAck, Failure> {
    let (_, b) = conn
        .call(
            Method::POST,
            path,
            &[JSON],
            body,
            &[200, 201],
            REQUEST_TIMEOUT,
        )
        .await?;
    let ack: WriteAck = serde_json::from_slice(&b).map_err(|e| bad(format!("POST {path}: {e}")))?;
    check_ack(&ack, n, want_seqs).map_err(|e| bad(format!("POST {path}: {e}")))?;
    Ok(ack)
}

/// One record of a diff answer or a watch event; `D` is what the scenario checks of `data`.
#[derive(Debug, Deserialize)]
pub struct Rec<D> {
    #[serde(rename = "$seq")]
    pub seq: u64,
    pub data: D,
}

/// The answer to a diff read.
#[derive(Debug, Deserialize)]
pub struct DiffAnswer<D> {
    pub records: Vec<Rec<D>>,
    pub next_from_seq: u64,
    pub head_seq: u64,
    pub tombstone: Option<IgnoredAny>,
}

/// Whether a diff from `from` was answered as it should: no tombstone, seqs `from+1, from+2,
/// …` with no gap, `next_from_seq` the last of them, and `want` records when given.
pub fn check_diff<D>(d: &DiffAnswer<D>, from: u64, want: Option<u64>) -> Result<(), String> {
    let n = d.records.len() as u64;
    let in_order = d.records.iter().zip(from + 1..).all(|(r, s)| r.seq == s);
    if !in_order || d.next_from_seq != from + n || d.tombstone.is_some() {
        return Err(format!(
            "{n} records, seqs {:?}…, next_from_seq {}, tombstone {}",
            d.records.iter().take(3).map(|r| r.seq).collect::<Vec<_>>(),
            d.next_from_seq,
            d.tombstone.is_some()
        ));
    }
    match want {
        Some(w) if n != w => Err(format!("{n} records, wanted {w} (head {})", d.head_seq)),
        _ => Ok(()),
    }
}

/// `POST /v0/topics/:t/diff` from `from` (exclusive) for `limit` records; checks the answer:
/// 200, no tombstone, seqs `from+1, from+2, …` with no gap, `next_from_seq` the last of
/// them, and `want` records (when given). Returns the answer and its body size.
pub async fn diff<D: DeserializeOwned>(
    conn: &mut Conn,
    name: &str,
    from: u64,
    limit: u64,
    want: Option<u64>,
) -> Result<(DiffAnswer<D>, usize), Failure> {
    let path = format!("{}/diff", topic_path(name));
    let body = format!("{{\"from_seq\":{from},\"limit\":{limit}}}");
    let (_, b) = conn
        .call(
            Method::POST,
            &path,
            &[JSON],
            Bytes::from(body),
            &[200],
            REQUEST_TIMEOUT,
        )
        .await?;
    let d: DiffAnswer<D> =
        serde_json::from_slice(&b).map_err(|e| bad(format!("diff {name} from {from}: {e}")))?;
    check_diff(&d, from, want).map_err(|e| bad(format!("diff {name} from {from}: {e}")))?;
    Ok((d, b.len()))
}

/// Reads topic `name` back after seq `from` up to `head`, 1000 records a request, and checks
/// that every seq is there once, in order, and that `check` accepts every record's data.
pub async fn read_back<D: DeserializeOwned>(
    conn: &mut Conn,
    name: &str,
    mut from: u64,
    head: u64,
    mut check: impl FnMut(u64, &D) -> Result<(), String>,
) -> Result<u64> {
    while from < head {
        let want = (head - from).min(1000);
        let (d, _) = diff::<D>(conn, name, from, 1000, Some(want))
            .await
            .map_err(|e| anyhow!("{e}"))?;
        for r in &d.records {
            check(r.seq, &r.data).map_err(|e| anyhow!("{name} seq {}: {e}", r.seq))?;
        }
        from = d.next_from_seq;
    }
    Ok(from)
}

/// Checks a run's topics after the fact: `ranges[t]` are the `(first_seq, last_seq)` of the
/// writes acknowledged on topic `names[t]`, which held `starts[t]` records before the run.
/// They must tile `start+1..=head` exactly (no seq twice, none missing) and `GET` must show
/// that head and count; with `read`, the records are read back and `check` judges each one.
pub async fn check_topics<D: DeserializeOwned>(
    c: &Common,
    names: &[String],
    starts: &[u64],
    ranges: &mut [Vec<(u64, u64)>],
    read: bool,
    check: impl Fn(u64, &D) -> Result<(), String> + Copy,
) -> Verify {
    let mut v = Verify::new();
    let mut conn = Conn::new(&c.target);
    let (mut writes, mut records, mut read_n) = (0u64, 0u64, 0u64);
    let mut bad = Vec::new();
    for ((name, &start), r) in names.iter().zip(starts).zip(ranges.iter_mut()) {
        r.sort_unstable();
        writes += r.len() as u64;
        let mut next = start + 1;
        for &(a, b) in r.iter() {
            if a != next {
                bad.push(format!(
                    "{name}: acknowledged seqs jump from {} to {a}",
                    next - 1
                ));
                break;
            }
            next = b + 1;
        }
        let head = next - 1;
        records += head - start;
        match topic_state(&mut conn, name).await {
            Ok(s) if s.head_seq == head && s.count == head - s.earliest_seq + 1 => {}
            Ok(s) => bad.push(format!(
                "{name}: acknowledged up to seq {head}, GET shows head {} count {} earliest {}",
                s.head_seq, s.count, s.earliest_seq
            )),
            Err(e) => bad.push(e.to_string()),
        }
        if read {
            match read_back(&mut conn, name, start, head, check).await {
                Ok(_) => read_n += head - start,
                Err(e) => bad.push(e.to_string()),
            }
        }
    }
    v.check(
        bad.is_empty(),
        format!(
            "{writes} acknowledged writes of {records} records: seqs contiguous per topic, none twice, last = GET head_seq, count = GET count"
        ),
    );
    if read && bad.is_empty() {
        v.pass(format!(
            "read back {read_n} records by diff: every seq once, in order, data as written"
        ));
    }
    for b in bad.iter().take(5) {
        v.fail(b.clone());
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_has_the_size_and_is_json() {
        for (fields, size) in [
            ("", 256),
            ("\"i\":1000000", 200),
            ("\"i\":3,\"t_ns\":99", 64),
        ] {
            let d = data_json(fields, size);
            assert_eq!(d.len(), size, "{d}");
            assert!(serde_json::from_str::<serde_json::Value>(&d).is_ok());
        }
        let body = records_body([data_json("", 16).as_str(), "1"]);
        let v: serde_json::Value = serde_json::from_slice(&body).expect("valid JSON");
        assert_eq!(v["records"][1]["data"], 1);
    }

    fn ack(first: u64, last: u64, count: u64, seqs: Option<Vec<u64>>) -> WriteAck {
        WriteAck {
            first_seq: first,
            last_seq: last,
            head_seq: last,
            count,
            deduped: false,
            seqs,
        }
    }

    #[test]
    fn write_answers_are_checked() {
        assert!(check_ack(&ack(5, 7, 3, Some(vec![5, 6, 7])), 3, true).is_ok());
        assert!(check_ack(&ack(5, 7, 3, None), 3, false).is_ok());
        assert!(check_ack(&ack(5, 7, 3, Some(vec![5, 7, 7])), 3, true).is_err());
        assert!(check_ack(&ack(5, 7, 3, None), 3, true).is_err());
        assert!(check_ack(&ack(5, 8, 3, None), 3, false).is_err());
        assert!(check_ack(&ack(5, 7, 2, None), 3, false).is_err());
        let mut dup = ack(5, 7, 3, None);
        dup.deduped = true;
        assert!(check_ack(&dup, 3, false).is_err());
    }

    fn answer(seqs: &[u64], next: u64) -> DiffAnswer<()> {
        DiffAnswer {
            records: seqs.iter().map(|&seq| Rec { seq, data: () }).collect(),
            next_from_seq: next,
            head_seq: 100,
            tombstone: None,
        }
    }

    #[test]
    fn diff_answers_are_checked() {
        assert!(check_diff(&answer(&[11, 12, 13], 13), 10, Some(3)).is_ok());
        assert!(check_diff(&answer(&[11, 13, 14], 14), 10, None).is_err());
        assert!(check_diff(&answer(&[11, 12, 13], 14), 10, None).is_err());
        assert!(check_diff(&answer(&[11, 12], 12), 10, Some(3)).is_err());
        assert!(check_diff(&answer(&[12, 13], 13), 10, None).is_err());
    }
}

/// What a timed reader checks of a record's data: the writer's index and send time.
#[derive(Deserialize)]
pub struct Timed {
    pub i: u64,
    pub t_ns: u64,
}

/// Writes one timestamped record per request to a topic; record `n` is the `n`-th
/// acknowledged one and must get seq `start + 1 + n`. The ledger's `acked` holds the seqs.
pub struct TimedWrites {
    path: String,
    start: u64,
    size: usize,
    pub ledger: Ledger,
}

impl TimedWrites {
    /// Writes of `size`-byte records to topic `name`, whose head is `start`.
    pub fn new(name: &str, start: u64, size: usize) -> Self {
        Self {
            path: format!("{}?return_seqs=false", topic_path(name)),
            start,
            size,
            ledger: Ledger::new(topic_path(name), start.to_string()),
        }
    }

    /// Run them at `rate` writes/s for the clock's window.
    pub fn spawn(
        self,
        target: Target,
        rate: f64,
        clock: Clock,
        counters: Arc<Counters>,
    ) -> JoinHandle<Writer> {
        Writer::spawn(Writer::run(target, self, rate, clock, counters, |op| {
            op.ledger
        }))
    }
}

impl Op for TimedWrites {
    async fn call(&mut self, conn: &mut Conn, _i: u64, sent: Instant) -> Result<Done, Failure> {
        let n = self.ledger.messages;
        let data = data_json(&format!("\"i\":{n},\"t_ns\":{}", ns_of(sent)), self.size);
        let body = records_body([data.as_str()]);
        let ack = write(conn, &self.path, body, 1, false).await?;
        if ack.first_seq != self.start + 1 + n {
            return Err(Failure::Bad(format!(
                "{}: record {n} got seq {}, want {}",
                self.path,
                ack.first_seq,
                self.start + 1 + n
            )));
        }
        let l = &mut self.ledger;
        l.acked.push(ack.first_seq.to_string());
        l.bytes += data.len() as u64;
        l.messages += 1;
        Ok(Done {
            units: 1,
            bytes: data.len() as u64,
        })
    }
}

/// Check a timed writer's outcome: its acknowledged seqs are `start + 1..` in order, and the
/// topic's `GET` head is past them.
pub async fn check_timed_writes(target: &Target, name: &str, start: u64, w: &Writer) -> Verify {
    let mut v = Verify::new();
    let mut conn = Conn::new(target);
    let want = start + w.records;
    let in_order = w
        .ledger
        .acked
        .iter()
        .zip(start + 1..)
        .all(|(a, s)| a == &s.to_string());
    match topic_state(&mut conn, name).await {
        Ok(s) => v.check(
            s.head_seq == want && in_order,
            format!(
                "{} one-record writes acknowledged with seqs {}..={want} in order; GET head_seq {}",
                w.records,
                start + 1,
                s.head_seq
            ),
        ),
        Err(e) => v.fail(e.to_string()),
    }
    v
}

/// What one subscriber of a topic fan-out is given: tail topic `name` from seq `start`
/// (records of `record_bytes` bytes), signal `connected` once subscribed, stop after `stop`
/// records.
pub struct TailStart {
    pub target: Target,
    pub name: String,
    pub start: u64,
    pub record_bytes: u64,
    pub dec: super::live::Decoder,
    pub stop: tokio::sync::watch::Receiver<u64>,
    pub connected: super::live::Connected,
}

/// Starts one subscriber: an `async fn(TailStart) -> Tail` (the SSE watch session, the
/// WebSocket client).
pub trait Subscriber: Clone {
    fn start(&self, s: TailStart) -> JoinHandle<super::live::Tail>;
}

impl<S, F> Subscriber for S
where
    S: Fn(TailStart) -> F + Clone,
    F: Future<Output = super::live::Tail> + Send + 'static,
{
    fn start(&self, s: TailStart) -> JoinHandle<super::live::Tail> {
        tokio::spawn(self(s))
    }
}

/// The fan-out of one topic's writes to K subscribers that each tail it their own way: the
/// subscriber is the only difference between the scenarios.
struct TailFeed<S> {
    target: Target,
    name: String,
    start: u64,
    size: usize,
    rate: f64,
    subscriber: S,
}

impl<S: Subscriber> super::fanout::Feed for TailFeed<S> {
    fn subscribe(
        &self,
        dec: super::live::Decoder,
        stop: tokio::sync::watch::Receiver<u64>,
        connected: super::live::Connected,
    ) -> JoinHandle<super::live::Tail> {
        self.subscriber.start(TailStart {
            target: self.target.clone(),
            name: self.name.clone(),
            start: self.start,
            record_bytes: self.size as u64,
            dec,
            stop,
            connected,
        })
    }

    fn write(&self, clock: Clock, counters: Arc<Counters>) -> JoinHandle<Writer> {
        let op = TimedWrites::new(&self.name, self.start, self.size);
        op.spawn(self.target.clone(), self.rate, clock, counters)
    }

    async fn check(&self, w: Writer) -> Verify {
        check_timed_writes(&self.target, &self.name, self.start, &w).await
    }
}

/// Run the fan-out steps of `fan` (a fresh topic of class `durability` per K), each subscriber
/// made by `subscriber`; `scenario` names the results and `args` are their parameters.
pub async fn run_tail_fanout<S: Subscriber>(
    c: &Common,
    scenario: &str,
    args: serde_json::Value,
    fan: &super::fanout::FanoutArgs,
    durability: &str,
    subscriber: S,
) -> Result<Vec<crate::stats::ScenarioResult>> {
    let mut out = Vec::new();
    let tag = scenario.trim_start_matches("topics-");
    for (i, &k) in fan.subscribers.iter().enumerate() {
        let name = topic_name(c, tag, i);
        let mut conn = Conn::new(&c.target);
        let start = create_topic(&mut conn, &name, durability).await?.head_seq;
        let feed = TailFeed {
            target: c.target.clone(),
            name: name.clone(),
            start,
            size: fan.size,
            rate: fan.rate,
            subscriber: subscriber.clone(),
        };
        let res = super::fanout::run_step(
            &super::fanout::step_common(c, fan),
            scenario,
            fan,
            args.clone(),
            k.max(1),
            fan.size as u64,
            &feed,
        )
        .await;
        delete_topics(c, &[name]).await;
        out.push(res?);
    }
    Ok(out)
}
