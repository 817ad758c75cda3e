//! API keys over both APIs: no credential, a malformed one, an unknown key, the right key with
//! the wrong scope or outside its prefixes, and the right one; 401 with `WWW-Authenticate:
//! Bearer` or 403 in each API's own error form, nothing changed by a refused request, listings
//! and watch limited to the caller's prefixes, tokens in a query or a cookie for live GETs,
//! the WebSocket, probes, and the start-up rules (a malformed key, a non-loopback bind without
//! auth, the topics aliases).

mod common;

use common::{Options, Server, run_to_exit};
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use std::time::Duration;

const KEYS: &str = "root, reader:r, writer:w, rw:rw, del:d, admin:a, \
    orders:rw+a+d:orders|/v1/stream/orders";

async fn start() -> Server {
    let opts = Options::default()
        .env("DS_STORAGE__MODE", "file-durable")
        .env("DS_STORAGE__DATA_DIR", "data")
        .env("DS_AUTH__API_KEYS", KEYS)
        .env("DS_AUTH__COOKIE_NAME", "riffle_token");
    Server::start_with(opts).await
}

/// Send with `key` as a Bearer token (`None`: no credential); status, headers and body.
async fn call(
    s: &Server,
    m: reqwest::Method,
    path: &str,
    key: Option<&str>,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, reqwest::header::HeaderMap, String) {
    let mut r = s.client.request(m, s.url(path)).body(body.to_string());
    if let Some(k) = key {
        r = r.header("authorization", format!("Bearer {k}"));
    }
    for (k, v) in headers {
        r = r.header(*k, *v);
    }
    let resp = r.send().await.expect("an answer");
    let (status, h) = (resp.status().as_u16(), resp.headers().clone());
    (status, h, resp.text().await.unwrap_or_default())
}

use reqwest::Method as M;
const TEXT: (&str, &str) = ("content-type", "text/plain");
const JSON: (&str, &str) = ("content-type", "application/json");

#[tokio::test]
async fn durable_streams_routes_need_the_right_scope_and_prefix() {
    let s = start().await;
    let p = "/v1/stream/a";
    // No credential, a malformed header, an unknown key: 401 with the challenge, plain text.
    for (key, hdr) in [
        (None, None),
        (None, Some("Basic cm9vdA==")),
        (Some("nope"), None),
    ] {
        let mut hs = vec![TEXT];
        if let Some(h) = hdr {
            hs.push(("authorization", h));
        }
        let (st, h, body) = call(&s, M::PUT, p, key, &hs, "").await;
        assert_eq!(st, 401, "{key:?} {hdr:?}: {body}");
        assert!(
            h["www-authenticate"]
                .to_str()
                .unwrap()
                .starts_with("Bearer")
        );
        assert!(!body.trim_start().starts_with('{'), "plain text: {body}");
    }
    assert_eq!(
        call(&s, M::HEAD, p, Some("root"), &[], "").await.0,
        404,
        "nothing made"
    );
    // Scopes: create and append need write, reads need read, delete needs delete.
    assert_eq!(
        call(&s, M::PUT, p, Some("reader"), &[TEXT], "").await.0,
        403
    );
    assert_eq!(
        call(&s, M::PUT, p, Some("writer"), &[TEXT], "").await.0,
        201
    );
    assert_eq!(
        call(&s, M::POST, p, Some("writer"), &[TEXT], "hi").await.0,
        204
    );
    assert_eq!(
        call(&s, M::POST, p, Some("reader"), &[TEXT], "no").await.0,
        403
    );
    assert_eq!(
        call(
            &s,
            M::GET,
            &format!("{p}?offset=-1"),
            Some("writer"),
            &[],
            ""
        )
        .await
        .0,
        403
    );
    let (st, _, body) = call(
        &s,
        M::GET,
        &format!("{p}?offset=-1"),
        Some("reader"),
        &[],
        "",
    )
    .await;
    assert_eq!(
        (st, body.as_str()),
        (200, "hi"),
        "the refused append stored nothing"
    );
    // A fork needs write here and read on its source.
    let fork = [TEXT, ("stream-forked-from", "/v1/stream/a")];
    assert_eq!(
        call(&s, M::PUT, "/v1/stream/f", Some("writer"), &fork, "")
            .await
            .0,
        403
    );
    assert_eq!(
        call(&s, M::PUT, "/v1/stream/f", Some("rw"), &fork, "")
            .await
            .0,
        201
    );
    // Prefixes: inside and outside.
    let ok = call(
        &s,
        M::PUT,
        "/v1/stream/orders-1",
        Some("orders"),
        &[TEXT],
        "",
    )
    .await;
    assert_eq!(ok.0, 201);
    assert_eq!(
        call(&s, M::PUT, "/v1/stream/b", Some("orders"), &[TEXT], "")
            .await
            .0,
        403
    );
    assert_eq!(call(&s, M::DELETE, p, Some("writer"), &[], "").await.0, 403);
    assert_eq!(call(&s, M::DELETE, p, Some("del"), &[], "").await.0, 204);
    // SSE GETs may carry the token in the query (an EventSource cannot set headers); other
    // requests may not (a query string ends up in logs).
    let sse = s
        .client
        .get(s.url("/v1/stream/f?offset=-1&live=sse&token=reader"))
        .send()
        .await
        .unwrap();
    assert_eq!(sse.status(), 200);
    drop(sse);
    for q in [
        "/v1/stream/f?offset=-1&token=reader",
        "/v1/stream/f?offset=-1&live=long-poll&token=reader",
    ] {
        assert_eq!(call(&s, M::GET, q, None, &[], "").await.0, 401, "{q}");
    }
    let q = "/v1/stream/f?token=writer";
    assert_eq!(call(&s, M::POST, q, None, &[TEXT], "x").await.0, 401);
    let cookie = [("cookie", "a=b; riffle_token=reader")];
    let q = "/v1/stream/f?offset=-1";
    assert_eq!(call(&s, M::GET, q, None, &cookie, "").await.0, 200);
    assert_eq!(call(&s, M::HEAD, q, None, &cookie, "").await.0, 200);
    // A cookie never authorizes a write or a delete (a cross-site form would carry it).
    let root = [("cookie", "riffle_token=root"), TEXT];
    assert_eq!(
        call(&s, M::POST, "/v1/stream/f", None, &root, "x").await.0,
        401
    );
    assert_eq!(
        call(&s, M::DELETE, "/v1/stream/f", None, &root, "").await.0,
        401
    );
    let root_json = [("cookie", "riffle_token=root"), JSON];
    assert_eq!(
        call(&s, M::PUT, "/v0/topics/c", None, &root_json, "{}")
            .await
            .0,
        401
    );
    // Probes are open; metrics need read.
    assert_eq!(call(&s, M::GET, "/healthz", None, &[], "").await.0, 200);
    assert_eq!(call(&s, M::GET, "/v0/health", None, &[], "").await.0, 200);
    assert_eq!(call(&s, M::GET, "/metrics", None, &[], "").await.0, 401);
    assert_eq!(
        call(&s, M::GET, "/metrics", Some("reader"), &[], "")
            .await
            .0,
        200
    );
    // CORS preflights carry no credential.
    let pre = [
        ("origin", "https://x"),
        ("access-control-request-method", "PUT"),
    ];
    assert_eq!(call(&s, M::OPTIONS, p, None, &pre, "").await.0, 204);
}

fn code(body: &str) -> String {
    let v: Value = serde_json::from_str(body).unwrap_or_else(|_| panic!("JSON: {body}"));
    v["error"]["code"].as_str().unwrap_or_default().to_string()
}

#[tokio::test]
async fn topics_routes_need_the_right_scope_and_prefix() {
    let s = start().await;
    let put = |k, t: &str| {
        let t = format!("/v0/topics/{t}");
        let s = &s;
        async move { call(s, M::PUT, &t, k, &[JSON], "{}").await }
    };
    let (st, h, body) = put(None, "t").await;
    assert_eq!((st, code(&body).as_str()), (401, "unauthorized"), "{body}");
    assert_eq!(h["www-authenticate"], "Bearer");
    let (st, _, body) = put(Some("writer"), "t").await;
    assert_eq!(
        (st, code(&body).as_str()),
        (403, "forbidden"),
        "PUT is admin"
    );
    assert_eq!(put(Some("admin"), "t").await.0, 201);
    let recs = r#"{"records":[{"data":1}]}"#;
    assert_eq!(
        call(&s, M::POST, "/v0/topics/t", Some("writer"), &[JSON], recs)
            .await
            .0,
        200
    );
    assert_eq!(
        call(&s, M::POST, "/v0/topics/t", Some("reader"), &[JSON], recs)
            .await
            .0,
        403
    );
    // An inline config on the creating write is configuration: admin.
    let with_config = r#"{"records":[{"data":1}],"config":{"ttl_ms":5}}"#;
    let r = call(
        &s,
        M::POST,
        "/v0/topics/n",
        Some("writer"),
        &[JSON],
        with_config,
    )
    .await;
    assert_eq!(r.0, 403, "{}", r.2);
    assert_eq!(
        call(&s, M::GET, "/v0/topics/n", Some("root"), &[], "")
            .await
            .0,
        404
    );
    let diff = "/v0/topics/t/diff";
    assert_eq!(
        call(&s, M::POST, diff, Some("reader"), &[JSON], "{}")
            .await
            .0,
        200
    );
    assert_eq!(
        call(&s, M::POST, diff, Some("writer"), &[JSON], "{}")
            .await
            .0,
        403
    );
    let del = "/v0/topics/t/delete";
    let before = r#"{"before_seq":2}"#;
    assert_eq!(
        call(&s, M::POST, del, Some("writer"), &[JSON], before)
            .await
            .0,
        403
    );
    assert_eq!(
        call(&s, M::POST, del, Some("del"), &[JSON], before).await.0,
        200
    );
    // Claim needs read and write (past auth, a log topic is not a queue).
    let claim = "/v0/topics/t/claim";
    let node = r#"{"node":"w"}"#;
    assert_eq!(
        call(&s, M::POST, claim, Some("writer"), &[JSON], node)
            .await
            .0,
        403
    );
    let (st, _, body) = call(&s, M::POST, claim, Some("rw"), &[JSON], node).await;
    assert_eq!((st, code(&body).as_str()), (409, "not_a_queue"));

    // Listings show only names inside the caller's prefixes.
    assert_eq!(put(Some("orders"), "orders:eu").await.0, 201);
    assert_eq!(put(Some("orders"), "other").await.0, 403);
    let (_, _, body) = call(&s, M::GET, "/v0/topics", Some("orders"), &[], "").await;
    let v: Value = serde_json::from_str(&body).unwrap();
    let names: Vec<&str> = v["topics"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|t| t["topic"].as_str())
        .collect();
    assert_eq!(names, ["orders:eu"], "{body}");
    // Router source and dest are checked too.
    let router = r#"{"source":"orders:eu","dest":"t"}"#;
    let r = call(&s, M::PUT, "/v0/routers/r", Some("orders"), &[JSON], router).await;
    assert_eq!(r.0, 403, "{}", r.2);
    let router = r#"{"source":"orders:eu","dest":"orders:copy"}"#;
    assert_eq!(
        call(&s, M::PUT, "/v0/routers/r", Some("orders"), &[JSON], router)
            .await
            .0,
        201
    );
    let other = r#"{"source":"t","dest":"t:copy"}"#;
    assert_eq!(
        call(&s, M::PUT, "/v0/routers/o", Some("root"), &[JSON], other)
            .await
            .0,
        201
    );
    let (_, _, body) = call(&s, M::GET, "/v0/routers", Some("orders"), &[], "").await;
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["routers"].as_array().unwrap().len(), 1, "{body}");
    assert_eq!(
        call(&s, M::GET, "/v0/routers/o", Some("orders"), &[], "")
            .await
            .0,
        403
    );

    // Watch: names inside the prefixes only; a session is the creating key's.
    let w = r#"{"topics":{"t":{"tail":true}}}"#;
    assert_eq!(
        call(&s, M::POST, "/v0/watch", Some("orders"), &[JSON], w)
            .await
            .0,
        403
    );
    let (st, _, body) = call(&s, M::POST, "/v0/watch", Some("rw"), &[JSON], w).await;
    assert_eq!(st, 200, "{body}");
    let url = serde_json::from_str::<Value>(&body).unwrap()["stream_url"]
        .as_str()
        .unwrap()
        .to_string();
    let (st, _, _) = call(&s, M::GET, &url, Some("reader"), &[], "").await;
    assert_eq!(st, 401, "another key cannot open the session's stream");
    let r = s
        .client
        .get(s.url(&format!("{url}?token=rw")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "its own key can, by query token");
}

#[tokio::test]
async fn random_and_oversized_authorization_values_never_5xx() {
    let s = start().await;
    let long = "x".repeat(60_000);
    let values = [
        "",
        "Bearer",
        "Bearer ",
        "bearer root",
        "BEARER  root ",
        "Token root",
        "Bearer \u{7f}",
        "Bearer a b c",
        long.as_str(),
    ];
    for v in values {
        let r = s
            .client
            .get(s.url("/v0/topics"))
            .header("authorization", v)
            .send()
            .await;
        let Ok(r) = r else { continue }; // a header the client itself refuses to send
        assert!(r.status().as_u16() < 500, "{v:?}: {}", r.status());
    }
}

#[tokio::test]
async fn websocket_needs_a_credential_and_its_scopes() {
    let s = start().await;
    let base = s.base.replacen("http://", "ws://", 1);
    let refused = tokio_tungstenite::connect_async(format!("{base}/v0/ws")).await;
    match refused {
        Err(tokio_tungstenite::tungstenite::Error::Http(r)) => assert_eq!(r.status(), 401),
        other => panic!("expected a 401, got {other:?}"),
    }
    // A query token is for SSE GETs only: the upgrade needs the header (or the cookie).
    let refused = tokio_tungstenite::connect_async(format!("{base}/v0/ws?token=reader")).await;
    match refused {
        Err(tokio_tungstenite::tungstenite::Error::Http(r)) => assert_eq!(r.status(), 401),
        other => panic!("expected a 401, got {other:?}"),
    }
    let mut ws = common::ws_with_bearer(&format!("{base}/v0/ws"), "reader")
        .await
        .expect("upgrade with a bearer token");
    let publish = json!({ "op": "publish", "topic": "p", "records": [{ "data": 1 }] });
    ws.send(tokio_tungstenite::tungstenite::Message::text(
        publish.to_string(),
    ))
    .await
    .unwrap();
    let m = tokio::time::timeout(Duration::from_secs(5), ws.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let v: Value = serde_json::from_str(m.to_text().unwrap()).unwrap();
    assert_eq!(
        (v["op"].as_str(), v["code"].as_str()),
        (Some("error"), Some("forbidden")),
        "{v}"
    );

    // Scopes are checked per op: a write-only key opens the socket and publishes, and its
    // subscribe is refused.
    let mut ws = common::ws_with_bearer(&format!("{base}/v0/ws"), "writer")
        .await
        .expect("any valid key upgrades");
    let subscribe = json!({ "op": "subscribe", "id": 2, "topic": "p" });
    for m in [publish, subscribe] {
        let m = tokio_tungstenite::tungstenite::Message::text(m.to_string());
        ws.send(m).await.unwrap();
    }
    let mut ops = Vec::new();
    while ops.len() < 2 {
        let m = tokio::time::timeout(Duration::from_secs(5), ws.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        let v: Value = serde_json::from_str(m.to_text().unwrap()).unwrap();
        ops.push((
            v["op"].as_str().map(String::from),
            v["code"].as_str().map(String::from),
        ));
    }
    let want = [
        (Some("ack".into()), None),
        (Some("error".into()), Some("forbidden".into())),
    ];
    assert_eq!(ops, want);
}

/// Routers are configuration: `admin` alone creates one (prefixes permitting), and refusals
/// carry the `/v0` answer's `performance` block like every other JSON answer.
#[tokio::test]
async fn routers_need_admin_and_refusals_are_timed() {
    let s = start().await;
    for t in ["src", "dst"] {
        let (st, _, body) = call(
            &s,
            M::PUT,
            &format!("/v0/topics/{t}"),
            Some("root"),
            &[JSON],
            "{}",
        )
        .await;
        assert_eq!(st, 201, "{body}");
    }
    let router = r#"{"source":"src","dest":"dst"}"#;
    for key in ["reader", "writer", "del"] {
        let (st, _, body) = call(&s, M::PUT, "/v0/routers/r", Some(key), &[JSON], router).await;
        assert_eq!(st, 403, "{key}: {body}");
        let v: Value = serde_json::from_str(&body).unwrap();
        assert!(v["performance"]["server_total_ms"].is_number(), "{body}");
    }
    let (st, _, body) = call(&s, M::PUT, "/v0/routers/r", None, &[JSON], router).await;
    assert_eq!(st, 401, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert!(v["performance"]["server_total_ms"].is_number(), "{body}");
    let (st, _, body) = call(&s, M::PUT, "/v0/routers/r", Some("admin"), &[JSON], router).await;
    assert_eq!(st, 201, "{body}");
    let (st, _, body) = call(&s, M::DELETE, "/v0/routers/r", Some("admin"), &[], "").await;
    assert_eq!(st, 403, "deleting needs `delete`: {body}");
    let (st, _, body) = call(&s, M::DELETE, "/v0/routers/r", Some("del"), &[], "").await;
    assert_eq!(st, 200, "{body}");
}

#[test]
fn start_up_rules() {
    let quick = Duration::from_secs(10);
    // A malformed entry refuses to start, naming its position, never its text.
    let (st, err) = run_to_exit(&[], &[("DS_AUTH__API_KEYS", "good, s3cret:bogus")], quick);
    assert!(!st.success());
    assert!(err.contains("entry 2") && !err.contains("s3cret"), "{err}");
    // A non-loopback bind without auth refuses, unless explicitly allowed.
    let (st, err) = run_to_exit(&["--host", "0.0.0.0", "--port", "0"], &[], quick);
    assert!(
        !st.success() && err.contains("allow_insecure_no_auth"),
        "{err}"
    );
    // The topics variables are aliases; a contradiction refuses, naming both.
    let env = [("DS_AUTH__API_KEYS", "a"), ("TOPICS_API_KEYS", "b")];
    let (st, err) = run_to_exit(&[], &env, quick);
    assert!(
        !st.success() && err.contains("TOPICS_API_KEYS") && err.contains("DS_AUTH__API_KEYS"),
        "{err}"
    );
}

/// With listed CORS origins and auth on, a listed origin may send credentials (its cookie);
/// the challenge header is readable by the page.
#[tokio::test]
async fn cors_allows_credentials_for_listed_origins() {
    let opts = Options::default()
        .env("DS_AUTH__API_KEYS", KEYS)
        .env("DS_AUTH__COOKIE_NAME", "riffle_token")
        .env("DS_HTTP__CORS_ORIGINS", "https://app.example");
    let s = Server::start_with(opts).await;
    let origin = [
        ("origin", "https://app.example"),
        ("cookie", "riffle_token=reader"),
    ];
    let (st, h, _) = call(&s, M::GET, "/v0/topics", None, &origin, "").await;
    assert_eq!(st, 200);
    assert_eq!(h["access-control-allow-origin"], "https://app.example");
    assert_eq!(h["access-control-allow-credentials"], "true");
    let (st, h, _) = call(&s, M::GET, "/v0/topics", None, &[origin[0]], "").await;
    assert_eq!(st, 401);
    let exposed = h["access-control-expose-headers"]
        .to_str()
        .unwrap()
        .to_ascii_lowercase();
    assert!(exposed.contains("www-authenticate"), "{exposed}");
    let other = [
        ("origin", "https://evil.example"),
        ("cookie", "riffle_token=reader"),
    ];
    let (_, h, _) = call(&s, M::GET, "/v0/topics", None, &other, "").await;
    assert!(h.get("access-control-allow-credentials").is_none());
}

/// A subscription's body names are checked like every body name: a key must read each
/// stream it links (every one its pattern can match) and write its wake stream; and only an
/// admin of the `__ds/` namespace rotates the server-wide signing key.
#[tokio::test]
async fn subscriptions_stay_inside_the_keys_names() {
    let opts = Options::default()
        .env(
            "DS_AUTH__API_KEYS",
            "root, tenant:rw+a:mine/|__ds/subscriptions/t1",
        )
        .env("DS_SUBSCRIPTIONS__ALLOW_LOCALHOST_WEBHOOKS", "true");
    let s = Server::start_with(opts).await;
    let sub = "/v1/stream/__ds/subscriptions/t1";
    for body in [
        json!({ "type": "pull-wake", "pattern": "**", "wake_stream": "mine/wake" }),
        json!({ "type": "pull-wake", "pattern": "secret/*", "wake_stream": "mine/wake" }),
        json!({ "type": "pull-wake", "streams": ["secret/a"], "wake_stream": "mine/wake" }),
        json!({ "type": "pull-wake", "pattern": "mine/**", "wake_stream": "victim/wake" }),
    ] {
        let (st, _, text) = call(&s, M::PUT, sub, Some("tenant"), &[JSON], &body.to_string()).await;
        assert_eq!(st, 403, "{body}: {text}");
    }
    let ok = json!({ "type": "pull-wake", "pattern": "mine/**", "wake_stream": "mine/wake" });
    let (st, _, text) = call(&s, M::PUT, sub, Some("tenant"), &[JSON], &ok.to_string()).await;
    assert_eq!(st, 201, "{text}");
    let link = async |stream: &str| {
        let more = json!({ "streams": [stream] }).to_string();
        let url = format!("{sub}/streams");
        call(&s, M::POST, &url, Some("tenant"), &[JSON], &more)
            .await
            .0
    };
    assert_eq!(link("secret/a").await, 403);
    assert_eq!(link("mine/x").await, 204);

    let rotate = "/v1/stream/__ds/jwks/rotate";
    assert_eq!(
        call(&s, M::POST, rotate, Some("tenant"), &[], "").await.0,
        403
    );
    assert_eq!(
        call(&s, M::POST, rotate, Some("root"), &[], "").await.0,
        200
    );
}
