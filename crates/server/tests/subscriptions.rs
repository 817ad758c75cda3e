//! The Durable Streams `__ds` subscription APIs (PROTOCOL.md sections 6 and 7), black-box over
//! HTTP against the real binary: create, re-confirm, conflict, read and delete; request
//! validation and the SSRF rules for webhook URLs; explicit stream links beside a glob;
//! pull-wake wake events, claims, heartbeats, acks, releases, fencing and lease expiry; wake
//! tokens; API keys on the control paths; and a delete racing a worker's claim. Webhook
//! delivery, retries and restarts are in `subscriptions_delivery.rs`.

mod common;
mod subscriptions_common;

use common::{Options, Server, ZERO, offset};
use reqwest::Method;
use serde_json::{Value, json};
use std::time::{Duration, Instant};
use subscriptions_common::*;

/// A webhook URL that passes the SSRF rules and never resolves (no delivery succeeds).
const NOWHERE: &str = "https://hooks.example.invalid/wake";
const ALLOW: &str = "DS_SUBSCRIPTIONS__ALLOW_LOCALHOST_WEBHOOKS";
const NOT_FOUND: &str = "SUBSCRIPTION_NOT_FOUND";
const INVALID: &str = "INVALID_REQUEST";

fn pull(pattern: &str) -> Value {
    json!({ "type": "pull-wake", "pattern": pattern, "wake_stream": "wake/pool" })
}

fn webhook(url: &str) -> Value {
    json!({ "type": "webhook", "pattern": "events/*", "webhook": { "url": url } })
}

/// A server with `events/a` (holding `old`, 3 bytes) and the JSON wake stream `wake/pool`.
async fn start_pull() -> Server {
    let s = Server::start().await;
    new_stream(&s, "events/a", "text/plain").await;
    append(&s, "events/a", "old").await;
    new_stream(&s, "wake/pool", "application/json").await;
    s
}

#[tokio::test]
async fn create_reconfirm_conflict_get_and_delete() {
    let s = Server::start().await;
    new_stream(&s, "events/a", "text/plain").await;
    append(&s, "events/a", "hello").await;
    new_stream(&s, "notes/n", "text/plain").await;
    append(&s, "notes/n", "12").await;
    let spec = json!({
        "type": "webhook",
        "pattern": "events/*",
        "streams": ["other/x", "notes/n"],
        "webhook": { "url": NOWHERE },
        "description": "event processor",
    });
    let created = put_sub(&s, "sub-1", &spec).await.body(201);
    let got = get_sub(&s, "sub-1").await.body(200);
    assert_eq!(created, got, "PUT answers the subscription as GET shows it");
    assert_eq!(got["id"], "sub-1");
    assert_eq!(got["subscription_id"], "sub-1");
    assert_eq!(got["type"], "webhook");
    assert_eq!(got["pattern"], "events/*");
    // Existing streams are linked at their tails (no replay); `other/x` does not exist.
    let want = json!([
        { "path": "events/a", "link_type": "glob", "acked_offset": offset(5) },
        { "path": "notes/n", "link_type": "explicit", "acked_offset": offset(2) },
        { "path": "other/x", "link_type": "explicit", "acked_offset": ZERO },
    ]);
    assert_eq!(got["streams"], want);
    assert_eq!(got["webhook"]["url"], NOWHERE);
    let signing = &got["webhook"]["signing"];
    assert_eq!(signing["alg"], "ed25519");
    let kid = signing["kid"].as_str().expect("kid");
    assert!(kid.starts_with("ds_"), "{kid}");
    assert_eq!(kids(&jwks(&s).await), [kid], "the active key signs");
    let jwks_url = signing["jwks_url"].as_str().expect("jwks_url");
    assert_eq!(jwks_url, s.url("/v1/stream/__ds/jwks.json"));
    assert_eq!(got["wake_stream"], Value::Null);
    assert_eq!(got["lease_ttl_ms"], 30_000, "the default lease");
    let at = got["created_at"].as_str().expect("created_at").as_bytes();
    let shape = at.len() == 24 && at[10] == b'T' && at[19] == b'.' && at[23] == b'Z';
    assert!(
        shape,
        "RFC 3339 UTC with milliseconds: {}",
        got["created_at"]
    );
    assert_eq!(got["status"], "active");
    assert_eq!(got["description"], "event processor");
    assert!(
        !got.to_string().contains("secret"),
        "no shared secret: {got}"
    );

    // The same configuration, normalized (the default lease spelled out, streams repeated
    // and reordered), re-confirms; any difference is a conflict that changes nothing.
    let mut same = spec.clone();
    same["lease_ttl_ms"] = json!(30_000);
    same["streams"] = json!(["notes/n", "other/x", "notes/n"]);
    let again = put_sub(&s, "sub-1", &same).await.body(200);
    assert_eq!(again, got);
    let other_url = json!({ "url": "https://hooks.example.invalid/other" });
    for (field, value) in [
        ("description", json!("another")),
        ("lease_ttl_ms", json!(5000)),
        ("pattern", json!("events/**")),
        ("streams", json!(["other/y"])),
        ("webhook", other_url),
    ] {
        let mut other = spec.clone();
        other[field] = value;
        let r = put_sub(&s, "sub-1", &other).await;
        r.error(409, "SUBSCRIPTION_ALREADY_EXISTS");
    }
    assert_eq!(get_sub(&s, "sub-1").await.body(200), got);

    delete_sub(&s, "sub-1").await.status(204);
    get_sub(&s, "sub-1").await.error(404, NOT_FOUND);
    delete_sub(&s, "sub-1").await.status(204);
    // A deleted id can be created again, with another configuration.
    put_sub(&s, "sub-1", &pull("events/*")).await.status(201);
}

fn lease(ms: Value) -> Value {
    json!({ "type": "pull-wake", "pattern": "e/*", "wake_stream": "w", "lease_ttl_ms": ms })
}

#[tokio::test]
async fn invalid_requests_are_refused_and_create_nothing() {
    let s = Server::start().await;
    let url = json!({ "url": NOWHERE });
    let bad = [
        ("missing type", json!({ "pattern": "e/*", "webhook": url })),
        ("bad type", json!({ "type": "poll", "pattern": "e/*" })),
        (
            "no pattern/streams",
            json!({ "type": "webhook", "webhook": url }),
        ),
        (
            "empty streams",
            json!({ "type": "webhook", "streams": [], "webhook": url }),
        ),
        ("lease 999", lease(json!(999))),
        ("lease 600001", lease(json!(600_001))),
        ("lease 1.5", lease(json!(1.5))),
        ("lease as text", lease(json!("30000"))),
        ("lease negative", lease(json!(-1))),
        ("no webhook", json!({ "type": "webhook", "pattern": "e/*" })),
        (
            "no webhook.url",
            json!({ "type": "webhook", "pattern": "e/*", "webhook": {} }),
        ),
        (
            "no wake_stream",
            json!({ "type": "pull-wake", "pattern": "e/*" }),
        ),
        (
            "number streams",
            json!({ "type": "pull-wake", "streams": [1], "wake_stream": "w" }),
        ),
        (
            "reserved",
            json!({ "type": "pull-wake", "pattern": "__ds/*", "wake_stream": "w" }),
        ),
    ];
    let mut bodies: Vec<(&str, String)> = bad.iter().map(|(w, b)| (*w, b.to_string())).collect();
    bodies.push(("invalid JSON", r#"{"type": "pull-wake","#.into()));
    bodies.push(("not an object", "[1, 2]".into()));
    for (what, body) in &bodies {
        let r = call(&s, Method::PUT, &sub_path("bad", ""), None, body).await;
        let got = (r.status, r.code());
        assert_eq!(got, (400, INVALID.into()), "{what}: {}", r.text);
        get_sub(&s, "bad").await.error(404, NOT_FOUND);
    }
    // The lease bounds themselves are accepted.
    for (id, ms) in [("lo", 1000), ("hi", 600_000)] {
        let got = put_sub(&s, id, &lease(json!(ms))).await.body(201);
        assert_eq!(got["lease_ttl_ms"], ms);
    }
    // An id with a slash (encoded) is no id.
    let body = pull("e/*").to_string();
    let r = call(&s, Method::PUT, &sub_path("a%2Fb", ""), None, &body).await;
    r.error(400, INVALID);
}

#[tokio::test]
async fn webhook_urls_are_checked_for_ssrf() {
    let strict = Server::start().await;
    for url in [
        "http://127.0.0.1:9/hook",
        "http://127.0.0.5/hook",
        "http://localhost:9/hook",
        "https://10.0.0.1/hook",
        "https://192.168.1.1/hook",
        "https://169.254.169.254/latest/meta-data",
        "https://[::1]/hook",
        "https://2130706433/hook", // 127.0.0.1, numerically
        "http://example.com/hook", // public, but not https
        "ftp://example.com/hook",
        "https://user:pw@example.com/hook",
        "https://LOCALHOST./hook",
        "https://0177.0.0.1/hook",
        "https://[::ffff:127.0.0.1]/hook",
        "https://[::ffff:10.0.0.1]/hook",
        "https://0xa9fea9fe/hook", // 169.254.169.254
        "https://100.100.100.200/hook",
        "https://[fd00::1]/hook",
    ] {
        let r = put_sub(&strict, "s", &webhook(url)).await;
        r.error(400, "WEBHOOK_URL_REJECTED");
        get_sub(&strict, "s").await.error(404, NOT_FOUND);
    }
    let public = put_sub(&strict, "s", &webhook("https://example.com/hook")).await;
    public.status(201);

    let dev = Server::start_with(Options::default().env(ALLOW, "true")).await;
    let local = ["http://127.0.0.1:9/hook", "http://localhost:9/hook"];
    for (id, url) in ["a", "b"].into_iter().zip(local) {
        put_sub(&dev, id, &webhook(url)).await.status(201);
    }
    for url in [
        "https://10.0.0.1/hook",
        "https://169.254.169.254/",
        "http://example.com/hook",
    ] {
        let r = put_sub(&dev, "c", &webhook(url)).await;
        r.error(400, "WEBHOOK_URL_REJECTED");
    }
    get_sub(&dev, "c").await.error(404, NOT_FOUND);
}

#[tokio::test]
async fn explicit_links_are_added_and_removed_beside_the_glob() {
    let s = start_pull().await;
    new_stream(&s, "logs/x/y", "text/plain").await;
    append(&s, "logs/x/y", "12345").await;
    put_sub(&s, "l", &pull("events/*")).await.status(201);
    let streams = |p: &str| format!("{}{p}", sub_path("l", "/streams"));
    let add = async |list: Value| {
        let body = json!({ "streams": list }).to_string();
        call(&s, Method::POST, &streams(""), None, &body).await
    };
    let remove = async |encoded: &str| call(&s, Method::DELETE, &streams(encoded), None, "").await;
    let show = async || links(&get_sub(&s, "l").await.body(200));
    let pairs = |l: &[(&str, &str)]| -> Vec<(String, String)> {
        l.iter()
            .map(|(p, t)| (p.to_string(), t.to_string()))
            .collect()
    };

    // Added at the stream's tail; adding it again is idempotent and keeps its cursor.
    add(json!(["logs/x/y"])).await.status(204);
    assert_eq!(acked(&s, "l", "logs/x/y").await, 5);
    append(&s, "logs/x/y", "678").await;
    add(json!(["logs/x/y", "logs/x/y"])).await.status(204);
    assert_eq!(acked(&s, "l", "logs/x/y").await, 5, "the cursor stays");
    let both = [("events/a", "glob"), ("logs/x/y", "explicit")];
    assert_eq!(show().await, pairs(&both));

    // Removed by its URL-encoded path (it has slashes); removing it again is fine.
    remove("/logs%2Fx%2Fy").await.status(204);
    assert_eq!(show().await, pairs(&[("events/a", "glob")]));
    remove("/logs%2Fx%2Fy").await.status(204);
    remove("/never%2Flinked").await.status(204);

    // Explicit wins over glob while both link a stream; removing it leaves the glob link,
    // cursor and all.
    add(json!(["events/a"])).await.status(204);
    assert_eq!(show().await, pairs(&[("events/a", "explicit")]));
    remove("/events%2Fa").await.status(204);
    assert_eq!(show().await, pairs(&[("events/a", "glob")]));
    assert_eq!(acked(&s, "l", "events/a").await, 3);

    // A stream created later that matches the pattern is linked from its start.
    new_stream(&s, "events/b", "text/plain").await;
    let sub = get_sub(&s, "l").await.body(200);
    assert_eq!(link(&sub, "events/b")["link_type"], "glob");
    assert_eq!(link(&sub, "events/b")["acked_offset"], ZERO);

    // `*` is one segment, `**` any number.
    new_stream(&s, "events/a/deep", "text/plain").await;
    let three = [("events/a", "glob"), ("events/b", "glob")];
    assert_eq!(show().await, pairs(&three));
    put_sub(&s, "all", &pull("events/**")).await.status(201);
    let all = links(&get_sub(&s, "all").await.body(200));
    let paths: Vec<&str> = all.iter().map(|(p, _)| p.as_str()).collect();
    assert_eq!(paths, ["events/a", "events/a/deep", "events/b"]);

    // An explicit link to a stream that does not exist yet counts it from its start.
    add(json!(["later/s"])).await.status(204);
    new_stream(&s, "later/s", "text/plain").await;
    append(&s, "later/s", "abc").await;
    let w = claim(&s, "l", "w1").await.body(200);
    let later = json!({
        "path": "later/s", "link_type": "explicit", "acked_offset": ZERO,
        "tail_offset": offset(3), "has_pending": true,
    });
    assert_eq!(w["streams"], json!([later]));

    // Bad bodies and unknown subscriptions.
    for body in [
        json!({ "streams": [] }),
        json!({ "streams": [7] }),
        json!({}),
    ] {
        add(body).await.error(400, INVALID);
    }
    let body = json!({ "streams": ["events/a"] }).to_string();
    let r = call(&s, Method::POST, &sub_path("nope", "/streams"), None, &body).await;
    r.error(404, NOT_FOUND);
}

#[tokio::test]
async fn pull_wake_claim_heartbeat_ack_and_release() {
    let s = start_pull().await;
    put_sub(&s, "pw", &pull("events/*")).await.status(201);
    assert_eq!(wake_events(&s, "wake/pool").await, Vec::<Value>::new());
    append(&s, "events/a", "abcd").await; // tail 7, acked 3

    let event = wake_event_above(&s, "wake/pool", "pw", 0).await;
    assert_eq!(event["type"], "wake");
    assert_eq!(event["stream"], "events/a");
    assert_eq!(event["generation"], 1);
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH);
    let now = now.unwrap().as_millis() as u64;
    let ts = event["ts"].as_u64().expect("ts in ms");
    assert!(ts <= now && now - ts < 60_000, "ts {ts} vs now {now}");

    let w = claim(&s, "pw", "w1").await.body(200);
    assert_eq!(w["generation"], event["generation"]);
    assert_eq!(w["lease_ttl_ms"], 30_000);
    let want = json!([{
        "path": "events/a", "link_type": "glob", "acked_offset": offset(3),
        "tail_offset": offset(7), "has_pending": true,
    }]);
    assert_eq!(w["streams"], want);
    assert!(w["token"].as_str().is_some_and(|t| !t.is_empty()));
    assert!(w["wake_id"].as_str().is_some_and(|id| !id.is_empty()));

    let other = claim(&s, "pw", "w2").await.error(409, "ALREADY_CLAIMED");
    let other = other.json();
    assert_eq!(other["error"]["current_holder"], "w1");
    assert_eq!(other["error"]["generation"], w["generation"]);
    claim(&s, "pw", "").await.error(400, INVALID);

    // A heartbeat with a partial ack, then done.
    let beat = ack(&s, "pw", "ack", &w, &[("events/a", 5)], false).await;
    assert_eq!(beat.body(200), acked_ok(false));
    assert_eq!(acked(&s, "pw", "events/a").await, 5);
    let done = ack(&s, "pw", "ack", &w, &[("events/a", 7)], true).await;
    assert_eq!(done.body(200), acked_ok(false));
    assert_eq!(acked(&s, "pw", "events/a").await, 7);
    claim(&s, "pw", "w2").await.error(409, "NO_PENDING_WORK");
    // The finished wake's token is fenced.
    for action in ["ack", "release"] {
        let r = ack(&s, "pw", action, &w, &[], true).await;
        r.error(409, "FENCED");
    }
    // A pull-wake subscription takes no webhook callback.
    let r = ack(&s, "pw", "callback", &w, &[], true).await;
    r.error(400, INVALID);

    // New data: a new wake; released, it is offered again with a higher generation.
    append(&s, "events/a", "ef").await; // tail 9
    let g2 = wake_event_above(&s, "wake/pool", "pw", 1).await;
    let w2 = claim(&s, "pw", "w1").await.body(200);
    assert_eq!(w2["generation"], g2["generation"]);
    assert_eq!(link(&w2, "events/a")["acked_offset"], offset(7));
    let released = ack(&s, "pw", "release", &w2, &[], false).await;
    assert_eq!(released.status(204).text, "");
    let g3 = wake_event_above(&s, "wake/pool", "pw", gen_of(&w2)).await;
    let w3 = claim(&s, "pw", "w2").await.body(200);
    assert_eq!(w3["generation"], g3["generation"]);
    assert!(gen_of(&w3) > gen_of(&w2));
    let release_acked = &link(&w3, "events/a")["acked_offset"];
    assert_eq!(release_acked, &offset(7), "release acks nothing");
    for action in ["release", "ack"] {
        let r = ack(&s, "pw", action, &w2, &[("events/a", 9)], true).await;
        r.error(409, "FENCED");
    }
    // The current token with another wake's generation or id is fenced too.
    let mut stale = w3.clone();
    stale["generation"] = w2["generation"].clone();
    let r = ack(&s, "pw", "ack", &stale, &[("events/a", 9)], true).await;
    r.error(409, "FENCED");
    stale["generation"] = w3["generation"].clone();
    stale["wake_id"] = json!("w_other");
    let r = ack(&s, "pw", "ack", &stale, &[("events/a", 9)], true).await;
    r.error(409, "FENCED");
    assert_eq!(
        acked(&s, "pw", "events/a").await,
        7,
        "fenced acks move nothing"
    );

    // Data that arrived after the claim: done answers next_wake and a new wake is offered.
    append(&s, "events/a", "g").await; // tail 10
    let last = ack(&s, "pw", "ack", &w3, &[("events/a", 9)], true).await;
    assert_eq!(last.body(200), acked_ok(true));
    assert_eq!(acked(&s, "pw", "events/a").await, 9);
    let g4 = wake_event_above(&s, "wake/pool", "pw", gen_of(&w3)).await;
    let w4 = claim(&s, "pw", "w1").await.body(200);
    assert_eq!(w4["generation"], g4["generation"]);
    assert_eq!(link(&w4, "events/a")["tail_offset"], offset(10));
    let done = ack(&s, "pw", "ack", &w4, &[("events/a", 10)], true).await;
    assert_eq!(done.body(200), acked_ok(false));

    // A new stream matching the pattern is linked before its first append, which wakes.
    new_stream(&s, "events/new", "text/plain").await;
    append(&s, "events/new", "xy").await;
    let g5 = wake_event_above(&s, "wake/pool", "pw", gen_of(&w4)).await;
    assert_eq!(g5["stream"], "events/new");
    let w5 = claim(&s, "pw", "w1").await.body(200);
    assert_eq!(link(&w5, "events/new")["acked_offset"], ZERO);
    assert_eq!(link(&w5, "events/new")["tail_offset"], offset(2));

    // Claims are pull-wake only.
    put_sub(&s, "hook", &webhook(NOWHERE)).await.status(201);
    claim(&s, "hook", "w1").await.error(400, INVALID);
    claim(&s, "nope", "w1").await.error(404, NOT_FOUND);
}

#[tokio::test]
async fn an_expired_lease_is_offered_again_and_heartbeats_keep_it() {
    let s = start_pull().await;
    let mut spec = pull("events/*");
    spec["lease_ttl_ms"] = json!(1500);
    put_sub(&s, "pw", &spec).await.status(201);
    append(&s, "events/a", "abcd").await; // tail 7

    // No heartbeat: the lease ends after 1.5 s and the wake is offered again.
    wake_event_above(&s, "wake/pool", "pw", 0).await;
    let w1 = claim(&s, "pw", "slow").await.body(200);
    let again = wake_event_above(&s, "wake/pool", "pw", gen_of(&w1)).await;
    let late = ack(&s, "pw", "ack", &w1, &[("events/a", 7)], true).await;
    late.error(409, "FENCED");
    assert_eq!(acked(&s, "pw", "events/a").await, 3);

    // Heartbeats every 200 ms keep the lease for well over twice its length.
    let w2 = claim(&s, "pw", "steady").await.body(200);
    assert_eq!(w2["generation"], again["generation"]);
    let start = Instant::now();
    while start.elapsed() < Duration::from_millis(3600) {
        let beat = ack(&s, "pw", "ack", &w2, &[], false).await;
        assert_eq!(beat.body(200), acked_ok(false));
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let held = claim(&s, "pw", "thief").await.error(409, "ALREADY_CLAIMED");
    assert_eq!(held.json()["error"]["current_holder"], "steady");
    let events = wake_events(&s, "wake/pool").await;
    let newer = events.iter().filter(|e| gen_of(e) > gen_of(&w2)).count();
    assert_eq!(newer, 0, "no new wake while the lease is kept: {events:?}");
    let done = ack(&s, "pw", "ack", &w2, &[("events/a", 7)], true).await;
    assert_eq!(done.body(200), acked_ok(false));
    assert_eq!(acked(&s, "pw", "events/a").await, 7);
}

#[tokio::test]
async fn a_delete_fails_the_holders_requests_and_moves_nothing() {
    let s = start_pull().await;
    put_sub(&s, "pw", &pull("events/*")).await.status(201);
    append(&s, "events/a", "abcd").await; // tail 7
    let w = claim(&s, "pw", "w1").await.body(200);
    delete_sub(&s, "pw").await.status(204);
    for action in ["ack", "release"] {
        let r = ack(&s, "pw", action, &w, &[("events/a", 7)], true).await;
        r.error(404, NOT_FOUND);
    }
    // Re-created under the same id, it is another subscription: the old token is fenced.
    put_sub(&s, "pw", &pull("events/*")).await.status(201);
    assert_eq!(acked(&s, "pw", "events/a").await, 7, "linked at the tail");
    append(&s, "events/a", "efgh").await; // tail 11
    let r = ack(&s, "pw", "ack", &w, &[("events/a", 11)], true).await;
    r.error(409, "FENCED");
    assert_eq!(acked(&s, "pw", "events/a").await, 7);
}

#[tokio::test]
async fn wake_tokens_are_required_and_checked() {
    let s = start_pull().await;
    put_sub(&s, "pw", &pull("events/*")).await.status(201);
    put_sub(&s, "pw2", &pull("events/*")).await.status(201);
    append(&s, "events/a", "abcd").await;
    let w = claim(&s, "pw", "w1").await.body(200);
    let token = w["token"].as_str().unwrap().to_string();
    let body = wake_body(&w, &[("events/a", 7)], true);
    for t in [None, Some("garbage"), Some("a.b.c")] {
        let r = act(&s, "pw", "ack", t, &body).await;
        let r = r.error(401, "TOKEN_INVALID");
        let challenge = r.header("www-authenticate").unwrap_or_default();
        assert!(challenge.starts_with("Bearer"), "{t:?}: {challenge:?}");
    }
    // Another subscription's token.
    let r = act(&s, "pw2", "ack", Some(&token), &body).await;
    r.error(401, "TOKEN_INVALID");
    assert_eq!(acked(&s, "pw", "events/a").await, 3);
    act(&s, "pw", "ack", Some(&token), &body).await.status(200);
}

#[tokio::test]
async fn api_keys_guard_the_control_paths_but_not_the_jwks_or_wake_tokens() {
    let opts = Options::default()
        .env("DS_AUTH__API_KEYS", "root, reader:r, writer:w, admin:a")
        .env(ALLOW, "true");
    let s = Server::start_with(opts).await;
    let root = Some("root");
    new_stream_as(&s, root, "events/a", "text/plain").await;
    new_stream_as(&s, root, "wake/pool", "application/json").await;
    let path = sub_path("pw", "");
    let spec = pull("events/*").to_string();
    let put = async |key: Option<&str>| call(&s, Method::PUT, &path, key, &spec).await;
    assert_eq!(put(None).await.status, 401);
    assert_eq!(put(Some("nope")).await.status, 401);
    put(Some("reader")).await.status(403);
    put(Some("writer")).await.status(403);
    put(Some("admin")).await.status(201);
    assert_eq!(call(&s, Method::GET, &path, None, "").await.status, 401);
    let r = call(&s, Method::GET, &path, Some("reader"), "").await;
    r.status(200);
    jwks(&s).await;

    // Claiming takes write; the claim's own token then acks without an API key.
    append_as(&s, root, "events/a", "abc").await;
    let claim_path = sub_path("pw", "/claim");
    let worker = json!({ "worker": "w1" }).to_string();
    let claim_as = async |key| call(&s, Method::POST, &claim_path, key, &worker).await;
    assert_eq!(claim_as(None).await.status, 401);
    claim_as(Some("reader")).await.status(403);
    let w = claim_as(Some("writer")).await.body(200);
    let done = ack(&s, "pw", "ack", &w, &[("events/a", 3)], true).await;
    assert_eq!(done.body(200), acked_ok(false));

    // A webhook's callback token works without an API key too.
    let hook = Hook::start(&[], (200, "{}")).await;
    let spec = webhook(&hook.url).to_string();
    let r = call(&s, Method::PUT, &sub_path("wh", ""), root, &spec).await;
    r.status(201);
    append_as(&s, root, "events/a", "de").await;
    let wake = hook.wait_for(1).await[0].json();
    let cb = ack(&s, "wh", "callback", &wake, &[("events/a", 5)], true).await;
    assert_eq!(cb.body(200), acked_ok(false));

    // Rotating the signing key and deleting take admin.
    let rotate = "/v1/stream/__ds/jwks/rotate";
    assert_eq!(call(&s, Method::POST, rotate, None, "").await.status, 401);
    let as_key = async |m: Method, p: &str, key: &str| call(&s, m, p, Some(key), "").await.status;
    assert_eq!(as_key(Method::POST, rotate, "writer").await, 403);
    assert_eq!(as_key(Method::POST, rotate, "admin").await, 200);
    assert_eq!(as_key(Method::DELETE, &path, "reader").await, 403);
    assert_eq!(as_key(Method::DELETE, &path, "admin").await, 204);
}

/// A method a control API does not take is a 405 that says which it does (`Allow`).
#[tokio::test]
async fn methods_not_allowed_name_the_allowed_ones() {
    let s = start_pull().await;
    let sub = s.url("/v1/stream/__ds/subscriptions/x");
    for (method, url, allow) in [
        (Method::PATCH, sub.clone(), "GET, HEAD, PUT, DELETE"),
        (Method::GET, format!("{sub}/claim"), "POST"),
        (Method::GET, format!("{sub}/streams"), "POST"),
        (
            Method::POST,
            s.url("/v1/stream/__ds/jwks.json"),
            "GET, HEAD",
        ),
        (Method::GET, s.url("/v1/stream/__ds/jwks/rotate"), "POST"),
    ] {
        let r = s.client.request(method.clone(), &url).send().await.unwrap();
        assert_eq!(r.status(), 405, "{method} {url}");
        assert_eq!(
            r.headers().get("allow").and_then(|v| v.to_str().ok()),
            Some(allow),
            "{method} {url}"
        );
    }
}
