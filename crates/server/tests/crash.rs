//! Kill -9 harness: the real binary under concurrent producer writes to streams of the
//! `fsync`, `disk` and `memory` durability classes, over HTTP/1.1 and HTTP/2, killed with
//! SIGKILL at random moments and restarted on the same directory.
//!
//! SIGKILL is a process crash, not a power loss: the page cache survives, so whatever the
//! server handed to `write()` is kept. All three classes acknowledge an append only after its
//! WAL write returned (`fsync` also after its fsync), so after every restart the oracle is the
//! same for all of them: every acknowledged append is present exactly once, byte-exact and in
//! order, nothing else is, and retrying the append that was in flight with the same producer
//! tuple is answered 204 if it is already stored and 200 (storing it) if it is not.
//!
//! `RIFFLE_CRASH_ROUNDS` sets the number of kills (default 4); `RIFFLE_CRASH_CLASSES` (e.g.
//! `fsync,disk`) limits the classes exercised.

mod common;

use common::{H2, Options, Server, TempDir, header};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

const CLASSES: [&str; 3] = ["fsync", "disk", "memory"];
/// Streams per class and protocol.
const PER: usize = 2;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Proto {
    H1,
    H2,
}

/// One stream and its writer.
#[derive(Clone)]
struct Spec {
    class: &'static str,
    proto: Proto,
    name: String,
}

fn specs() -> Vec<Spec> {
    let only = std::env::var("RIFFLE_CRASH_CLASSES").unwrap_or_default();
    let mut out = Vec::new();
    for class in CLASSES {
        if !only.is_empty() && !only.split(',').any(|c| c.trim() == class) {
            continue;
        }
        for proto in [Proto::H1, Proto::H2] {
            for k in 0..PER {
                out.push(Spec {
                    class,
                    proto,
                    name: format!("crash-{class}-{proto:?}-{k}").to_lowercase(),
                });
            }
        }
    }
    assert!(
        !out.is_empty(),
        "RIFFLE_CRASH_CLASSES={only:?} names no class"
    );
    out
}

/// A server in `file-durable` mode on `data` (streams choose their class on creation).
async fn start(data: &Path) -> Server {
    Server::start_with(
        Options::default()
            .env("DS_STORAGE__MODE", "file-durable")
            .env("DS_STORAGE__DATA_DIR", data.to_str().expect("utf-8 path")),
    )
    .await
}

/// What one writer knows: the payloads acknowledged, and the one in flight when the server died.
#[derive(Default, Clone)]
struct Oracle {
    acked: Vec<Vec<u8>>,
    next_seq: u64,
    in_flight: Option<Vec<u8>>,
}

fn payload(name: &str, seq: u64) -> Vec<u8> {
    // Varying lengths, so a torn or misplaced record cannot hide.
    let pad = "x".repeat((seq as usize * 7 + name.len()) % 300);
    format!("{name}-{seq:08}-{pad}\n").into_bytes()
}

/// A writer's connection: reqwest for HTTP/1.1, our h2 client for HTTP/2.
enum Conn {
    H1(reqwest::Client),
    H2(H2),
}

impl Conn {
    async fn open(proto: Proto, port: u16) -> Result<Self, String> {
        Ok(match proto {
            Proto::H1 => Conn::H1(reqwest::Client::new()),
            Proto::H2 => Conn::H2(H2::connect(port).await?),
        })
    }

    /// POST an append with producer headers; the status, or an error if no answer came.
    async fn post(
        &mut self,
        base: &str,
        spec: &Spec,
        seq: u64,
        body: &[u8],
    ) -> Result<u16, String> {
        let path = format!("/v1/stream/{}", spec.name);
        let id = format!("writer-{}", spec.name);
        let seq = seq.to_string();
        let headers = [
            ("content-type", "text/plain"),
            ("producer-id", id.as_str()),
            ("producer-epoch", "0"),
            ("producer-seq", seq.as_str()),
        ];
        match self {
            Conn::H1(client) => {
                let mut req = client.post(format!("{base}{path}")).body(body.to_vec());
                for (k, v) in headers {
                    req = req.header(k, v);
                }
                let r = req.send().await.map_err(|e| e.to_string())?;
                Ok(r.status().as_u16())
            }
            Conn::H2(h2) => h2
                .request("POST", &path, &headers, body)
                .await
                .map(|r| r.status)
                .map_err(|e| e.to_string()),
        }
    }
}

async fn writer(
    base: String,
    port: u16,
    spec: Spec,
    mut oracle: Oracle,
    stop: Arc<AtomicBool>,
) -> Oracle {
    let Ok(mut conn) = Conn::open(spec.proto, port).await else {
        return oracle; // the server died before we connected
    };
    while !stop.load(Ordering::Relaxed) {
        let seq = oracle.next_seq;
        let body = payload(&spec.name, seq);
        oracle.in_flight = Some(body.clone());
        match conn.post(&base, &spec, seq, &body).await {
            Ok(200) => {
                oracle.acked.push(body);
                oracle.next_seq += 1;
                oracle.in_flight = None;
            }
            Ok(s) => panic!("append {seq} to {} answered {s}", spec.name),
            Err(_) => return oracle, // the server died under us
        }
    }
    oracle
}

/// Where `got` and `want` first differ, for messages.
fn first_difference(got: &[u8], want: &[u8]) -> Option<usize> {
    got.iter()
        .zip(want)
        .position(|(a, b)| a != b)
        .or((got.len() != want.len()).then_some(got.len().min(want.len())))
}

/// After a restart: check one stream against its oracle, resolving the in-flight append.
async fn check(srv: &Server, spec: &Spec, oracle: &mut Oracle, round: usize) {
    let url = srv.url(&format!("/v1/stream/{}", spec.name));
    let what = format!("round {round}, {} stream {:?}", spec.class, spec.name);
    let head = srv.head(&url).await;
    assert_eq!(head.status(), 200, "{what}: HEAD");
    assert_eq!(
        header(&head, "stream-durability").as_deref(),
        Some(spec.class),
        "{what}: the class survives the restart"
    );
    let stored = srv.read_all(&url).await;
    let acked = oracle.acked.concat();
    if let Some(body) = oracle.in_flight.take() {
        let with = [acked.as_slice(), &body].concat();
        let had_it = stored == with;
        assert!(
            had_it || stored == acked,
            "{what}: {} bytes stored, {} acknowledged, {} with the one in flight (first difference at {:?})",
            stored.len(),
            acked.len(),
            with.len(),
            first_difference(&stored, &acked)
        );
        let mut conn = Conn::open(spec.proto, srv.port).await.expect("connect");
        let status = conn
            .post(&srv.base, spec, oracle.next_seq, &body)
            .await
            .expect("the retry");
        let want = if had_it { 204 } else { 200 };
        assert_eq!(
            status, want,
            "{what}: the retry of in-flight seq {} (stored before the retry: {had_it})",
            oracle.next_seq
        );
        oracle.acked.push(body);
        oracle.next_seq += 1;
    } else {
        assert!(
            stored == acked,
            "{what}: {} bytes stored, {} acknowledged (first difference at {:?})",
            stored.len(),
            acked.len(),
            first_difference(&stored, &acked)
        );
    }
    let got = srv.read_all(&url).await;
    assert!(
        got == oracle.acked.concat(),
        "{what}: after the retry the stream holds {} bytes, the oracle {}",
        got.len(),
        oracle.acked.concat().len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill_dash_nine_loses_nothing_acknowledged() {
    let rounds: usize = std::env::var("RIFFLE_CRASH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(4);
    let tmp = TempDir::new("crash");
    let data = tmp.path().join("data");
    let specs = specs();
    let mut oracles = vec![Oracle::default(); specs.len()];

    let server = start(&data).await;
    for spec in &specs {
        let r = server
            .client
            .put(server.url(&format!("/v1/stream/{}", spec.name)))
            .header("content-type", "text/plain")
            .header("stream-durability", spec.class)
            .send()
            .await
            .expect("create");
        assert_eq!(r.status(), 201, "create {}", spec.name);
    }
    let mut server = Some(server);
    let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
    for round in 0..rounds {
        let srv = server.take().expect("a running server");
        let stop = Arc::new(AtomicBool::new(false));
        let tasks: Vec<_> = specs
            .iter()
            .zip(&oracles)
            .map(|(spec, oracle)| {
                tokio::spawn(writer(
                    srv.base.clone(),
                    srv.port,
                    spec.clone(),
                    oracle.clone(),
                    stop.clone(),
                ))
            })
            .collect();
        oracles = common::kill_mid_write(srv, &mut seed, &stop, tasks).await;

        let srv = start(&data).await;
        for (spec, oracle) in specs.iter().zip(oracles.iter_mut()) {
            check(&srv, spec, oracle, round).await;
        }
        server = Some(srv);
    }
    // Every writer got appends through (a loaded machine may starve one for a round).
    for (spec, oracle) in specs.iter().zip(&oracles) {
        assert!(!oracle.acked.is_empty(), "{} made no progress", spec.name);
    }
    let total: usize = oracles.iter().map(|o| o.acked.len()).sum();
    assert!(
        total > specs.len() * rounds,
        "the writers made progress ({total} appends)"
    );
    drop(server);
}
