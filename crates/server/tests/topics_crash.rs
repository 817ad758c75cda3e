//! Kill -9 harness for topics: concurrent writers (several per topic) post batches with
//! idempotency keys to `fsync` and `disk` topics; the server is killed with SIGKILL at random
//! moments and restarted on the same directory.
//!
//! After every restart: every acknowledged record is present exactly once, byte-exact, at the
//! seq it was acknowledged with, in each writer's order; nothing unacknowledged is there except
//! the batch that was in flight; and retrying that batch with its idempotency key is answered
//! `deduped: true` with its original seqs if it had committed, and written once if it had not.
//!
//! `RIFFLE_CRASH_ROUNDS` sets the number of kills (default 3).

mod common;

use common::{Options, Server, TempDir};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// `(topic, class, writers)`.
const TOPICS: [(&str, &str, usize); 3] = [
    ("ledger-a", "fsync", 3),
    ("ledger-b", "fsync", 2),
    ("feed", "disk", 2),
];

async fn start(data: &Path) -> Server {
    Server::start_with(
        Options::default()
            .env("DS_STORAGE__MODE", "file-durable")
            .env("DS_STORAGE__DATA_DIR", data.to_str().expect("utf-8 path")),
    )
    .await
}

/// One writer's batches: the acknowledged ones with their seqs, and the one in flight.
#[derive(Clone, Default)]
struct Oracle {
    /// `(first_seq, records' data)` per acknowledged batch.
    acked: Vec<(u64, Vec<String>)>,
    next: u64,
    in_flight: Option<Vec<String>>,
}

fn batch(writer: &str, n: u64) -> Vec<String> {
    let size = 1 + (n % 4) as usize;
    (0..size)
        .map(|i| {
            // Varying lengths and characters that JSON must carry byte-exact.
            let pad = "é\"\\".repeat(((n as usize) * 3 + i) % 40);
            json!({ "w": writer, "n": n, "i": i, "pad": pad }).to_string()
        })
        .collect()
}

fn body(writer: &str, n: u64, records: &[String]) -> String {
    let recs: Vec<String> = records
        .iter()
        .map(|d| format!("{{\"data\":{d}}}"))
        .collect();
    format!(
        "{{\"records\":[{}],\"idempotency_key\":\"{writer}-{n}\",\"node\":\"{writer}\"}}",
        recs.join(",")
    )
}

async fn post(
    client: &reqwest::Client,
    base: &str,
    topic: &str,
    body: String,
) -> Result<Value, String> {
    let r = client
        .post(format!("{base}/v0/topics/{topic}"))
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .map_err(|e| e.to_string())?;
    let status = r.status().as_u16();
    let text = r.text().await.map_err(|e| e.to_string())?;
    let v: Value = serde_json::from_str(&text).map_err(|e| e.to_string())?;
    if status != 200 {
        panic!("write to {topic} answered {status}: {v}");
    }
    Ok(v)
}

async fn writer(
    base: String,
    topic: &'static str,
    name: String,
    mut o: Oracle,
    stop: Arc<AtomicBool>,
) -> Oracle {
    let client = reqwest::Client::new();
    while !stop.load(Ordering::Relaxed) {
        let records = batch(&name, o.next);
        o.in_flight = Some(records.clone());
        match post(&client, &base, topic, body(&name, o.next, &records)).await {
            Ok(v) => {
                assert_eq!(v["deduped"], false);
                let first = v["first_seq"].as_u64().expect("first_seq");
                assert_eq!(
                    v["last_seq"].as_u64(),
                    Some(first + records.len() as u64 - 1)
                );
                o.acked.push((first, records));
                o.next += 1;
                o.in_flight = None;
            }
            Err(_) => return o, // the server died under us
        }
    }
    o
}

/// Every record of a topic: seq → (node, data text).
async fn read_all(srv: &Server, topic: &str) -> HashMap<u64, (String, String)> {
    let mut out = HashMap::new();
    let mut from = 0;
    loop {
        let r = srv
            .client
            .post(srv.url(&format!("/v0/topics/{topic}/diff")))
            .header("content-type", "application/json")
            .body(json!({ "from_seq": from, "limit": 1000 }).to_string())
            .send()
            .await
            .expect("diff");
        assert_eq!(r.status(), 200);
        let v: Value =
            serde_json::from_str(&r.text().await.expect("diff body")).expect("diff JSON");
        assert!(
            v["tombstone"].is_null(),
            "{topic}: nothing was evicted: {v}"
        );
        for rec in v["records"].as_array().expect("records") {
            let seq = rec["$seq"].as_u64().expect("$seq");
            let node = rec["$node"].as_str().unwrap_or_default().to_string();
            assert!(
                out.insert(seq, (node, rec["data"].to_string())).is_none(),
                "{topic}: seq {seq} twice"
            );
        }
        from = v["next_from_seq"].as_u64().expect("next_from_seq");
        if v["caught_up"] == true {
            return out;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill_dash_nine_loses_no_acknowledged_topic_write() {
    let rounds: usize = std::env::var("RIFFLE_CRASH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3);
    let tmp = TempDir::new("topics-crash");
    let data = tmp.path().join("data");
    let writers: Vec<(&'static str, String)> = TOPICS
        .iter()
        .flat_map(|(t, _, n)| (0..*n).map(move |k| (*t, format!("{t}-w{k}"))))
        .collect();
    let mut oracles = vec![Oracle::default(); writers.len()];
    let server = start(&data).await;
    for (t, class, _) in TOPICS {
        let r = server
            .client
            .put(server.url(&format!("/v0/topics/{t}")))
            .header("content-type", "application/json")
            .body(json!({ "durability": class }).to_string())
            .send()
            .await
            .expect("create");
        assert_eq!(r.status(), 201);
    }
    let mut server = Some(server);
    let mut seed = 0x2545_f491_4f6c_dd1d_u64;
    for round in 0..rounds {
        let srv = server.take().expect("a running server");
        let stop = Arc::new(AtomicBool::new(false));
        let tasks: Vec<_> = writers
            .iter()
            .zip(&oracles)
            .map(|((t, name), o)| {
                tokio::spawn(writer(
                    srv.base.clone(),
                    t,
                    name.clone(),
                    o.clone(),
                    stop.clone(),
                ))
            })
            .collect();
        oracles = common::kill_mid_write(srv, &mut seed, &stop, tasks).await;

        let srv = start(&data).await;
        for (topic, _, _) in TOPICS {
            let mut stored = read_all(&srv, topic).await;
            for ((t, name), o) in writers.iter().zip(oracles.iter_mut()) {
                if *t != topic {
                    continue;
                }
                let what = format!("round {round}, writer {name}");
                for (first, records) in &o.acked {
                    for (i, d) in records.iter().enumerate() {
                        let seq = first + i as u64;
                        let got = stored
                            .remove(&seq)
                            .unwrap_or_else(|| panic!("{what}: acknowledged seq {seq} is missing"));
                        assert_eq!(&got.0, name, "{what}: seq {seq} belongs to another writer");
                        let want: Value = serde_json::from_str(d).expect("json");
                        let got_v: Value = serde_json::from_str(&got.1).expect("json");
                        assert_eq!(got_v, want, "{what}: seq {seq} differs");
                    }
                }
                if let Some(records) = o.in_flight.take() {
                    // Was it stored? Then exactly at the seqs the retry reports.
                    let v = post(&srv.client, &srv.base, topic, body(name, o.next, &records))
                        .await
                        .expect("retry");
                    let first = v["first_seq"].as_u64().expect("first_seq");
                    let deduped = v["deduped"] == true;
                    for (i, d) in records.iter().enumerate() {
                        let seq = first + i as u64;
                        let was = stored.remove(&seq);
                        assert_eq!(
                            was.is_some(),
                            deduped,
                            "{what}: in-flight seq {seq} stored: {}, deduped: {deduped}",
                            was.is_some()
                        );
                        if let Some((node, text)) = was {
                            assert_eq!(&node, name);
                            let a: Value = serde_json::from_str(&text).expect("json");
                            let b: Value = serde_json::from_str(d).expect("json");
                            assert_eq!(a, b, "{what}: in-flight seq {seq}");
                        }
                    }
                    o.acked.push((first, records));
                    o.next += 1;
                }
            }
            assert!(
                stored.is_empty(),
                "round {round}, {topic}: records nobody acknowledged: {:?}",
                stored.keys().collect::<Vec<_>>()
            );
        }
        server = Some(srv);
    }
    let total: usize = oracles.iter().map(|o| o.acked.len()).sum();
    assert!(
        total > writers.len() * rounds,
        "the writers made progress ({total} batches)"
    );
    drop(server);
}

async fn call(srv: &Server, method: reqwest::Method, path: &str, body: Value) -> (u16, Value) {
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

/// What a topic of each class keeps across a clean restart and across kill -9: records,
/// deletes, floors and tombstones, its configuration, and its idempotency keys.
#[tokio::test]
async fn restart_keeps_what_each_class_promises() {
    use reqwest::Method;
    let tmp = TempDir::new("topics-restart");
    let data = tmp.path().join("data");
    for kill in [false, true] {
        let srv = start(&data).await;
        for class in ["ephemeral", "memory", "disk", "fsync"] {
            let t = format!("r-{class}-{kill}");
            let cfg = json!({ "durability": class, "cap_records": 4, "ttl_ms": 0 });
            assert_eq!(
                call(&srv, Method::PUT, &format!("/v0/topics/{t}"), cfg)
                    .await
                    .0,
                201
            );
            let recs: Vec<Value> = (0..6)
                .map(|i| json!({ "data": { "i": i }, "tag": format!("k{i}") }))
                .collect();
            let (s, v) = call(
                &srv,
                Method::POST,
                &format!("/v0/topics/{t}"),
                json!({ "records": recs, "idempotency_key": "once" }),
            )
            .await;
            assert_eq!((s, v["last_seq"].as_u64()), (200, Some(6)), "{v}");
            let (s, _) = call(
                &srv,
                Method::POST,
                &format!("/v0/topics/{t}/delete"),
                json!({ "match": ["tag", "Eq", "k4"] }),
            )
            .await;
            assert_eq!(s, 200);
        }
        if kill {
            drop(srv);
        } else {
            srv.stop_gracefully();
        }
        let srv = start(&data).await;
        for class in ["ephemeral", "memory", "disk", "fsync"] {
            let t = format!("r-{class}-{kill}");
            let what = format!("{class}, kill: {kill}");
            let (s, info) = call(&srv, Method::GET, &format!("/v0/topics/{t}"), Value::Null).await;
            assert_eq!(s, 200, "{what}: the topic survives");
            assert_eq!(info["config"]["durability"], class, "{what}");
            assert_eq!(info["config"]["cap_records"], 4, "{what}");
            let head = info["head_seq"].as_u64().unwrap_or(0);
            if class == "ephemeral" && kill {
                // Its seqs are reserved in blocks: a crash moves the head past the last write.
                assert!((6..=6 + 4096 + 6).contains(&head), "{what}: head {head}");
            } else {
                assert_eq!(head, 6, "{what}: seqs are not handed out again");
            }
            let (_, d) = call(
                &srv,
                Method::POST,
                &format!("/v0/topics/{t}/diff"),
                json!({ "from_seq": 0 }),
            )
            .await;
            let tomb = &d["tombstone"];
            if class == "ephemeral" {
                assert_eq!(
                    d["records"].as_array().map(Vec::len),
                    Some(0),
                    "{what}: {d}"
                );
                assert_eq!(tomb["gap_from"], 1, "{what}: the loss is not silent: {d}");
            } else {
                // Cap 4 evicted seqs 1 and 2 (a tombstone); the tag delete of seq 5 is silent.
                let seqs: Vec<u64> = d["records"]
                    .as_array()
                    .expect("records")
                    .iter()
                    .map(|r| r["$seq"].as_u64().unwrap_or(0))
                    .collect();
                assert_eq!(seqs, vec![3, 4, 6], "{what}: {d}");
                assert_eq!(
                    (
                        tomb["gap_from"].as_u64(),
                        tomb["gap_to"].as_u64(),
                        tomb["reason"].as_str()
                    ),
                    (Some(1), Some(2), Some("cap")),
                    "{what}: {d}"
                );
            }
            // The key is in the write's WAL record (memory, disk, fsync); an `ephemeral`
            // topic's only in checkpoints: kept by a graceful restart, not by kill -9 (the
            // retry is then a new write), as the README says.
            let kept = class != "ephemeral" || !kill;
            let recs: Vec<Value> = (0..6).map(|i| json!({ "data": { "i": i } })).collect();
            let (_, v) = call(
                &srv,
                Method::POST,
                &format!("/v0/topics/{t}"),
                json!({ "records": recs, "idempotency_key": "once" }),
            )
            .await;
            assert_eq!(v["deduped"].as_bool(), Some(kept), "{what}: {v}");
            if kept {
                assert_eq!(v["first_seq"].as_u64(), Some(1), "{what}: {v}");
            }
        }
        srv.stop_gracefully();
    }
}

/// A class change across `ephemeral`, then kill -9. Out of `ephemeral` into a WAL class, the
/// records written meanwhile (never logged) are as durable as the new class once the change is
/// acknowledged, deletes included, and deletes by tag still find them after the restart; into
/// `ephemeral`, every record is gone after the restart (with a tombstone), seqs are not
/// handed out again.
#[tokio::test]
async fn a_class_change_across_ephemeral_survives_kill_dash_nine() {
    use reqwest::Method;
    let tmp = TempDir::new("topics-class-change");
    let data = tmp.path().join("data");
    let srv = start(&data).await;
    let put = |t: &'static str, class: &'static str| {
        let srv = &srv;
        async move {
            let body = json!({ "durability": class });
            call(srv, Method::PUT, &format!("/v0/topics/{t}"), body).await
        }
    };
    let write = |t: &'static str, from: usize, n: usize| {
        let srv = &srv;
        async move {
            let recs: Vec<Value> = (from..from + n)
                .map(|i| json!({ "data": { "i": i }, "tag": format!("k{i}") }))
                .collect();
            let (s, v) = call(
                srv,
                Method::POST,
                &format!("/v0/topics/{t}"),
                json!({ "records": recs }),
            )
            .await;
            assert_eq!(s, 200, "{v}");
        }
    };
    assert_eq!(put("up", "ephemeral").await.0, 201);
    write("up", 1, 3).await;
    let del = json!({ "match": ["tag", "Eq", "k2"] });
    let (s, _) = call(&srv, Method::POST, "/v0/topics/up/delete", del).await;
    assert_eq!(s, 200);
    assert_eq!(put("up", "disk").await.0, 200);
    write("up", 4, 2).await;

    assert_eq!(put("down", "fsync").await.0, 201);
    write("down", 1, 3).await;
    assert_eq!(put("down", "ephemeral").await.0, 200);
    write("down", 4, 1).await;
    drop(srv);

    let srv = start(&data).await;
    let (_, d) = call(
        &srv,
        Method::POST,
        "/v0/topics/up/diff",
        json!({ "from_seq": 0 }),
    )
    .await;
    let got: Vec<(u64, u64)> = d["records"]
        .as_array()
        .expect("records")
        .iter()
        .map(|r| {
            (
                r["$seq"].as_u64().unwrap_or(0),
                r["data"]["i"].as_u64().unwrap_or(0),
            )
        })
        .collect();
    assert_eq!(got, vec![(1, 1), (3, 3), (4, 4), (5, 5)], "{d}");
    let del = json!({ "match": ["tag", "Eq", "k3"] });
    let (s, v) = call(&srv, Method::POST, "/v0/topics/up/delete", del).await;
    assert_eq!((s, v["deleted"].as_u64()), (200, Some(1)), "{v}");

    let (_, info) = call(&srv, Method::GET, "/v0/topics/down", Value::Null).await;
    assert_eq!(info["config"]["durability"], "ephemeral", "{info}");
    let head = info["head_seq"].as_u64().unwrap_or(0);
    assert!(
        (4..=4 + 4096 + 1).contains(&head),
        "seqs up to 4 were handed out: {info}"
    );
    let (_, d) = call(
        &srv,
        Method::POST,
        "/v0/topics/down/diff",
        json!({ "from_seq": 0 }),
    )
    .await;
    assert_eq!(d["records"].as_array().map(Vec::len), Some(0), "{d}");
    assert_eq!(d["tombstone"]["gap_from"], 1, "{d}");
    srv.stop_gracefully();
}
