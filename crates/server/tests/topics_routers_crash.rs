//! Kill -9 harness for routers: an `fsync` source topic feeds two routers, `r1`
//! (`at_least_once`) into `d1` and `r2` (`exactly_once`) into `d2`; concurrent writers post
//! batches to the source and one client writes to `d1` directly (so copies and direct writes
//! interleave there). The server is killed with SIGKILL at a random moment and restarted on the
//! same directory.
//!
//! After every restart, once forwarding settles (`forwarded_total` equals the number of source
//! records written since the routers were created, and the destinations stop growing): every
//! acknowledged source record is in the source; `d2` holds exactly one copy of each source
//! record since the router's start, in source order, at seqs 1.., each with its own
//! `meta._topics_router.idempotency_key`; the copies in `d1` are the same records, once each, in
//! order; and every acknowledged direct write to `d1` is there once, at the seq it was
//! acknowledged with.
//!
//! `RIFFLE_CRASH_ROUNDS` sets the number of kills (default 2).

mod common;

use common::{Options, Server, TempDir};
use reqwest::Method;
use serde_json::{Value, json};
use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// Source writers.
const WRITERS: usize = 3;
/// Source records written before the routers exist (not forwarded).
const BEFORE: u64 = 3;
/// How long forwarding may take to settle after a restart.
const SETTLE: Duration = Duration::from_secs(20);

async fn start(data: &Path) -> Server {
    Server::start_with(
        Options::default()
            .env("DS_STORAGE__MODE", "file-durable")
            .env("DS_STORAGE__DATA_DIR", data.to_str().expect("utf-8 path")),
    )
    .await
}

async fn call(srv: &Server, method: Method, path: &str, body: Value) -> (u16, Value) {
    let r = srv
        .client
        .request(method, srv.url(path))
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .expect("request");
    let status = r.status().as_u16();
    let text = r.text().await.expect("body");
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

/// `POST /v0/topics/:topic` of records with these `data`: the first seq, or `Err` if the
/// server went away.
async fn post(
    client: &reqwest::Client,
    base: &str,
    topic: &str,
    data: &[Value],
) -> Result<u64, String> {
    let records: Vec<Value> = data.iter().map(|d| json!({ "data": d })).collect();
    let r = client
        .post(format!("{base}/v0/topics/{topic}"))
        .header("content-type", "application/json")
        .body(json!({ "records": records }).to_string())
        .send()
        .await
        .map_err(|e| e.to_string())?;
    let status = r.status().as_u16();
    let text = r.text().await.map_err(|e| e.to_string())?;
    let v: Value = serde_json::from_str(&text).map_err(|e| e.to_string())?;
    assert_eq!(status, 200, "write to {topic}: {v}");
    assert_eq!(
        v["last_seq"].as_u64(),
        v["first_seq"].as_u64().map(|f| f + data.len() as u64 - 1),
        "{v}"
    );
    v["first_seq"]
        .as_u64()
        .ok_or_else(|| format!("no first_seq: {v}"))
}

/// What one writer had acknowledged: record ids (with their seq), and the batch in flight.
#[derive(Clone, Default)]
struct Oracle {
    acked: Vec<(u64, String)>,
    next: u64,
    in_flight: Vec<String>,
}

/// A source writer (`direct: false`) or the direct writer to `d1`, until `stop` or the kill.
async fn writer(
    base: String,
    name: String,
    direct: bool,
    mut o: Oracle,
    stop: Arc<AtomicBool>,
) -> Oracle {
    let client = reqwest::Client::new();
    let topic = if direct { "d1" } else { "src" };
    while !stop.load(Ordering::Relaxed) {
        let size = if direct {
            1 + o.next % 2
        } else {
            1 + o.next % 4
        };
        let ids: Vec<String> = (0..size)
            .map(|i| format!("{name}-{}-{i}", o.next))
            .collect();
        let data: Vec<Value> = ids
            .iter()
            .map(|id| json!({ "id": id, "direct": direct }))
            .collect();
        o.in_flight = ids.clone();
        match post(&client, &base, topic, &data).await {
            Ok(first) => {
                o.acked.extend((first..).zip(ids));
                o.in_flight.clear();
                o.next += 1;
            }
            Err(_) => return o, // killed under us
        }
        if direct {
            // Fewer direct writes than copies: several copies between two of them.
            tokio::time::sleep(Duration::from_millis(3)).await;
        }
    }
    o
}

/// One stored record: seq, the id in its data, and its meta.
struct Stored {
    seq: u64,
    id: String,
    direct: bool,
    meta: Value,
}

/// Every record of `topic`, in seq order (a tombstone is a failure: nothing is evicted).
async fn read_all(srv: &Server, topic: &str) -> Vec<Stored> {
    let (mut out, mut from) = (Vec::new(), 0);
    loop {
        let body = json!({ "from_seq": from, "limit": 1000 });
        let (s, v) = call(srv, Method::POST, &format!("/v0/topics/{topic}/diff"), body).await;
        assert_eq!(s, 200, "{topic}: {v}");
        assert!(v["tombstone"].is_null(), "{topic}: {v}");
        for r in v["records"].as_array().expect("records") {
            out.push(Stored {
                seq: r["$seq"].as_u64().expect("$seq"),
                id: r["data"]["id"].as_str().expect("an id").to_string(),
                direct: r["data"]["direct"] == true,
                meta: r["meta"].clone(),
            });
        }
        from = v["next_from_seq"].as_u64().expect("next_from_seq");
        if v["caught_up"] == true {
            return out;
        }
    }
}

async fn head(srv: &Server, topic: &str) -> u64 {
    let (s, v) = call(
        srv,
        Method::GET,
        &format!("/v0/topics/{topic}"),
        Value::Null,
    )
    .await;
    assert_eq!(s, 200, "{topic}: {v}");
    v["head_seq"].as_u64().expect("head_seq")
}

async fn forwarded(srv: &Server, router: &str) -> u64 {
    let (s, v) = call(
        srv,
        Method::GET,
        &format!("/v0/routers/{router}"),
        Value::Null,
    )
    .await;
    assert_eq!(s, 200, "{router}: {v}");
    v["forwarded_total"].as_u64().expect("forwarded_total")
}

/// Wait until both routers have forwarded every source record since their start and neither
/// destination grows any more.
async fn settle(srv: &Server, round: usize) {
    let want = head(srv, "src").await - BEFORE;
    let deadline = Instant::now() + SETTLE;
    let mut last = (0, 0);
    let mut stable = 0;
    loop {
        let (f1, f2) = (forwarded(srv, "r1").await, forwarded(srv, "r2").await);
        assert!(
            f1 <= want && f2 <= want,
            "round {round}: forwarded {f1}, {f2} of {want}"
        );
        let heads = (head(srv, "d1").await, head(srv, "d2").await);
        stable = if (f1, f2) == (want, want) && heads == last {
            stable + 1
        } else {
            0
        };
        if stable >= 3 {
            return;
        }
        last = heads;
        assert!(
            Instant::now() < deadline,
            "round {round}: forwarded {f1}, {f2} of {want} within {SETTLE:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_dash_nine_neither_loses_nor_duplicates_router_copies() {
    let rounds: usize = std::env::var("RIFFLE_CRASH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2);
    let tmp = TempDir::new("topics-routers-crash");
    let data = tmp.path().join("data");
    let srv = start(&data).await;
    for (t, class) in [("src", "fsync"), ("d1", "disk"), ("d2", "fsync")] {
        let body = json!({ "durability": class });
        let (s, v) = call(&srv, Method::PUT, &format!("/v0/topics/{t}"), body).await;
        assert_eq!(s, 201, "{t}: {v}");
    }
    let before: Vec<Value> = (0..BEFORE)
        .map(|i| json!({ "id": format!("before-{i}") }))
        .collect();
    post(&srv.client, &srv.base, "src", &before)
        .await
        .expect("write");
    for (r, dest, guarantee) in [("r1", "d1", "at_least_once"), ("r2", "d2", "exactly_once")] {
        let body = json!({ "source": "src", "dest": dest, "guarantee": guarantee });
        let (s, v) = call(&srv, Method::PUT, &format!("/v0/routers/{r}"), body).await;
        assert_eq!(s, 201, "{r}: {v}");
    }
    let names: Vec<String> = (0..WRITERS)
        .map(|k| format!("w{k}"))
        .chain(["direct".into()])
        .collect();
    let mut oracles = vec![Oracle::default(); names.len()];
    let mut server = Some(srv);
    let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
    let mut copies_seen = 0;
    for round in 0..rounds {
        let srv = server.take().expect("a running server");
        let stop = Arc::new(AtomicBool::new(false));
        let tasks: Vec<_> = names
            .iter()
            .zip(&oracles)
            .map(|(name, o)| {
                let direct = name == "direct";
                let args = (srv.base.clone(), name.clone(), o.clone(), stop.clone());
                tokio::spawn(writer(args.0, args.1, direct, args.2, args.3))
            })
            .collect();
        oracles = common::kill_mid_write(srv, &mut seed, &stop, tasks).await;

        let srv = start(&data).await;
        settle(&srv, round).await;
        let what = format!("round {round}");

        // The source: every acknowledged record, once, at its seq.
        let src = read_all(&srv, "src").await;
        let src_seq: HashMap<&str, u64> = src.iter().map(|r| (r.id.as_str(), r.seq)).collect();
        assert_eq!(
            src_seq.len(),
            src.len(),
            "{what}: duplicate ids in the source"
        );
        for (name, o) in names.iter().zip(&oracles).filter(|(n, _)| *n != "direct") {
            for (seq, id) in &o.acked {
                assert_eq!(src_seq.get(id.as_str()), Some(seq), "{what}: {name}'s {id}");
            }
        }
        let forwarded_ids: Vec<&str> = src
            .iter()
            .filter(|r| r.seq > BEFORE)
            .map(|r| r.id.as_str())
            .collect();
        assert_eq!(
            forwarded_ids.len() as u64,
            head(&srv, "src").await - BEFORE,
            "{what}"
        );

        // d2: the copies, exactly, at seqs 1.., each with its own key.
        let d2 = read_all(&srv, "d2").await;
        let d2_ids: Vec<&str> = d2.iter().map(|r| r.id.as_str()).collect();
        if d2_ids != forwarded_ids {
            let first = d2_ids.iter().zip(&forwarded_ids).position(|(a, b)| a != b);
            panic!(
                "{what}: d2 holds {} copies of {} source records; first difference at {first:?}",
                d2_ids.len(),
                forwarded_ids.len()
            );
        }
        let mut keys = HashSet::new();
        for (k, r) in d2.iter().enumerate() {
            assert_eq!(r.seq, k as u64 + 1, "{what}: d2 seqs are contiguous");
            let key = r.meta["_topics_router"]["idempotency_key"].as_str();
            let want = format!("r2:{}", src_seq[r.id.as_str()]);
            assert_eq!(
                key,
                Some(want.as_str()),
                "{what}: d2 seq {}: {}",
                r.seq,
                r.meta
            );
            assert!(keys.insert(want), "{what}");
        }

        // d1: the same copies in order, and the acknowledged direct writes at their seqs.
        let d1 = read_all(&srv, "d1").await;
        assert!(d1.windows(2).all(|w| w[0].seq < w[1].seq), "{what}");
        let d1_copies: Vec<&str> = d1
            .iter()
            .filter(|r| !r.direct)
            .map(|r| r.id.as_str())
            .collect();
        assert!(
            d1_copies == forwarded_ids,
            "{what}: d1 holds {} copies of {} source records",
            d1_copies.len(),
            forwarded_ids.len()
        );
        assert!(
            d1.iter()
                .filter(|r| !r.direct)
                .all(|r| r.meta.get("_topics_router").is_none())
        );
        let direct = &mut oracles[WRITERS];
        let stored: HashMap<&str, u64> = d1
            .iter()
            .filter(|r| r.direct)
            .map(|r| (r.id.as_str(), r.seq))
            .collect();
        assert_eq!(
            stored.len(),
            d1.iter().filter(|r| r.direct).count(),
            "{what}: a direct write twice"
        );
        for (seq, id) in &direct.acked {
            assert_eq!(
                stored.get(id.as_str()),
                Some(seq),
                "{what}: direct write {id}"
            );
        }
        // The batch in flight at the kill: whole or not at all, and then acknowledged.
        let flown: Vec<u64> = direct
            .in_flight
            .iter()
            .filter_map(|id| stored.get(id.as_str()).copied())
            .collect();
        assert!(
            flown.is_empty() || flown.len() == direct.in_flight.len(),
            "{what}"
        );
        let in_flight = std::mem::take(&mut direct.in_flight);
        direct.acked.extend(flown.into_iter().zip(in_flight));
        assert_eq!(
            stored.len(),
            direct.acked.len(),
            "{what}: direct writes nobody made"
        );
        for o in oracles.iter_mut() {
            // The batch in flight may be stored: its ids are not used again.
            o.next += 1;
            o.in_flight.clear();
        }
        assert!(
            forwarded_ids.len() > copies_seen,
            "{what}: the writers made progress"
        );
        copies_seen = forwarded_ids.len();
        server = Some(srv);
    }
    drop(server);
}

/// The data and `$ts` of every live record of `topic`, and the diff's tombstone.
async fn copies(srv: &Server, topic: &str) -> (Vec<(Value, Value)>, Value) {
    let body = json!({ "from_seq": 0, "limit": 1000 });
    let (s, v) = call(srv, Method::POST, &format!("/v0/topics/{topic}/diff"), body).await;
    assert_eq!(s, 200, "{topic}: {v}");
    let records = v["records"].as_array().expect("records");
    let out = records
        .iter()
        .map(|r| (r["data"].clone(), r["$ts"].clone()))
        .collect();
    (out, v["tombstone"].clone())
}

/// Copies whose source records are gone (a `cap_records: 1` source evicted them; a plain
/// source deleted them) survive a kill -9 exactly as they were read: same data, same `$ts`,
/// no gap (the reference re-derives copies from the source and would lose them).
#[tokio::test]
async fn copies_outlive_their_evicted_or_deleted_source_records_across_kill_dash_nine() {
    let tmp = TempDir::new("topics-routers-shed");
    let data = tmp.path().join("data");
    let srv = start(&data).await;
    for (t, body) in [
        ("capped", json!({ "cap_records": 1 })),
        ("plain", json!({})),
        ("dc", json!({ "durable": true })),
        ("dp", json!({ "durability": "memory" })),
    ] {
        let (s, v) = call(&srv, Method::PUT, &format!("/v0/topics/{t}"), body).await;
        assert_eq!(s, 201, "{t}: {v}");
    }
    for (r, source, dest) in [("rc", "capped", "dc"), ("rp", "plain", "dp")] {
        let body = json!({ "source": source, "dest": dest });
        let (s, v) = call(&srv, Method::PUT, &format!("/v0/routers/{r}"), body).await;
        assert_eq!(s, 201, "{r}: {v}");
    }
    for (i, x) in ["a", "b", "c"].iter().enumerate() {
        for source in ["capped", "plain"] {
            post(&srv.client, &srv.base, source, &[json!(x)])
                .await
                .expect("write");
        }
        // Each is copied before the next write evicts it from the capped source.
        let deadline = Instant::now() + SETTLE;
        while head(&srv, "dc").await < i as u64 + 1 || head(&srv, "dp").await < i as u64 + 1 {
            assert!(Instant::now() < deadline, "copy {x} did not arrive");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    let body = json!({ "before_seq": 4 });
    let (s, v) = call(&srv, Method::POST, "/v0/topics/plain/delete", body).await;
    assert_eq!(s, 200, "{v}");
    let before = [copies(&srv, "dc").await, copies(&srv, "dp").await];
    for (list, tombstone) in &before {
        assert_eq!(list.len(), 3, "{list:?}");
        assert!(tombstone.is_null(), "{tombstone}");
    }
    drop(srv); // SIGKILL
    let srv = start(&data).await;
    let after = [copies(&srv, "dc").await, copies(&srv, "dp").await];
    assert_eq!(after, before, "the copies as they were read, no gap");
}
