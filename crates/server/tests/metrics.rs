//! `/metrics` and `/v0/metrics` over HTTP: the output is valid Prometheus text (checked line by
//! line by a strict parser below, in both the 0.0.4 and the OpenMetrics form), and the
//! counters move as requests are made: requests and appends by class, WAL fsyncs, rotations
//! and queue depth, auth failures by reason, 429s by limit, live connections; labels never
//! carry names.

mod common;

use common::{Options, Server, TempDir};
use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

type Labels = Vec<(String, String)>;

/// One sample: metric name, labels, value.
#[derive(Debug, Clone)]
struct Sample {
    name: String,
    labels: Vec<(String, String)>,
    value: f64,
}

/// A parsed scrape.
#[derive(Debug)]
struct Scrape {
    types: HashMap<String, String>,
    samples: Vec<Sample>,
}

impl Scrape {
    /// The sum of the samples named `name` whose labels include all of `want` (0 if none).
    fn get(&self, name: &str, want: &[(&str, &str)]) -> f64 {
        self.samples
            .iter()
            .filter(|s| s.name == name)
            .filter(|s| {
                want.iter()
                    .all(|(k, v)| s.labels.iter().any(|(lk, lv)| lk == k && lv == v))
            })
            .map(|s| s.value)
            .sum()
    }

    fn has(&self, name: &str) -> bool {
        self.samples.iter().any(|s| s.name == name)
    }
}

fn valid_name(n: &str, label: bool) -> bool {
    let mut chars = n.chars();
    let ok_first = |c: char| c.is_ascii_alphabetic() || c == '_' || (!label && c == ':');
    chars.next().is_some_and(ok_first)
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || (!label && c == ':'))
}

fn parse_value(v: &str) -> Option<f64> {
    match v {
        "NaN" => Some(f64::NAN),
        "+Inf" => Some(f64::INFINITY),
        "-Inf" => Some(f64::NEG_INFINITY),
        _ => v.parse().ok(),
    }
}

/// `{k="v",...}` at the start of `s`: the labels and the rest of the line.
fn parse_labels(s: &str) -> Result<(Labels, &str), String> {
    let mut labels = Vec::new();
    let mut rest = s.strip_prefix('{').ok_or("no {")?;
    loop {
        if let Some(r) = rest.strip_prefix('}') {
            return Ok((labels, r));
        }
        let eq = rest.find('=').ok_or("label without =")?;
        let key = &rest[..eq];
        if !valid_name(key, true) {
            return Err(format!("bad label name {key:?}"));
        }
        rest = rest[eq + 1..]
            .strip_prefix('"')
            .ok_or("label value not quoted")?;
        let mut value = String::new();
        let mut chars = rest.char_indices();
        let end = loop {
            match chars.next().ok_or("unterminated label value")? {
                (i, '"') => break i,
                (_, '\\') => match chars.next().ok_or("dangling escape")?.1 {
                    'n' => value.push('\n'),
                    c @ ('\\' | '"') => value.push(c),
                    c => return Err(format!("bad escape \\{c}")),
                },
                (_, c) => value.push(c),
            }
        };
        if labels.iter().any(|(k, _)| k == key) {
            return Err(format!("label {key} twice"));
        }
        labels.push((key.to_string(), value));
        rest = &rest[end + 1..];
        rest = rest.strip_prefix(',').unwrap_or(rest);
    }
}

/// The family a sample name belongs to, given the declared types.
fn family_of<'a>(name: &str, types: &'a HashMap<String, String>) -> Option<(&'a str, &'a str)> {
    if let Some((f, t)) = types.get_key_value(name) {
        return Some((f.as_str(), t.as_str()));
    }
    for suffix in ["_total", "_created", "_bucket", "_sum", "_count"] {
        if let Some(base) = name.strip_suffix(suffix)
            && let Some((f, t)) = types.get_key_value(base)
        {
            let fits = match t.as_str() {
                "counter" => matches!(suffix, "_total" | "_created"),
                "histogram" => matches!(suffix, "_bucket" | "_sum" | "_count" | "_created"),
                _ => false,
            };
            return fits.then_some((f.as_str(), t.as_str()));
        }
    }
    None
}

/// Parse strictly: every line is a HELP, TYPE (or OpenMetrics UNIT/EOF) or sample line; every
/// sample belongs to a family declared before it, whose samples are contiguous; histograms'
/// buckets are cumulative and end in `+Inf` equal to `_count`.
fn parse(text: &str, openmetrics: bool) -> Scrape {
    let mut types: HashMap<String, String> = HashMap::new();
    let mut helped = HashSet::new();
    let mut samples = Vec::new();
    let mut done_families = HashSet::new();
    let mut current: Option<String> = None;
    let mut eof = false;
    for (n, line) in text.lines().enumerate() {
        let at = format!("line {}: {line:?}", n + 1);
        assert!(!eof, "{at}: after # EOF");
        if line == "# EOF" {
            assert!(openmetrics, "{at}: # EOF in the 0.0.4 format");
            eof = true;
            continue;
        }
        if let Some(meta) = line.strip_prefix("# ") {
            let mut parts = meta.splitn(3, ' ');
            let (kind, name) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
            assert!(valid_name(name, false), "{at}: bad metric name");
            match kind {
                "HELP" => assert!(helped.insert(name.to_string()), "{at}: HELP twice"),
                "TYPE" => {
                    let t = parts.next().unwrap_or("");
                    let known = [
                        "counter",
                        "gauge",
                        "histogram",
                        "summary",
                        "untyped",
                        "unknown",
                    ];
                    assert!(known.contains(&t), "{at}: unknown type");
                    assert!(
                        types.insert(name.to_string(), t.to_string()).is_none(),
                        "{at}: TYPE twice"
                    );
                }
                "UNIT" => assert!(openmetrics, "{at}: UNIT in the 0.0.4 format"),
                _ => panic!("{at}: not a HELP/TYPE line"),
            }
            continue;
        }
        assert!(
            !line.is_empty() && !line.starts_with('#'),
            "{at}: stray line"
        );
        let name_end = line
            .find(['{', ' '])
            .unwrap_or_else(|| panic!("{at}: no value"));
        let name = &line[..name_end];
        assert!(valid_name(name, false), "{at}: bad metric name");
        let (labels, rest) = if line[name_end..].starts_with('{') {
            parse_labels(&line[name_end..]).unwrap_or_else(|e| panic!("{at}: {e}"))
        } else {
            (Vec::new(), &line[name_end..])
        };
        let mut fields = rest.trim_start_matches(' ').split(' ');
        let value = fields.next().and_then(parse_value);
        let value = value.unwrap_or_else(|| panic!("{at}: bad value"));
        if let Some(ts) = fields.next() {
            assert!(ts.parse::<f64>().is_ok(), "{at}: bad timestamp");
        }
        assert!(fields.next().is_none(), "{at}: trailing fields");
        let (family, _) =
            family_of(name, &types).unwrap_or_else(|| panic!("{at}: sample of no declared family"));
        if current.as_deref() != Some(family) {
            assert!(
                done_families.insert(family.to_string()),
                "{at}: family {family} not contiguous"
            );
            current = Some(family.to_string());
        }
        samples.push(Sample {
            name: name.to_string(),
            labels,
            value,
        });
    }
    assert_eq!(eof, openmetrics, "OpenMetrics ends in # EOF, and only it");
    check_histograms(&types, &samples);
    Scrape { types, samples }
}

fn check_histograms(types: &HashMap<String, String>, samples: &[Sample]) {
    for (family, _) in types.iter().filter(|(_, t)| *t == "histogram") {
        // Per series (labels without `le`): buckets in order, cumulative, +Inf == count.
        type Buckets = (Vec<(f64, f64)>, Option<f64>);
        let mut series: HashMap<Labels, Buckets> = HashMap::new();
        for s in samples {
            let key: Vec<_> = s
                .labels
                .iter()
                .filter(|(k, _)| k != "le")
                .cloned()
                .collect();
            if s.name == format!("{family}_bucket") {
                let le = s.labels.iter().find(|(k, _)| k == "le").expect("le label");
                let le = parse_value(&le.1).expect("le value");
                series.entry(key).or_default().0.push((le, s.value));
            } else if s.name == format!("{family}_count") {
                series.entry(key).or_default().1 = Some(s.value);
            }
        }
        for (labels, (buckets, count)) in series {
            let at = format!("{family}{labels:?}");
            assert!(
                buckets
                    .windows(2)
                    .all(|w| w[0].0 < w[1].0 && w[0].1 <= w[1].1),
                "{at}: buckets not cumulative: {buckets:?}"
            );
            let last = buckets.last().expect("buckets");
            assert!(last.0.is_infinite(), "{at}: no +Inf bucket");
            assert_eq!(Some(last.1), count, "{at}: +Inf bucket is not the count");
        }
    }
}

async fn scrape_as(s: &Server, path: &str, key: Option<&str>, openmetrics: bool) -> Scrape {
    let mut r = s.client.get(s.url(path));
    if let Some(k) = key {
        r = r.header("authorization", format!("Bearer {k}"));
    }
    if openmetrics {
        r = r.header(
            "accept",
            "application/openmetrics-text;version=1.0.0,text/plain;q=0.5",
        );
    }
    let resp = r.send().await.expect("metrics");
    assert_eq!(resp.status(), 200, "{path}");
    let ct = common::header(&resp, "content-type").unwrap_or_default();
    let want = if openmetrics {
        "application/openmetrics-text"
    } else {
        "text/plain"
    };
    assert!(ct.starts_with(want), "{path}: content type {ct}");
    let text = resp.text().await.expect("body");
    parse(&text, openmetrics)
}

async fn scrape(s: &Server, key: Option<&str>) -> Scrape {
    scrape_as(s, "/metrics", key, false).await
}

/// `/v0/metrics`' JSON snapshot.
async fn metrics_json(s: &Server) -> serde_json::Value {
    let r = s
        .client
        .get(s.url("/v0/metrics"))
        .header("accept", "application/json")
        .send()
        .await
        .expect("json");
    serde_json::from_str(&r.text().await.expect("body")).expect("JSON")
}

async fn send(
    s: &Server,
    method: reqwest::Method,
    path: &str,
    key: Option<&str>,
    body: &str,
) -> u16 {
    let mut r = s
        .client
        .request(method, s.url(path))
        .header("content-type", "application/json");
    if let Some(k) = key {
        r = r.header("authorization", k);
    }
    r.body(body.to_string())
        .send()
        .await
        .expect("answer")
        .status()
        .as_u16()
}

/// `/metrics` answers GET and HEAD; another method is told which ones (405 with `Allow`), not
/// that the path does not exist.
#[tokio::test]
async fn other_methods_on_metrics_are_not_allowed() {
    let s = Server::start_with(Options::default()).await;
    let head = s.client.head(s.url("/metrics")).send().await.expect("HEAD");
    assert_eq!(head.status(), 200);
    for m in [
        reqwest::Method::PUT,
        reqwest::Method::POST,
        reqwest::Method::DELETE,
    ] {
        let r = s
            .client
            .request(m.clone(), s.url("/metrics"))
            .send()
            .await
            .expect("answer");
        assert_eq!(r.status(), 405, "{m}");
        assert_eq!(
            common::header(&r, "allow").as_deref(),
            Some("GET, HEAD"),
            "{m}"
        );
    }
}

#[tokio::test]
async fn requests_appends_and_wal_activity_are_counted() {
    let dir = TempDir::new("metrics-counts");
    let s =
        Server::start_with(Options::default().storage("file-durable", &dir.path().join("d"))).await;
    let before = scrape(&s, None).await;
    let url = s.stream("secret-stream-name");
    s.create(&url, "text/plain").await;
    for _ in 0..3 {
        s.append(&url, "text/plain", "hello").await;
    }
    let write = r#"{"records":[{"data":{"a":1}},{"data":2}]}"#;
    assert_eq!(
        send(
            &s,
            reqwest::Method::POST,
            "/v0/topics/secret-topic",
            None,
            write
        )
        .await,
        201
    );
    assert_eq!(
        send(&s, reqwest::Method::GET, "/nowhere", None, "").await,
        404
    );
    let after = scrape(&s, None).await;
    let delta =
        |name: &str, labels: &[(&str, &str)]| after.get(name, labels) - before.get(name, labels);

    let req = "riffle_http_requests_total";
    let stream = [("api", "streams"), ("route", "stream")];
    assert_eq!(
        delta(
            req,
            &[stream[0], stream[1], ("method", "PUT"), ("status", "2xx")]
        ),
        1.0
    );
    assert_eq!(
        delta(
            req,
            &[stream[0], stream[1], ("method", "POST"), ("status", "2xx")]
        ),
        3.0
    );
    let topic = [
        ("api", "topics"),
        ("route", "topics/:t"),
        ("method", "POST"),
    ];
    assert_eq!(
        delta(req, &[topic[0], topic[1], topic[2], ("status", "2xx")]),
        1.0
    );
    assert_eq!(delta(req, &[("route", "unknown"), ("status", "4xx")]), 1.0);
    let latency = "riffle_http_request_duration_seconds_count";
    assert_eq!(delta(latency, &stream), 4.0);

    // Appends by class: the stream is fsync (file-durable), a topic is disk by default.
    assert_eq!(delta("riffle_appends_total", &[("class", "fsync")]), 3.0);
    assert_eq!(
        delta("riffle_appended_bytes_total", &[("class", "fsync")]),
        15.0
    );
    assert_eq!(delta("riffle_appends_total", &[("class", "disk")]), 1.0);
    assert_eq!(
        delta("riffle_appended_bytes_total", &[("class", "disk")]),
        8.0
    );

    // Each fsync append waited for a sync: the latency and group-size histograms grew.
    assert!(delta("riffle_wal_fsync_duration_seconds_count", &[]) >= 3.0);
    assert!(delta("riffle_wal_records_per_fsync_count", &[]) >= 3.0);
    assert!(delta("riffle_wal_records_per_fsync_sum", &[]) >= 4.0);
    assert!(delta("riffle_wal_syncs_total", &[]) >= 3.0);
    assert!(delta("riffle_wal_bytes_total", &[]) > 15.0);
    assert!(
        after.get("riffle_checkpoints_total", &[]) >= 1.0,
        "the start-up checkpoint"
    );
    assert_eq!(after.get("riffle_ready", &[]), 1.0);
    assert_eq!(after.get("riffle_streams", &[]), 2.0);
    assert_eq!(
        after
            .types
            .get("riffle_wal_fsync_duration_seconds")
            .map(String::as_str),
        Some("histogram")
    );

    // Bounded cardinality: no name a client chose is a label.
    for sample in &after.samples {
        for (_, v) in &sample.labels {
            assert!(!v.contains("secret"), "a name in a label: {sample:?}");
        }
    }
    // The same registry in OpenMetrics, and under /v0/metrics with the topics gauges.
    let om = scrape_as(&s, "/metrics", None, true).await;
    assert!(om.get("riffle_appends_total", &[("class", "fsync")]) >= 3.0);
    let v0 = scrape_as(&s, "/v0/metrics", None, false).await;
    assert_eq!(v0.get("topics", &[]), 1.0);
    assert_eq!(v0.get("topic_records", &[("topic", "secret-topic")]), 2.0);
    assert!(v0.has("riffle_wal_syncs_total") && v0.has("riffle_http_requests_total"));
    scrape_as(&s, "/v0/metrics", None, true).await;
}

#[tokio::test]
async fn wal_rotations_and_queue_depth_are_exported() {
    let dir = TempDir::new("metrics-wal-queue");
    let s =
        Server::start_with(Options::default().storage("file-durable", &dir.path().join("d"))).await;
    let url = s.stream("queued");
    s.create(&url, "text/plain").await;
    // Concurrent fsync appends: queued together for the committer.
    let mut appends = tokio::task::JoinSet::new();
    for i in 0..16 {
        let r = s.client.post(&url).header("content-type", "text/plain");
        appends.spawn(r.body(format!("a{i}")).send());
    }
    while let Some(r) = appends.join_next().await {
        assert_eq!(r.expect("task").expect("answer").status(), 204);
    }
    let m = scrape(&s, None).await;
    for (name, kind) in [
        ("riffle_wal_rotations_total", "counter"),
        ("riffle_wal_queue_depth", "gauge"),
        ("riffle_wal_queue_depth_peak", "gauge"),
    ] {
        assert_eq!(m.types.get(name).map(String::as_str), Some(kind), "{name}");
    }
    // The start-up checkpoint started a new segment in every shard.
    assert!(m.get("riffle_wal_rotations_total", &[]) >= 1.0);
    assert!(
        m.get("riffle_wal_queue_depth_peak", &[]) >= 1.0,
        "appends were queued"
    );
    // Idle: nothing waits for a committer (a background request may be in flight briefly).
    let deadline = Instant::now() + Duration::from_secs(5);
    let m = loop {
        let m = scrape(&s, None).await;
        if m.get("riffle_wal_queue_depth", &[]) == 0.0 {
            break m;
        }
        assert!(Instant::now() < deadline, "the WAL queue never drained");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    // The same numbers in /v0/metrics' JSON `wal` block (only a checkpoint rotates now).
    let wal = metrics_json(&s).await["wal"].clone();
    let rotations = m.get("riffle_wal_rotations_total", &[]);
    assert_eq!(wal["rotations"].as_f64(), Some(rotations), "{wal}");
    let peak = m.get("riffle_wal_queue_depth_peak", &[]);
    assert!(wal["queue_depth_peak"].as_f64() >= Some(peak), "{wal}");
    assert!(wal["queue_depth"].is_u64(), "{wal}");
}

#[tokio::test]
async fn the_cache_of_open_files_is_exported() {
    let dir = TempDir::new("metrics-open-files");
    let s = Server::start_with(
        Options::default()
            .storage("file-durable", &dir.path().join("d"))
            .env("DS_STORAGE__MAX_OPEN_FILES", "8"),
    )
    .await;
    // 20 streams of two files each, written twice over: more files than the cache holds.
    let urls: Vec<String> = (0..20).map(|i| s.stream(&format!("f{i}"))).collect();
    for url in &urls {
        s.create(url, "text/plain").await;
    }
    for round in 0..2 {
        for url in &urls {
            let r = s.client.post(url).header("content-type", "text/plain");
            let r = r.body(format!("r{round}")).send().await.expect("append");
            assert_eq!(r.status(), 204);
        }
    }
    let m = scrape(&s, None).await;
    for (name, kind) in [
        ("riffle_open_files", "gauge"),
        ("riffle_open_files_capacity", "gauge"),
        ("riffle_file_opens_total", "counter"),
        ("riffle_file_evictions_total", "counter"),
        ("riffle_damaged_reads_total", "counter"),
    ] {
        assert_eq!(m.types.get(name).map(String::as_str), Some(kind), "{name}");
    }
    assert_eq!(m.get("riffle_damaged_reads_total", &[]), 0.0);
    let capacity = m.get("riffle_open_files_capacity", &[]);
    assert!((1.0..=8.0).contains(&capacity), "capacity {capacity}");
    let open = m.get("riffle_open_files", &[]);
    assert!(open >= 1.0 && open <= capacity, "{open} open of {capacity}");
    // Each stream's two files were created through the cache, and most did not stay.
    let opens = m.get("riffle_file_opens_total", &[]);
    assert!(opens >= 40.0, "opens {opens}");
    let evictions = m.get("riffle_file_evictions_total", &[]);
    assert!(evictions >= 40.0 - capacity, "evictions {evictions}");
    // Every open is held, was evicted, or (not here: no deletes) was removed or lost a race.
    assert!(
        opens - evictions >= open,
        "{opens} opens, {evictions} evictions, {open} open"
    );
}

#[tokio::test]
async fn auth_failures_are_counted_by_reason() {
    let s =
        Server::start_with(Options::default().env("DS_AUTH__API_KEYS", "ops, reader:r:allowed"))
            .await;
    let get = reqwest::Method::GET;
    let cases = [
        (None, "/v1/stream/allowed", 401),
        (Some("Bearer nope"), "/v1/stream/allowed", 401),
        (Some("Basic abc"), "/v1/stream/allowed", 401),
        (Some("Bearer reader"), "/v1/stream/other", 403),
        (Some("Bearer reader"), "/v0/topics/other", 403),
    ];
    for (key, path, want) in cases {
        assert_eq!(
            send(&s, get.clone(), path, key, "").await,
            want,
            "{key:?} {path}"
        );
    }
    assert_eq!(
        send(
            &s,
            reqwest::Method::POST,
            "/v1/stream/allowed",
            Some("Bearer reader"),
            "x"
        )
        .await,
        403
    );
    let m = scrape(&s, Some("reader")).await;
    let fails = |reason| m.get("riffle_auth_failures_total", &[("reason", reason)]);
    assert_eq!(fails("missing"), 1.0);
    assert_eq!(fails("unknown"), 1.0);
    assert_eq!(fails("malformed"), 1.0);
    assert_eq!(fails("forbidden_name"), 2.0);
    assert_eq!(fails("forbidden_scope"), 1.0);
    assert_eq!(m.get("riffle_auth_failures_total", &[]), 6.0);
    let refused = [("method", "GET"), ("status", "4xx"), ("route", "stream")];
    assert_eq!(m.get("riffle_http_requests_total", &refused), 4.0);
}

#[tokio::test]
async fn refusals_by_limit_and_live_connections_are_counted() {
    let s = Server::start_with(
        // Long-polls of 1 s: an SSE response writes a keep-alive each second, which is how
        // the server sees that its client left.
        Options::default()
            .long_poll_secs(1)
            .env("DS_LIMITS__MAX_TOPICS", "1")
            .env("DS_LIMITS__MAX_LIVE_CONNECTIONS", "1"),
    )
    .await;
    let put = reqwest::Method::PUT;
    assert_eq!(send(&s, put.clone(), "/v0/topics/a", None, "{}").await, 201);
    assert_eq!(send(&s, put.clone(), "/v0/topics/b", None, "{}").await, 429);
    let url = s.stream("live");
    s.create(&url, "text/plain").await;
    let sse = s
        .client
        .get(format!("{url}?offset=-1&live=sse"))
        .send()
        .await
        .expect("sse");
    assert_eq!(sse.status(), 200);
    let m = scrape(&s, None).await;
    assert_eq!(m.get("riffle_live_connections", &[("kind", "sse")]), 1.0);
    assert_eq!(
        m.get("riffle_live_connections", &[("kind", "long_poll")]),
        0.0
    );
    let lp = s
        .client
        .get(format!("{url}?offset=now&live=long-poll"))
        .send()
        .await;
    assert_eq!(lp.expect("long-poll").status(), 429);
    let m = scrape(&s, None).await;
    let throttled = |limit| m.get("riffle_throttled_total", &[("limit", limit)]);
    assert_eq!(throttled("max_topics"), 1.0);
    assert_eq!(throttled("max_live_connections"), 1.0);
    assert_eq!(
        m.get(
            "riffle_http_requests_total",
            &[("status", "4xx"), ("api", "topics")]
        ),
        1.0
    );
    // The slot and the gauge come back when the SSE response goes.
    drop(sse);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let m = scrape(&s, None).await;
        if m.get("riffle_live_connections", &[("kind", "sse")]) == 0.0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the SSE gauge never went back to 0"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn per_topic_series_are_capped_by_max_series() {
    let s = Server::start_with(Options::default().env("DS_METRICS__MAX_SERIES", "2")).await;
    for t in ["t1", "t2", "t3"] {
        let w = r#"{"records":[{"data":1}]}"#;
        assert_eq!(
            send(
                &s,
                reqwest::Method::POST,
                &format!("/v0/topics/{t}"),
                None,
                w
            )
            .await,
            201
        );
    }
    let m = scrape_as(&s, "/v0/metrics", None, false).await;
    assert_eq!(m.get("topics", &[]), 3.0);
    assert_eq!(m.get("topics_per_topic_truncated", &[]), 1.0);
    let series = m
        .samples
        .iter()
        .filter(|x| x.name == "topic_records")
        .count();
    assert_eq!(series, 2);
    let v = metrics_json(&s).await;
    assert_eq!(v["per_topic"].as_array().map(Vec::len), Some(2), "{v}");
    assert_eq!(v["per_topic_truncated"], true);
    // `/metrics` has the registry only: no per-topic series at all.
    assert!(!scrape(&s, None).await.has("topic_records"));
}

#[tokio::test]
async fn jwt_refusals_are_counted_by_reason() {
    use jsonwebtoken::{EncodingKey, Header, encode};
    const SECRET: &str = "metrics-test-secret-of-at-least-32-bytes";
    let s = Server::start_with(
        Options::default()
            .env("DS_AUTH__JWT_HS256_SECRET", SECRET)
            .env("DS_AUTH__API_KEYS", "ops"),
    )
    .await;
    let now = jsonwebtoken::get_current_timestamp();
    let sign = |exp: u64, secret: &str| {
        let claims = serde_json::json!({ "exp": exp, "grants": [{ "prefix": "", "scopes": "r" }] });
        let key = EncodingKey::from_secret(secret.as_bytes()).expect("a key");
        encode(&Header::default(), &claims, &key).expect("a token")
    };
    let expired = format!("Bearer {}", sign(now - 10, SECRET));
    let forged = format!(
        "Bearer {}",
        sign(now + 60, "another-secret-of-at-least-32-bytes!!")
    );
    let fine = format!("Bearer {}", sign(now + 60, SECRET));
    let get = reqwest::Method::GET;
    let path = "/v1/stream/x?offset=-1";
    assert_eq!(send(&s, get.clone(), path, Some(&expired), "").await, 401);
    assert_eq!(send(&s, get.clone(), path, Some(&forged), "").await, 401);
    assert_eq!(send(&s, get.clone(), path, Some(&fine), "").await, 404);
    let m = scrape(&s, Some("ops")).await;
    let fails = |reason| m.get("riffle_auth_failures_total", &[("reason", reason)]);
    assert_eq!(fails("expired"), 1.0);
    assert_eq!(fails("bad_signature"), 1.0);
    assert_eq!(m.get("riffle_auth_failures_total", &[]), 2.0);
}
