//! Delivery of `__ds` subscriptions (PROTOCOL.md sections 6.5, 7 and 12.8-12.10), black-box
//! against the real binary with a webhook receiver on 127.0.0.1: signed webhook wakes
//! checked against the served JWKS, callbacks with the wake token (acks, fencing, invalid
//! offsets, `done` replies), retries with backoff, lease expiry of an unanswered wake, and
//! subscriptions, cursors, links, claims, retry schedules and signing keys across a graceful
//! restart and a SIGKILL.

mod common;
mod subscriptions_common;

use common::{Options, Server, TempDir, offset};
use reqwest::Method;
use serde_json::{Value, json};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use subscriptions_common::*;

const ALLOW: &str = "DS_SUBSCRIPTIONS__ALLOW_LOCALHOST_WEBHOOKS";
const DONE: &str = r#"{"done":true}"#;

fn webhook(pattern: &str, url: &str) -> Value {
    json!({ "type": "webhook", "pattern": pattern, "webhook": { "url": url } })
}

async fn start() -> Server {
    Server::start_with(Options::default().env(ALLOW, "true")).await
}

/// Check a delivery's signature header, and that it verifies against the server's JWKS.
#[track_caller]
fn check_signed(d: &Seen, jwks: &Value, kid: &str) {
    let (t, got_kid, sig) = d.signature();
    assert_eq!(got_kid, kid);
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
    assert!(t.abs_diff(now.as_secs()) < 300, "t={t} is not now");
    let b64url = !sig.is_empty() && !sig.contains(['=', '+', '/']);
    assert!(b64url, "unpadded base64url: {sig}");
    let header = d.header("webhook-signature");
    assert!(verify(jwks, header, &d.body), "{header} does not verify");
}

#[tokio::test]
async fn a_webhook_wake_is_signed_called_back_and_fenced() {
    let s = start().await;
    new_stream(&s, "events/a", "text/plain").await;
    append(&s, "events/a", "old").await;
    let hook = Hook::start(&[(200, "{}")], (200, DONE)).await;
    let sub = put_sub(&s, "wh", &webhook("events/*", &hook.url)).await;
    let kid = sub.body(201)["webhook"]["signing"]["kid"].clone();
    let kid = kid.as_str().unwrap().to_string();
    append(&s, "events/a", "hello").await; // tail 8, acked 3

    let d = hook.wait_for(1).await.remove(0);
    assert_eq!((d.method.as_str(), d.path.as_str()), ("POST", "/hook"));
    assert_eq!(d.header("content-type"), "application/json");
    let keys = jwks(&s).await;
    let x = keys["keys"][0]["x"].clone();
    let jwk =
        json!({ "kty": "OKP", "crv": "Ed25519", "kid": kid, "use": "sig", "alg": "EdDSA", "x": x });
    assert_eq!(keys["keys"], json!([jwk]));
    check_signed(&d, &keys, &kid);
    let mut tampered = d.body.to_vec();
    tampered[1] ^= 1;
    assert!(!verify(&keys, d.header("webhook-signature"), &tampered));

    let w = d.json();
    assert_eq!(w["subscription_id"], "wh");
    assert_eq!(w["generation"], 1);
    let want = json!([{
        "path": "events/a", "link_type": "glob", "acked_offset": offset(3),
        "tail_offset": offset(8), "has_pending": true,
    }]);
    assert_eq!(w["streams"], want);
    let callback = s.url("/v1/stream/__ds/subscriptions/wh/callback");
    assert_eq!(w["callback_url"], callback);
    assert!(w["callback_token"].as_str().is_some_and(|t| !t.is_empty()));

    // No token, a garbage token: 401. The pull-wake endpoints refuse a webhook subscription.
    let done = wake_body(&w, &[("events/a", 8)], true);
    for t in [None, Some("garbage")] {
        let r = act(&s, "wh", "callback", t, &done).await;
        r.error(401, "TOKEN_INVALID");
    }
    let r = ack(&s, "wh", "ack", &w, &[("events/a", 8)], true).await;
    r.error(400, "INVALID_REQUEST");
    claim(&s, "wh", "w1").await.error(400, "INVALID_REQUEST");

    // Offsets beyond the tail, behind the cursor, or of an unlinked stream move nothing.
    for acks in [("events/a", 9), ("events/a", 2), ("other/z", 1)] {
        let r = ack(&s, "wh", "callback", &w, &[acks], false).await;
        r.error(409, "INVALID_OFFSET");
    }
    let mut malformed = wake_body(&w, &[], false);
    malformed["acks"] = json!([{ "stream": "events/a", "offset": "abc" }]);
    let t = w["callback_token"].as_str();
    let r = act(&s, "wh", "callback", t, &malformed).await;
    r.error(400, "INVALID_REQUEST");
    assert_eq!(acked(&s, "wh", "events/a").await, 3);

    // A partial ack; behind it is refused.
    let partial = ack(&s, "wh", "callback", &w, &[("events/a", 5)], false).await;
    assert_eq!(partial.body(200), acked_ok(false));
    assert_eq!(acked(&s, "wh", "events/a").await, 5);
    let back = ack(&s, "wh", "callback", &w, &[("events/a", 4)], false).await;
    back.error(409, "INVALID_OFFSET");
    // Done with data that arrived meanwhile: next_wake; the same callback again is fenced.
    append(&s, "events/a", "world").await; // tail 13
    let r = act(&s, "wh", "callback", t, &done).await;
    assert_eq!(r.body(200), acked_ok(true));
    act(&s, "wh", "callback", t, &done)
        .await
        .error(409, "FENCED");

    // The next wake (acked from 8) has a higher generation; `{"done":true}` acks its snapshot.
    let d2 = hook.wait_for(2).await.remove(1);
    check_signed(&d2, &keys, &kid);
    let w2 = d2.json();
    assert!(gen_of(&w2) > gen_of(&w), "{w2}");
    assert_ne!(w2["wake_id"], w["wake_id"]);
    let snap = link(&w2, "events/a");
    assert_eq!(snap["acked_offset"], offset(8));
    assert_eq!(snap["tail_offset"], offset(13));
    eventually("the done reply acks the snapshot", WAIT, async || {
        (acked(&s, "wh", "events/a").await == 13).then_some(())
    })
    .await;
    // That wake is over: its token is fenced.
    let r = ack(&s, "wh", "callback", &w2, &[], true).await;
    r.error(409, "FENCED");
    assert_eq!(get_sub(&s, "wh").await.body(200)["status"], "active");
    // New data after the ack wakes again, higher still.
    append(&s, "events/a", "!").await;
    let w3 = hook.wait_for(3).await[2].json();
    assert!(gen_of(&w3) > gen_of(&w2), "{w3}");
    assert_eq!(link(&w3, "events/a")["acked_offset"], offset(13));
}

#[tokio::test]
async fn failed_deliveries_are_retried_with_backoff() {
    let s = start().await;
    new_stream(&s, "events/a", "text/plain").await;
    let hook = Hook::start(&[(500, "oops"), (503, "")], (200, DONE)).await;
    let r = put_sub(&s, "wh", &webhook("events/*", &hook.url)).await;
    r.status(201);
    append(&s, "events/a", "abc").await;

    hook.wait_for(1).await;
    let mut saw_failed = false;
    eventually("status failed, or all three deliveries", WAIT, async || {
        let status = get_sub(&s, "wh").await.body(200)["status"].clone();
        saw_failed |= status == "failed";
        (saw_failed || hook.seen().len() >= 3).then_some(())
    })
    .await;
    assert!(saw_failed, "status failed while a retry is scheduled");

    let seen = hook.wait_for(3).await;
    let bodies: Vec<Value> = seen.iter().map(Seen::json).collect();
    for b in &bodies[1..] {
        assert_eq!(
            b["wake_id"], bodies[0]["wake_id"],
            "a retry is the same wake"
        );
        assert_eq!(b["generation"], bodies[0]["generation"]);
    }
    let keys = jwks(&s).await;
    for d in &seen {
        check_signed(d, &keys, &kids(&keys)[0]);
    }
    // 1 s then 2 s, with 20% jitter either way.
    let first = seen[1].at - seen[0].at;
    let second = seen[2].at - seen[1].at;
    assert!(
        first >= Duration::from_millis(700),
        "first retry after {first:?}"
    );
    assert!(
        second >= Duration::from_millis(1400),
        "second after {second:?}"
    );
    assert!(second > first, "backoff grows: {first:?} then {second:?}");

    eventually("active and acked after the success", WAIT, async || {
        let sub = get_sub(&s, "wh").await.body(200);
        let acked = link(&sub, "events/a")["acked_offset"] == offset(3);
        (sub["status"] == "active" && acked).then_some(())
    })
    .await;
    assert_eq!(hook.seen().len(), 3);
}

#[tokio::test]
async fn an_unanswered_webhook_wake_expires_and_is_delivered_again() {
    let s = start().await;
    new_stream(&s, "events/a", "text/plain").await;
    let hook = Hook::start(&[], (200, "{}")).await;
    let mut spec = webhook("events/*", &hook.url);
    spec["lease_ttl_ms"] = json!(1000);
    put_sub(&s, "wh", &spec).await.status(201);
    append(&s, "events/a", "abc").await;
    let seen = hook.wait_for(2).await;
    let (w1, w2) = (seen[0].json(), seen[1].json());
    assert!(gen_of(&w2) > gen_of(&w1), "{w1} then {w2}");
    assert_ne!(w2["wake_id"], w1["wake_id"]);
    assert_eq!(link(&w2, "events/a")["acked_offset"], offset(0));
    let late = ack(&s, "wh", "callback", &w1, &[("events/a", 3)], true).await;
    late.error(409, "FENCED");
    assert_eq!(acked(&s, "wh", "events/a").await, 0);

    // A deleted subscription is delivered no more; its wake's callback is refused.
    delete_sub(&s, "wh").await.status(204);
    let n = hook.seen().len();
    let r = ack(&s, "wh", "callback", &hook.seen()[n - 1].json(), &[], true).await;
    r.error(404, "SUBSCRIPTION_NOT_FOUND");
    // Another subscription with the same lease is delivered three times (two expiries)
    // meanwhile; the deleted one at most once more (a delivery already under way).
    put_sub(&s, "other", &spec).await.status(201);
    append(&s, "events/a", "d").await;
    let of = |id: &str| {
        let seen = hook.seen();
        seen.iter()
            .filter(|d| d.json()["subscription_id"] == id)
            .count()
    };
    eventually("three wakes of the other subscription", WAIT, async || {
        (of("other") >= 3).then_some(())
    })
    .await;
    assert!(
        of("wh") <= n + 1,
        "the deleted subscription is still delivered"
    );
}

#[tokio::test]
async fn subscriptions_claims_and_keys_survive_restarts() {
    let data = TempDir::new("subs");
    let opts = || {
        let o = Options::default().storage("file-durable", data.path());
        o.env(ALLOW, "true")
    };
    let hook = Hook::start(&[], (200, DONE)).await;
    let failing = Hook::start(&[], (500, "")).await;
    let s = Server::start_with(opts()).await;
    for p in ["events/a", "extra/x", "extra/y", "hooked/a", "bad/a"] {
        new_stream(&s, p, "text/plain").await;
    }
    new_stream(&s, "wake/pool", "application/json").await;
    let spec = json!({
        "type": "pull-wake", "pattern": "events/*", "streams": ["extra/x"],
        "wake_stream": "wake/pool",
    });
    put_sub(&s, "pw", &spec).await.status(201);
    let r = put_sub(&s, "wh", &webhook("hooked/*", &hook.url)).await;
    r.status(201);
    let r = put_sub(&s, "retrying", &webhook("bad/*", &failing.url)).await;
    r.status(201);
    append(&s, "events/a", "abc").await;
    wake_event_above(&s, "wake/pool", "pw", 0).await;
    let w = claim(&s, "pw", "w1").await.body(200);
    let r = ack(&s, "pw", "ack", &w, &[("events/a", 3)], true).await;
    r.status(200);
    let add = json!({ "streams": ["extra/y"] }).to_string();
    let add_path = sub_path("pw", "/streams");
    call(&s, Method::POST, &add_path, None, &add)
        .await
        .status(204);
    // Pending when the server stops: a wake whose event is written, nobody claimed it.
    append(&s, "events/a", "defg").await; // tail 7
    append(&s, "extra/x", "12").await;
    let g = gen_of(&wake_event_above(&s, "wake/pool", "pw", 1).await);
    let events = wake_events(&s, "wake/pool").await.len();
    // A webhook retry is scheduled when the server stops.
    append(&s, "bad/a", "x").await;
    eventually("the failing webhook's retry scheduled", WAIT, async || {
        let st = get_sub(&s, "retrying").await.body(200)["status"].clone();
        (st == "failed").then_some(())
    })
    .await;
    let kid = kids(&jwks(&s).await).remove(0);
    let before = get_sub(&s, "pw").await.body(200);
    let want = [
        ("events/a", "glob"),
        ("extra/x", "explicit"),
        ("extra/y", "explicit"),
    ];
    let want: Vec<(String, String)> = want.map(|(p, t)| (p.into(), t.into())).into();
    assert_eq!(links(&before), want);
    s.stop_gracefully();

    // Graceful restart: the subscription, its cursors and links, and the key are back; the
    // pending work is offered again; the retry goes on.
    let failed_before = failing.seen().len();
    let s = Server::start_with(opts()).await;
    assert_eq!(get_sub(&s, "pw").await.body(200), before);
    assert_eq!(kids(&jwks(&s).await), [kid.as_str()]);
    let wh = get_sub(&s, "wh").await.body(200);
    assert_eq!(wh["webhook"]["signing"]["kid"], kid);
    assert_eq!(get_sub(&s, "retrying").await.body(200)["status"], "failed");
    failing.wait_for(failed_before + 1).await;
    eventually("a wake event after the restart", WAIT, async || {
        (wake_events(&s, "wake/pool").await.len() > events).then_some(())
    })
    .await;
    let w = claim(&s, "pw", "w1").await.body(200);
    assert!(gen_of(&w) >= g, "{w}");
    assert_eq!(link(&w, "events/a")["acked_offset"], offset(3));
    assert_eq!(link(&w, "events/a")["tail_offset"], offset(7));
    assert_eq!(link(&w, "extra/x")["tail_offset"], offset(2));
    let acks = [("events/a", 7), ("extra/x", 2)];
    ack(&s, "pw", "ack", &w, &acks, true).await.status(200);

    // A rotated key signs from now on; the old one stays published.
    let rotate = "/v1/stream/__ds/jwks/rotate";
    let rotated = call(&s, Method::POST, rotate, None, "").await.body(200);
    let new_kid = rotated["kid"].as_str().unwrap().to_string();
    assert_ne!(new_kid, kid);
    let keys = jwks(&s).await;
    assert_eq!(kids(&keys), [new_kid.clone(), kid.clone()]);
    let wh = get_sub(&s, "wh").await.body(200);
    assert_eq!(wh["webhook"]["signing"]["kid"], new_kid);
    append(&s, "hooked/a", "x").await;
    let d = hook.wait_for(1).await.remove(0);
    check_signed(&d, &keys, &new_kid);

    // SIGKILL while a worker holds a claim and just after an explicit link was removed.
    append(&s, "events/a", "hi").await; // tail 9
    let del = sub_path("pw", "/streams/extra%2Fy");
    call(&s, Method::DELETE, &del, None, "").await.status(204);
    let w = claim(&s, "pw", "w1").await.body(200);
    let before = get_sub(&s, "pw").await.body(200);
    assert_eq!(link(&before, "extra/x")["acked_offset"], offset(2));
    drop(s);

    let s = Server::start_with(opts()).await;
    assert_eq!(get_sub(&s, "pw").await.body(200), before);
    assert_eq!(kids(&jwks(&s).await), [new_kid, kid]);
    let held = claim(&s, "pw", "w2").await.error(409, "ALREADY_CLAIMED");
    assert_eq!(held.json()["error"]["current_holder"], "w1");
    let r = ack(&s, "pw", "ack", &w, &[("events/a", 9)], true).await;
    assert_eq!(r.body(200), acked_ok(false));
    assert_eq!(acked(&s, "pw", "events/a").await, 9);
}

/// PROTOCOL.md 6.3: `status` is `failed` only "while webhook retry is scheduled after a failed
/// delivery attempt". A receiver that answered an error (or timed out) may still finish the
/// wake through its callback: then nothing is retried, yet the status stays `failed`.
#[tokio::test]
async fn a_callback_after_a_failed_delivery_makes_the_subscription_active() {
    let s = start().await;
    new_stream(&s, "events/a", "text/plain").await;
    let hook = Hook::start(&[], (500, "")).await;
    let r = put_sub(&s, "wh", &webhook("events/*", &hook.url)).await;
    r.status(201);
    append(&s, "events/a", "abc").await;
    let w = hook.wait_for(1).await[0].json();
    eventually("status failed after the 500", WAIT, async || {
        (get_sub(&s, "wh").await.body(200)["status"] == "failed").then_some(())
    })
    .await;
    let r = ack(&s, "wh", "callback", &w, &[("events/a", 3)], true).await;
    assert_eq!(r.body(200), acked_ok(false));
    assert_eq!(acked(&s, "wh", "events/a").await, 3);
    eventually(
        "status active: nothing is left to retry",
        WAIT,
        async || (get_sub(&s, "wh").await.body(200)["status"] == "active").then_some(()),
    )
    .await;
}
