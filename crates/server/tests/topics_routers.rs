//! The topics `/v0` routers, black-box: `PUT/GET/DELETE /v0/routers/:r`, the listing, cycle and
//! fan-in rules, and forwarding itself (order, metadata, filters, node loop prevention, fan-out,
//! latency, a stalled `discard:"reject"` dest, the README's pub/sub recipe). Built from
//! `topics-v0-api.md` and `topics-README.md` only, never from the implementation.
//!
//! Where the reference is silent these tests hold Riffle's decisions: a router starts at the
//! source's head when it is created; `created` is false (200) on any PUT of an existing router;
//! a listing's bad cursor is 400; a failed PUT creates nothing (neither router nor dest).

mod common;
#[macro_use]
mod topics_common;

use common::Server;
use reqwest::Method;
use serde_json::{Value, json};
use std::time::{Duration, Instant};
use topics_common::sse::{PROMPT, open};
use topics_common::*;

/// Upper bound for asynchronous forwarding that should happen promptly (50 ms ticks).
const SETTLE: Duration = Duration::from_secs(5);

// ---- helpers ------------------------------------------------------------------------------

/// `/v0/routers/:name` (a `>` in the name is percent-encoded by the client).
fn rp(name: &str) -> String {
    format!("/v0/routers/{name}")
}

/// `PUT /v0/routers/:name` with a JSON body.
async fn put_router(s: &Server, name: &str, body: Value) -> Resp {
    let body = body.to_string();
    raw(s, Method::PUT, &rp(name), Some(JSON), body.as_bytes()).await
}

/// A new router `source -> dest` with every default: asserts 201 and returns the echo.
async fn route(s: &Server, name: &str, source: &str, dest: &str) -> Value {
    let body = json!({ "source": source, "dest": dest });
    put_router(s, name, body).await.ok(201)
}

/// `GET /v0/routers/:name`, asserting 200.
async fn get_router(s: &Server, name: &str) -> Value {
    get(s, &rp(name)).await.ok(200)
}

/// The full definition of a router with every documented default, except `changes`.
fn definition(name: &str, source: &str, dest: &str, changes: Value) -> Value {
    let mut d = json!({
        "router": name, "source": source, "dest": dest, "preserve_node": true,
        "preserve_tag": true, "create_dest": true, "filter": null, "allow_cycle": false,
        "guarantee": "at_least_once",
    });
    for (k, v) in changes.as_object().expect("changes object") {
        d[k] = v.clone();
    }
    d
}

/// One record per value in `data`, written to `topic` in one batch.
async fn send<D: Into<Value>>(s: &Server, topic: &str, data: impl IntoIterator<Item = D>) {
    let data = data.into_iter().map(Into::into);
    let records: Vec<Value> = data.map(|d: Value| json!({ "data": d })).collect();
    write(s, topic, json!({ "records": records })).await;
}

async fn head(s: &Server, topic: &str) -> u64 {
    let v = state(s, topic).await;
    v["head_seq"].as_u64().expect("head_seq")
}

/// Wait until `GET /v0/routers/:name` reports `forwarded_total == n`.
async fn wait_forwarded(s: &Server, name: &str, n: u64) {
    let what = format!("{name}: forwarded_total {n}");
    eventually(&what, SETTLE, async || {
        let v = get_router(s, name).await;
        let total = v["forwarded_total"].as_u64();
        total.unwrap_or_else(|| panic!("forwarded_total is a number: {v}")) == n
    })
    .await;
}

/// Poll `ok` every 20 ms until it holds; fails after `timeout`.
async fn eventually(what: &str, timeout: Duration, mut ok: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !ok().await {
        assert!(Instant::now() < deadline, "{what}: not within {timeout:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// At least `n` records of `topic` after `from` (tags included), read with long-polls; fails
/// if they do not all arrive within `within`. A tombstone there is a failure too.
async fn collect_in(s: &Server, topic: &str, from: u64, n: usize, within: Duration) -> Vec<Value> {
    let deadline = Instant::now() + within;
    let (mut got, mut from) = (Vec::new(), from);
    while got.len() < n {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(!left.is_zero(), "{topic}: not {n} in {within:?}: {got:?}");
        let wait = left.as_millis().min(500) as u64;
        let body = json!({ "from_seq": from, "include_tags": true, "wait_ms": wait });
        let v = diff(s, topic, body).await;
        assert_eq!(v["tombstone"], Value::Null, "{topic}: {v}");
        got.extend_from_slice(records(&v));
        from = v["next_from_seq"].as_u64().expect("next_from_seq");
    }
    got
}

/// [`collect_in`] from the start of `topic`, within [`SETTLE`].
async fn collect(s: &Server, topic: &str, n: usize) -> Vec<Value> {
    collect_in(s, topic, 0, n, SETTLE).await
}

/// A response's `records[]`.
fn records(v: &Value) -> &[Value] {
    v["records"].as_array().expect("records[]")
}

/// The `data` of each record.
fn datas(records: &[Value]) -> Vec<Value> {
    records.iter().map(|r| r["data"].clone()).collect()
}

/// A record without its server-assigned `$seq` and `$ts`.
fn content(r: &Value) -> Value {
    let mut r = r.clone();
    let o = r.as_object_mut().expect("a record object");
    o.remove("$seq");
    o.remove("$ts");
    r
}

fn names(v: &Value) -> Vec<String> {
    let routers = v["routers"].as_array().expect("routers[]");
    let name = |r: &Value| r["router"].as_str().expect("router").to_string();
    let mut names: Vec<String> = routers.iter().map(name).collect();
    names.sort();
    names
}

// ---- PUT / GET / DELETE -------------------------------------------------------------------

#[tokio::test]
async fn put_router_echoes_every_default_then_200_on_repeat_or_update() {
    let s = start().await;
    put_ok(&s, "src", json!({}), 201).await;
    let def = |changes| definition("r", "src", "dst", changes);
    let body = json!({ "source": "src", "dest": "dst" });
    let v = put_router(&s, "r", body.clone()).await.ok(201);
    assert_has(&v, def(json!({ "created": true })));
    let g = get_router(&s, "r").await;
    assert_has(&g, def(json!({ "forwarded_total": 0 })));

    // The identical PUT, with or without the defaults spelled out: 200, created:false.
    let v = put_router(&s, "r", body).await.ok(200);
    assert_has(&v, def(json!({ "created": false })));
    let v = put_router(&s, "r", def(json!({}))).await.ok(200);
    assert_eq!(v["created"], false);

    // An update: 200, created:false, and GET reports it.
    let changes = json!({ "preserve_tag": false, "filter": ["tag", "Eq", "x"] });
    let mut body = changes.clone();
    body["source"] = json!("src");
    body["dest"] = json!("dst");
    let v = put_router(&s, "r", body).await.ok(200);
    let mut want = changes.clone();
    want["created"] = json!(false);
    assert_has(&v, def(want));
    assert_has(&get_router(&s, "r").await, def(changes));

    // exactly_once is the other guarantee.
    let body = json!({ "source": "src", "dest": "dst2", "guarantee": "exactly_once" });
    let v = put_router(&s, "r2", body).await.ok(201);
    let want = json!({ "guarantee": "exactly_once", "created": true });
    assert_has(&v, definition("r2", "src", "dst2", want));
}

#[tokio::test]
async fn put_router_validation_is_400_and_creates_nothing() {
    let s = start().await;
    put_ok(&s, "src", json!({}), 201).await;
    let bad_bodies = [
        json!({}),
        json!({ "source": "src" }),
        json!({ "dest": "d" }),
        json!({ "source": "src", "dest": "src" }),
        json!({ "source": "src", "dest": "d", "guarantee": "best_effort" }),
        json!({ "source": "src", "dest": "d", "guarantee": 1 }),
        json!({ "source": "src", "dest": "d", "filter": ["tag", "Regex", "x"] }),
        json!({ "source": "src", "dest": "-bad" }),
    ];
    for body in bad_bodies {
        let r = put_router(&s, "r", body.clone()).await;
        assert_eq!(r.status, 400, "{body}: {}", r.text);
        r.err(400, "invalid_request");
    }
    let body = br#"{"source":"src","dest":"#;
    let r = raw(&s, Method::PUT, &rp("r"), Some(JSON), body).await;
    r.err(400, "invalid_request");
    let body = br#"{"source":"src","dest":"d"}"#;
    let r = raw(&s, Method::PUT, &rp("r"), Some("text/plain"), body).await;
    r.err(415, "unsupported_media_type");

    // Router names: the topic name pattern, plus `>`.
    let too_long = "r".repeat(256);
    for bad in ["-bad", "_x", ".x", ">x", too_long.as_str()] {
        let r = put_router(&s, bad, json!({ "source": "src", "dest": "d" })).await;
        r.err(400, "invalid_request");
    }
    get(&s, &rp("r")).await.err(404, "router_not_found");
    get(&s, &t("d")).await.err(404, "topic_not_found");
    let list = get(&s, "/v0/routers").await.ok(200);
    assert_eq!(list["routers"], json!([]), "{list}");

    let longest = "r".repeat(255);
    let good = ["a>b", "src>d:web", "R.1_x-y:z", &longest];
    for (i, ok) in good.into_iter().enumerate() {
        let dest = format!("d{i}");
        let v = route(&s, ok, "src", &dest).await;
        has!(v, { "router": ok, "dest": dest });
        assert_eq!(get_router(&s, ok).await["router"], ok);
    }
}

#[tokio::test]
async fn a_missing_source_or_dest_is_404_and_create_dest_creates_the_dest() {
    let s = start().await;
    let r = put_router(&s, "r", json!({ "source": "nope", "dest": "d" })).await;
    r.err(404, "topic_not_found");
    get(&s, &t("d")).await.err(404, "topic_not_found");

    put_ok(&s, "src", json!({}), 201).await;
    let body = json!({ "source": "src", "dest": "d", "create_dest": false });
    put_router(&s, "r", body).await.err(404, "topic_not_found");
    get(&s, &t("d")).await.err(404, "topic_not_found");
    get(&s, &rp("r")).await.err(404, "router_not_found");

    // The default create_dest:true creates it, with the default config.
    route(&s, "r", "src", "d").await;
    let d = state(&s, "d").await;
    has!(d, { "topic": "d", "type": "log", "head_seq": 0 });

    // An existing dest with create_dest:false is fine.
    put_ok(&s, "d2", json!({}), 201).await;
    let body = json!({ "source": "src", "dest": "d2", "create_dest": false });
    let v = put_router(&s, "r2", body).await.ok(201);
    has!(v, { "create_dest": false, "created": true });
}

#[tokio::test]
async fn cycles_are_409_router_cycle_with_the_loop() {
    let s = start().await;
    for topic in ["a", "b", "c"] {
        put_ok(&s, topic, json!({}), 201).await;
    }
    route(&s, "ab", "a", "b").await;
    let r = put_router(&s, "ba", json!({ "source": "b", "dest": "a" })).await;
    let v = r.err(409, "router_cycle");
    let cycle = v["error"]["detail"]["cycle"].as_array();
    let cycle = cycle.unwrap_or_else(|| panic!("detail.cycle is an array: {v}"));
    for name in ["a", "b"] {
        assert!(cycle.contains(&json!(name)), "cycle {cycle:?} lacks {name}");
    }
    get(&s, &rp("ba")).await.err(404, "router_not_found");

    // A longer loop: a -> b -> c -> a.
    route(&s, "bc", "b", "c").await;
    let r = put_router(&s, "ca", json!({ "source": "c", "dest": "a" })).await;
    let v = r.err(409, "router_cycle");
    let cycle = v["error"]["detail"]["cycle"].as_array().expect("cycle[]");
    for name in ["a", "b", "c"] {
        assert!(cycle.contains(&json!(name)), "cycle {cycle:?} lacks {name}");
    }
}

#[tokio::test]
async fn allow_cycle_is_accepted_and_the_hop_cap_stops_the_loop() {
    let s = start().await;
    put_ok(&s, "a", json!({}), 201).await;
    route(&s, "ab", "a", "b").await;
    let body = json!({ "source": "b", "dest": "a", "allow_cycle": true });
    let v = put_router(&s, "ba", body).await.ok(201);
    has!(v, { "allow_cycle": true, "created": true });

    let started = Instant::now();
    send(&s, "a", ["ping"]).await;
    eventually("b gets a copy", SETTLE, async || head(&s, "b").await >= 1).await;
    tokio::time::sleep_until((started + Duration::from_secs(2)).into()).await;
    let heads = async || (head(&s, "a").await, head(&s, "b").await);
    let mut last = heads().await;
    loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let now = heads().await;
        if now == last {
            break;
        }
        let growing = started.elapsed() < Duration::from_secs(15);
        assert!(growing, "heads (a, b) still growing: {last:?} -> {now:?}");
        last = now;
    }
    // One original write, hop cap 8: at most 9 records each.
    let (a, b) = last;
    assert!(a < 20 && b < 20, "heads (a, b) = {last:?}");
    let copies = diff(&s, "b", json!({ "limit": 1000 })).await;
    let data = datas(records(&copies));
    assert!(data.iter().all(|d| d == "ping"), "{data:?}");
}

#[tokio::test]
async fn fan_in_is_409_topic_exists_incompatible() {
    let s = start().await;
    put_ok(&s, "s1", json!({}), 201).await;
    put_ok(&s, "s2", json!({}), 201).await;
    route(&s, "r1", "s1", "d").await;
    let r = put_router(&s, "r2", json!({ "source": "s2", "dest": "d" })).await;
    let v = r.err(409, "topic_exists_incompatible");
    assert_eq!(v["error"]["detail"]["reason"], "router_dest_fan_in", "{v}");
    get(&s, &rp("r2")).await.err(404, "router_not_found");

    // Re-putting the feeding router itself is no fan-in.
    let v = put_router(&s, "r1", json!({ "source": "s1", "dest": "d" })).await;
    assert_eq!(v.ok(200)["created"], false);
    // Once it is gone, another source may feed d.
    delete(&s, &rp("r1")).await.ok(200);
    route(&s, "r2", "s2", "d").await;
}

#[tokio::test]
async fn get_and_delete_a_router_and_forwarding_stops() {
    let s = start().await;
    get(&s, &rp("nope")).await.err(404, "router_not_found");
    let v = delete(&s, &rp("nope")).await.ok(200);
    has!(v, { "router": "nope", "deleted": false });

    put_ok(&s, "src", json!({}), 201).await;
    route(&s, "r", "src", "dst").await;
    send(&s, "src", [1]).await;
    assert_eq!(datas(&collect(&s, "dst", 1).await), [1]);
    wait_forwarded(&s, "r", 1).await;
    let want = definition("r", "src", "dst", json!({}));
    assert_has(&get_router(&s, "r").await, want);

    let v = delete(&s, &rp("r")).await.ok(200);
    has!(v, { "router": "r", "deleted": true });
    let v = delete(&s, &rp("r")).await.ok(200);
    has!(v, { "router": "r", "deleted": false });
    get(&s, &rp("r")).await.err(404, "router_not_found");
    // The dest topic stays.
    assert_eq!(head(&s, "dst").await, 1);

    send(&s, "src", [2, 3]).await;
    let v = diff(&s, "dst", json!({ "from_seq": 1, "wait_ms": 1500 })).await;
    assert!(seqs(&v).is_empty(), "forwarded after the delete: {v}");
    assert_eq!(head(&s, "dst").await, 1);
}

#[tokio::test]
async fn list_routers_filters_and_pages() {
    let s = start().await;
    let v = get(&s, "/v0/routers").await.ok(200);
    assert_eq!(v["routers"], json!([]), "{v}");
    put_ok(&s, "x", json!({}), 201).await;
    put_ok(&s, "y", json!({}), 201).await;
    for (name, source, dest) in [
        ("ls-2", "x", "d2"),
        ("ls-1", "x", "d1"),
        ("other", "y", "d4"),
        ("ls-3", "y", "d3"),
    ] {
        route(&s, name, source, dest).await;
    }

    let v = get(&s, "/v0/routers").await.ok(200);
    assert_eq!(names(&v), ["ls-1", "ls-2", "ls-3", "other"]);
    assert!(v.get("next_cursor").is_none(), "one page only: {v}");
    let item = v["routers"].as_array().unwrap().iter();
    let ls1 = item.clone().find(|r| r["router"] == "ls-1").unwrap();
    has!(ls1, { "router": "ls-1", "source": "x", "dest": "d1", "guarantee": "at_least_once",
                "forwarded_total": 0 });
    for r in item {
        assert!(r["forwarded_total"].is_u64(), "{r}");
    }

    for (query, want) in [
        ("prefix=ls-", &["ls-1", "ls-2", "ls-3"][..]),
        ("source=x", &["ls-1", "ls-2"][..]),
        ("dest=d3", &["ls-3"][..]),
        ("prefix=ls-&source=y", &["ls-3"][..]),
        ("source=nope", &[][..]),
    ] {
        let v = get(&s, &format!("/v0/routers?{query}")).await.ok(200);
        assert_eq!(names(&v), want, "{query}: {v}");
    }

    // Pages of one: next_cursor only while there are more.
    let (mut seen, mut cursor) = (Vec::new(), None::<String>);
    for page in 0..3 {
        let mut path = "/v0/routers?prefix=ls-&page_size=1".to_string();
        if let Some(c) = &cursor {
            let c: String = form_urlencoded::byte_serialize(c.as_bytes()).collect();
            path.push_str(&format!("&cursor={c}"));
        }
        let v = get(&s, &path).await.ok(200);
        assert_eq!(v["routers"].as_array().unwrap().len(), 1, "{v}");
        seen.extend(names(&v));
        let next = v.get("next_cursor").map(|c| c.as_str().expect("a string"));
        cursor = next.map(str::to_string);
        assert_eq!(cursor.is_some(), page < 2, "page {page}: {v}");
    }
    seen.sort();
    assert_eq!(seen, ["ls-1", "ls-2", "ls-3"]);

    let r = get(&s, "/v0/routers?cursor=not-a-cursor%21").await;
    r.err(400, "invalid_request");
}

// ---- forwarding ---------------------------------------------------------------------------

#[tokio::test]
async fn records_are_forwarded_in_order_with_data_tag_node_and_meta() {
    let s = start().await;
    put_ok(&s, "src", json!({}), 201).await;
    route(&s, "r", "src", "dst").await;
    let first = json!({ "node": "n1", "records": [
        { "data": { "a": 1 }, "tag": "t1", "meta": { "k": "v" } },
        { "data": null, "node": "n2" },
        { "data": "s" },
    ] });
    write(&s, "src", first).await;
    let second = json!({ "records": [
        { "data": [1, 2], "tag": "t4", "meta": { "m": 1 } }, { "data": true },
    ] });
    write(&s, "src", second).await;

    let copies = collect(&s, "dst", 5).await;
    let source = diff(&s, "src", json!({ "include_tags": true })).await;
    let want: Vec<Value> = records(&source).iter().map(content).collect();
    let got: Vec<Value> = copies.iter().map(content).collect();
    assert_eq!(got, want, "copies match the source records, in order");
    // dst was created empty by the router: its seqs are 1..=5.
    assert_eq!(seqs(&json!({ "records": copies })), [1, 2, 3, 4, 5]);
    wait_forwarded(&s, "r", 5).await;
    assert_eq!(head(&s, "dst").await, 5, "no duplicates");
}

#[tokio::test]
async fn a_record_is_readable_on_the_dest_within_100ms() {
    let s = start().await;
    put_ok(&s, "src", json!({}), 201).await;
    route(&s, "r", "src", "dst").await;
    let mut latencies = Vec::new();
    for i in 1..=50u64 {
        let started = Instant::now();
        send(&s, "src", [i]).await;
        loop {
            let body = json!({ "from_seq": i - 1, "wait_ms": 1000 });
            let v = diff(&s, "dst", body).await;
            if let Some(r) = records(&v).first() {
                assert_eq!(r["data"], i, "{v}");
                break;
            }
            assert!(started.elapsed() < SETTLE, "record {i} never arrived");
        }
        latencies.push(started.elapsed());
    }
    latencies.sort();
    let (median, max) = (latencies[25], latencies[49]);
    let ms = Duration::from_millis;
    assert!(median <= ms(100), "median {median:?}; all {latencies:?}");
    assert!(max <= ms(500), "max {max:?}; all {latencies:?}");
}

#[tokio::test]
async fn preserve_flags_false_drop_node_and_tag() {
    let s = start().await;
    put_ok(&s, "src", json!({}), 201).await;
    let body = json!({ "source": "src", "dest": "nonode", "preserve_node": false });
    let v = put_router(&s, "r1", body).await.ok(201);
    has!(v, { "preserve_node": false, "preserve_tag": true });
    let body = json!({ "source": "src", "dest": "notag", "preserve_tag": false });
    let v = put_router(&s, "r2", body).await.ok(201);
    has!(v, { "preserve_node": true, "preserve_tag": false });

    let rec = json!({ "data": 1, "tag": "t", "node": "n", "meta": { "k": 1 } });
    write(&s, "src", json!({ "records": [rec] })).await;
    let c = &collect(&s, "nonode", 1).await[0];
    has!(c, { "data": 1, "$tag": "t", "meta": { "k": 1 } });
    assert!(c.get("$node").is_none(), "preserve_node:false: {c}");
    let c = &collect(&s, "notag", 1).await[0];
    has!(c, { "data": 1, "$node": "n", "meta": { "k": 1 } });
    assert!(c.get("$tag").is_none(), "preserve_tag:false: {c}");
}

#[tokio::test]
async fn filters_forward_only_matching_tags() {
    let s = start().await;
    put_ok(&s, "src", json!({}), 201).await;
    for (name, filter) in [
        ("eq", json!(["tag", "Eq", "x"])),
        ("glob", json!(["tag", "Glob", "x*"])),
    ] {
        let body = json!({ "source": "src", "dest": name, "filter": filter });
        let v = put_router(&s, name, body).await.ok(201);
        assert_eq!(v["filter"], filter);
    }
    // A bare string means Eq, as in a delete's `match`.
    let body = json!({ "source": "src", "dest": "bare", "filter": "x" });
    put_router(&s, "bare", body).await.ok(201);

    // The last record matches every filter: with per-source FIFO, once it is in a dest every
    // earlier record has been decided.
    let tags = ["x", "xy", "y", "", "ax", "x"];
    let record = |(i, tag): (usize, &&str)| match *tag {
        "" => json!({ "data": i + 1 }),
        tag => json!({ "data": i + 1, "tag": tag }),
    };
    let recs: Vec<Value> = tags.iter().enumerate().map(record).collect();
    write(&s, "src", json!({ "records": recs })).await;
    for (dest, want) in [
        ("eq", vec![1, 6]),
        ("glob", vec![1, 2, 6]),
        ("bare", vec![1, 6]),
    ] {
        let got = collect(&s, dest, want.len()).await;
        let want: Vec<Value> = want.into_iter().map(Value::from).collect();
        assert_eq!(datas(&got), want, "{dest}: {got:?}");
        for c in &got {
            let tag = c["$tag"].as_str().unwrap_or_default();
            assert!(tag.starts_with('x'), "{c}");
        }
    }
}

#[tokio::test]
async fn node_loop_prevention_holds_through_a_router() {
    let s = start().await;
    put_ok(&s, "src", json!({}), 201).await;
    route(&s, "r", "src", "dst").await;
    let recs = json!([
        { "data": "mine", "node": "n1" }, { "data": "theirs", "node": "n2" }, { "data": "anon" },
    ]);
    write(&s, "src", json!({ "records": recs })).await;
    collect(&s, "dst", 3).await;

    let v = diff(&s, "dst", json!({ "node": "n1" })).await;
    assert_eq!(datas(records(&v)), ["theirs", "anon"]);
    has!(v, { "next_from_seq": 3, "caught_up": true, "tombstone": null });
    let v = diff(&s, "dst", json!({ "node": ["n1", "n2"] })).await;
    assert_eq!(datas(records(&v)), ["anon"]);
}

#[tokio::test]
async fn fan_out_copies_every_record_to_every_dest() {
    let s = start().await;
    put_ok(&s, "src", json!({}), 201).await;
    let dests = ["f1", "f2", "f3"];
    for (i, dest) in dests.iter().enumerate() {
        route(&s, &format!("r{i}"), "src", dest).await;
    }
    send(&s, "src", [1, 2]).await;
    send(&s, "src", [3]).await;
    send(&s, "src", [4, 5]).await;
    let want: Vec<Value> = (1..=5).map(Value::from).collect();
    for (i, dest) in dests.iter().enumerate() {
        assert_eq!(datas(&collect(&s, dest, 5).await), want, "{dest}");
        wait_forwarded(&s, &format!("r{i}"), 5).await;
    }
    assert_eq!(head(&s, "src").await, 5);
}

#[tokio::test]
async fn exactly_once_copies_carry_an_idempotency_key() {
    let s = start().await;
    put_ok(&s, "src", json!({}), 201).await;
    let body = json!({ "source": "src", "dest": "dst", "guarantee": "exactly_once" });
    put_router(&s, "r", body).await.ok(201);
    let recs = json!([{ "data": 1, "meta": { "k": "v" } }, { "data": 2 }, { "data": 3 }]);
    write(&s, "src", json!({ "records": recs })).await;
    let copies = collect(&s, "dst", 3).await;
    assert_eq!(datas(&copies), [1, 2, 3]);
    assert_eq!(copies[0]["meta"]["k"], "v", "{}", copies[0]);
    let mut keys = Vec::new();
    for c in &copies {
        // `meta._topics_router.idempotency_key`, nested or as one dotted member.
        let meta = &c["meta"];
        let key = meta["_topics_router"]["idempotency_key"].as_str();
        let key = key.or(meta["_topics_router.idempotency_key"].as_str());
        let key = key.unwrap_or_else(|| panic!("no idempotency key: {c}"));
        keys.push(key.to_string());
    }
    keys.sort();
    keys.dedup();
    assert_eq!(keys.len(), 3, "one key per source record: {keys:?}");
    wait_forwarded(&s, "r", 3).await;
    assert_eq!(head(&s, "dst").await, 3);
}

#[tokio::test]
async fn deleting_a_topic_removes_the_routers_touching_it() {
    let s = start().await;
    put_ok(&s, "src", json!({}), 201).await;
    put_ok(&s, "up", json!({}), 201).await;
    route(&s, "out1", "src", "d1").await;
    route(&s, "out2", "src", "d2").await;
    route(&s, "in", "up", "src").await;
    route(&s, "unrelated", "up", "d3").await;

    let v = delete(&s, &t("src")).await.ok(200);
    has!(v, { "topic": "src", "deleted": true });
    let mut removed: Vec<&str> = v["routers_removed"]
        .as_array()
        .unwrap_or_else(|| panic!("routers_removed[]: {v}"))
        .iter()
        .map(|n| n.as_str().expect("a router name"))
        .collect();
    removed.sort();
    assert_eq!(removed, ["in", "out1", "out2"]);
    for name in removed {
        get(&s, &rp(name)).await.err(404, "router_not_found");
    }
    let v = get(&s, "/v0/routers").await.ok(200);
    assert_eq!(names(&v), ["unrelated"]);
    state(&s, "d1").await;
}

#[tokio::test]
async fn a_router_starts_at_the_source_head() {
    let s = start().await;
    send(&s, "src", [1, 2, 3]).await;
    route(&s, "r", "src", "dst").await;
    send(&s, "src", [4, 5]).await;
    let copies = collect(&s, "dst", 2).await;
    assert_eq!(datas(&copies), [4, 5]);
    assert_eq!(seqs(&json!({ "records": copies })), [1, 2]);
    assert_eq!(head(&s, "dst").await, 2, "older records stay behind");
}

#[tokio::test]
async fn a_discard_reject_dest_stalls_instead_of_dropping() {
    let s = start().await;
    put_ok(&s, "src", json!({}), 201).await;
    let config = json!({ "cap_records": 2, "discard": "reject" });
    put_ok(&s, "dst", config, 201).await;
    route(&s, "r", "src", "dst").await;
    for i in 1..=4 {
        let v = post(&s, &t("src"), json!({ "records": [{ "data": i }] })).await;
        assert_eq!(v.ok(200)["last_seq"], i, "the source write acks");
    }
    assert_eq!(datas(&collect(&s, "dst", 2).await), [1, 2]);
    // Full: nothing more arrives, nothing is evicted.
    let v = diff(&s, "dst", json!({ "from_seq": 2, "wait_ms": 500 })).await;
    assert!(seqs(&v).is_empty(), "{v}");
    has!(state(&s, "dst").await, { "head_seq": 2, "earliest_seq": 1, "count": 2 });

    let v = del_records(&s, "dst", json!({ "before_seq": 3 })).await;
    assert_eq!(v["deleted"], 2);
    let rest = collect_in(&s, "dst", 2, 2, Duration::from_secs(2)).await;
    assert_eq!(datas(&rest), [3, 4], "in order, none lost");
    let v = diff(&s, "dst", json!({ "from_seq": 0 })).await;
    assert_eq!(seqs(&v), [3, 4]);
    assert_eq!(v["tombstone"], Value::Null, "{v}");
}

// ---- the README's pub/sub recipe ----------------------------------------------------------

/// The README's pub/sub recipe, sent as its curls send it (`-d`: the form content type, JSON
/// body, which Riffle takes as JSON), then the subscribers' watch with `tail: true`.
#[tokio::test]
async fn readme_pubsub_recipe() {
    let s = start().await;
    let curl_d = async |path: &str, body: &str| {
        raw(&s, Method::PUT, path, Some(FORM), body.as_bytes()).await
    };
    let config = r#"{ "ttl_ms": 5000, "cap_records": 10000, "discard": "old", "durable": false }"#;
    let v = curl_d("/v0/topics/notifications", config).await.ok(201);
    has!(v["config"], { "ttl_ms": 5000, "cap_records": 10000, "durable": false });
    let web = r#"{ "source":"notifications", "dest":"notifications:web" }"#;
    let v = curl_d("/v0/routers/notifications-to-web", web)
        .await
        .ok(201);
    let (name, dest) = ("notifications-to-web", "notifications:web");
    let want = definition(name, "notifications", dest, json!({ "created": true }));
    assert_has(&v, want);
    let mobile = r#"{ "source":"notifications", "dest":"notifications:mobile" }"#;
    let v = curl_d("/v0/routers/notifications-to-mobile", mobile).await;
    has!(v.ok(201), { "dest": "notifications:mobile", "created": true });

    let body = json!({ "topics": {
        "notifications:web": { "tail": true }, "notifications:mobile": { "tail": true },
    } });
    let v = post(&s, "/v0/watch", body).await.ok(200);
    let mut sse = open(&s, v["wid"].as_str().expect("wid"), None).await;
    let note = json!({ "records": [{ "data": { "msg": "hello" } }] });
    write(&s, "notifications", note).await;

    let mut seen = std::collections::BTreeSet::new();
    let deadline = Instant::now() + PROMPT + SETTLE;
    while seen.len() < 2 {
        let left = deadline.saturating_duration_since(Instant::now());
        let f = sse.until(left, |f| f.name() == "record").await;
        let v = f.last().unwrap().json();
        assert_eq!(v["records"][0]["data"], json!({ "msg": "hello" }), "{v}");
        seen.insert(v["topic"].as_str().expect("topic").to_string());
    }
    assert_eq!(
        seen.into_iter().collect::<Vec<_>>(),
        ["notifications:mobile", "notifications:web"]
    );
}
