//! JWT gatekeeper tokens on live responses: a Durable Streams SSE response, a `/v0/watch`
//! stream, a `/work` stream, a long-poll and a WebSocket opened with a token about to expire
//! each end at its expiry with the last event (or frame, or 401) that says why, and the token
//! is refused afterwards; a JWT in `?token=` on SSE GETs or the configured cookie on GETs; and
//! hostile Authorization values (and absurd claims) that never get a 5xx.

mod common;

use base64::Engine as _;
use common::{Options, Server};
use futures_util::StreamExt;
use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
use reqwest::Method as M;
use serde_json::{Value, json};
use std::time::{Duration, Instant};
use tokio_tungstenite::tungstenite::Message;

const SECRET: &str = "riffle-jwt-test-secret-0123456789abcdef";
const TEXT: (&str, &str) = ("content-type", "text/plain");
const JSON: (&str, &str) = ("content-type", "application/json");
const SSE: (&str, &str) = ("accept", "text/event-stream");
/// How long any live response may take to end once its token expired.
const BOUND: Duration = Duration::from_secs(15);

fn now() -> u64 {
    jsonwebtoken::get_current_timestamp()
}

fn token(exp: u64, grants: Value) -> String {
    let key = EncodingKey::from_secret(SECRET.as_bytes()).unwrap();
    encode(
        &Header::default(),
        &json!({ "exp": exp, "grants": grants }),
        &key,
    )
    .unwrap()
}

fn hs_with(claims: &Value) -> String {
    let key = EncodingKey::from_secret(SECRET.as_bytes()).unwrap();
    encode(&Header::default(), claims, &key).unwrap()
}

fn root() -> String {
    token(now() + 600, json!([{ "prefix": "", "scopes": "r+w+d+a" }]))
}

async fn start() -> Server {
    let o = Options::default()
        .long_poll_secs(20)
        .env("DS_STORAGE__MODE", "file-durable")
        .env("DS_STORAGE__DATA_DIR", "data")
        .env("DS_AUTH__COOKIE_NAME", "riffle_token")
        .env("DS_AUTH__JWT_HS256_SECRET", SECRET);
    Server::start_with(o).await
}

/// Send with a Bearer token (`None`: none); status, headers and the response.
async fn send(
    s: &Server,
    m: M,
    path: &str,
    t: Option<&str>,
    headers: &[(&str, &str)],
    body: &str,
) -> reqwest::Response {
    let mut r = s.client.request(m, s.url(path)).body(body.to_string());
    if let Some(t) = t {
        r = r.header("authorization", format!("Bearer {t}"));
    }
    for (k, v) in headers {
        r = r.header(*k, *v);
    }
    r.send().await.expect("an answer")
}

async fn ok(s: &Server, m: M, path: &str, headers: &[(&str, &str)], body: &str) -> Value {
    let r = send(s, m, path, Some(&root()), headers, body).await;
    let st = r.status().as_u16();
    let text = r.text().await.unwrap();
    assert!((200..300).contains(&st), "{path}: {st} {text}");
    serde_json::from_str(&text).unwrap_or(Value::Null)
}

/// Read an SSE response to its end (at most `BOUND`); its events as (name, data).
async fn events_to_end(what: &str, r: reqwest::Response) -> Vec<(String, String)> {
    assert_eq!(r.status(), 200, "{what}");
    let body = tokio::time::timeout(BOUND, r.bytes())
        .await
        .unwrap_or_else(|_| panic!("{what}: the response did not end within {BOUND:?}"))
        .unwrap_or_else(|e| panic!("{what}: the response failed: {e}"));
    let text = String::from_utf8(body.to_vec()).expect("UTF-8 SSE");
    let mut out = Vec::new();
    for block in text.split("\n\n") {
        let (mut event, mut data) = (String::new(), Vec::new());
        for line in block.lines() {
            if let Some(v) = line.strip_prefix("event:") {
                event = v.trim().to_string();
            } else if let Some(v) = line.strip_prefix("data:") {
                data.push(v.strip_prefix(' ').unwrap_or(v).to_string());
            }
        }
        if !event.is_empty() || !data.is_empty() {
            out.push((event, data.join("\n")));
        }
    }
    out
}

fn assert_expired_last(what: &str, events: &[(String, String)]) {
    let (event, data) = events.last().unwrap_or_else(|| panic!("{what}: no events"));
    assert_eq!(event, "error", "{what}: {events:?}");
    let v: Value = serde_json::from_str(data).unwrap();
    assert_eq!(v["code"], "credential_expired", "{what}: {data}");
    assert!(v["message"].is_string(), "{what}: {data}");
}

#[tokio::test]
async fn live_responses_end_when_their_token_expires() {
    let s = start().await;
    ok(&s, M::PUT, "/v1/stream/live", &[TEXT], "").await;
    ok(&s, M::POST, "/v1/stream/live", &[TEXT], "first").await;
    ok(&s, M::PUT, "/v0/topics/t", &[JSON], "{}").await;
    ok(&s, M::PUT, "/v0/topics/q", &[JSON], r#"{"type":"queue"}"#).await;
    ok(&s, M::PUT, "/v0/topics/q2", &[JSON], r#"{"type":"queue"}"#).await;
    ok(&s, M::PUT, "/v0/topics/empty", &[JSON], "{}").await;
    ok(
        &s,
        M::POST,
        "/v0/topics/q",
        &[JSON],
        r#"{"records":[{"data":1}]}"#,
    )
    .await;

    let exp = now() + 3;
    let short = token(exp, json!([{ "prefix": "", "scopes": "r+w" }]));
    let t = Some(short.as_str());
    let w = send(
        &s,
        M::POST,
        "/v0/watch",
        t,
        &[JSON],
        r#"{"topics":{"t":{"from_seq":0}}}"#,
    )
    .await;
    assert_eq!(w.status(), 200);
    let url = stream_url(w).await;
    let started = Instant::now();

    let sse = async {
        let r = send(&s, M::GET, "/v1/stream/live?offset=-1&live=sse", t, &[], "").await;
        let ev = events_to_end("stream SSE", r).await;
        assert!(
            ev.iter().any(|(e, d)| e == "data" && d.contains("first")),
            "{ev:?}"
        );
        assert_expired_last("stream SSE", &ev);
    };
    let watch = async {
        let r = send(&s, M::GET, &url, t, &[SSE], "").await;
        assert_expired_last("watch", &events_to_end("watch", r).await);
    };
    let work = async {
        let r = send(&s, M::GET, "/v0/topics/q/work?node=w&max=1", t, &[SSE], "").await;
        let ev = events_to_end("work", r).await;
        assert!(ev.iter().any(|(e, _)| e == "job"), "{ev:?}");
        assert_expired_last("work", &ev);
    };
    let long_poll = async {
        let path = "/v1/stream/live?offset=now&live=long-poll";
        let r = tokio::time::timeout(BOUND, send(&s, M::GET, path, t, &[], ""))
            .await
            .expect("the long-poll answers within the bound");
        assert_eq!(r.status(), 401, "a long-poll waiting at expiry");
        let c = r.headers()["www-authenticate"]
            .to_str()
            .unwrap()
            .to_string();
        assert!(c.starts_with("Bearer error=\"invalid_token\""), "{c}");
        // It waited for the expiry (the long-poll timeout is 20 s).
        assert!(
            now() + 1 >= exp,
            "answered at {} before the expiry {exp}",
            now()
        );
    };
    let ws = async {
        let base = s.base.replacen("http://", "ws://", 1);
        let mut ws = common::ws_with_bearer(&format!("{base}/v0/ws"), &short)
            .await
            .expect("a WebSocket with a bearer JWT");
        let sub = json!({ "op": "subscribe", "topic": "t", "tail": true });
        futures_util::SinkExt::send(&mut ws, Message::text(sub.to_string()))
            .await
            .unwrap();
        let mut frames = Vec::new();
        let close = loop {
            let m = tokio::time::timeout(BOUND, ws.next())
                .await
                .expect("the WebSocket ends within the bound");
            match m {
                Some(Ok(Message::Close(c))) => break c,
                Some(Ok(Message::Text(t))) => {
                    frames.push(serde_json::from_str::<Value>(t.as_str()).unwrap())
                }
                Some(Ok(_)) => {}
                other => panic!("no Close frame: {other:?} after {frames:?}"),
            }
        };
        let last = frames.last().expect("a last text frame");
        assert_eq!(
            (last["op"].as_str(), last["code"].as_str()),
            (Some("error"), Some("credential_expired")),
            "{frames:?}"
        );
        let close = close.expect("a close code");
        assert_eq!(u16::from(close.code), 1008, "{close:?}");
    };
    // The `/v0` long-polls too: a diff and a claim waiting at expiry answer 401, not what
    // arrives later (a record, a job leased to an expired credential).
    let v0_poll = |path: &'static str, body: &'static str| {
        let s = &s;
        async move {
            let r = tokio::time::timeout(BOUND, send(s, M::POST, path, t, &[JSON], body))
                .await
                .expect("the long-poll answers within the bound");
            let st = r.status();
            let body = r.text().await.unwrap_or_default();
            assert_eq!(st, 401, "{path} waiting at expiry: {body}");
            assert!(now() + 1 >= exp, "{path} answered before the expiry {exp}");
        }
    };
    let v0_polls = async {
        tokio::join!(
            v0_poll("/v0/topics/empty/diff", r#"{"from_seq":0,"wait_ms":20000}"#),
            v0_poll("/v0/topics/q2/claim", r#"{"node":"late","wait_ms":20000}"#),
        )
    };
    let late_writes = async {
        tokio::time::sleep(Duration::from_millis(3500)).await;
        for path in ["/v0/topics/empty", "/v0/topics/q2"] {
            ok(
                &s,
                M::POST,
                path,
                &[JSON],
                r#"{"records":[{"data":"late"}]}"#,
            )
            .await;
        }
    };
    tokio::join!(sse, watch, work, long_poll, ws, v0_polls, late_writes);
    assert!(started.elapsed() < BOUND + Duration::from_secs(2));

    // The token is refused from now on, everywhere: right away (RFC 7519 4.1.4: not accepted
    // "on or after" `exp`, and the live responses just said it expired) and a second later.
    let paths = [
        (M::GET, "/v1/stream/live?offset=-1", vec![]),
        (M::GET, url.as_str(), vec![SSE]),
        (M::GET, "/v0/topics", vec![]),
    ];
    let mut right_away = Vec::new();
    for (m, path, hs) in &paths {
        let r = send(&s, m.clone(), path, t, hs, "").await;
        right_away.push((path.to_string(), r.status().as_u16(), now()));
    }
    tokio::time::sleep(Duration::from_millis(1100)).await;
    for (m, path, hs) in &paths {
        let r = send(&s, m.clone(), path, t, hs, "").await;
        assert_eq!(r.status(), 401, "{path}, a second after the expiry");
    }
    // The /work connection's lease went with it.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let v = ok(&s, M::GET, "/v0/topics/q?touch=false", &[], "").await;
        if v["queue"]["in_flight"] == 0 {
            break;
        }
        assert!(Instant::now() < deadline, "the lease was kept: {v}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for (path, st, at) in right_away {
        assert_eq!(
            st, 401,
            "{path} right after the live responses ended (now {at}, exp {exp})"
        );
    }
}

#[tokio::test]
async fn a_jwt_in_the_query_or_the_cookie_opens_live_gets() {
    let s = start().await;
    ok(&s, M::PUT, "/v1/stream/c/x", &[TEXT], "").await;
    ok(&s, M::POST, "/v1/stream/c/x", &[TEXT], "hello").await;
    ok(&s, M::PUT, "/v0/topics/c-t", &[JSON], "{}").await;
    let reader = token(now() + 600, json!([{ "prefix": "c", "scopes": "r" }]));
    let writer = token(now() + 600, json!([{ "prefix": "c", "scopes": "w" }]));
    let expired = token(now() - 60, json!([{ "prefix": "c", "scopes": "r" }]));

    // ?token= on an SSE GET; not on a catch-up GET or a long-poll (their clients can set
    // headers, and a query string ends up in logs).
    let sse = |t: &str| format!("/v1/stream/c/x?offset=-1&live=sse&token={t}");
    let r = send(&s, M::GET, &sse(&reader), None, &[], "").await;
    assert_eq!(r.status(), 200);
    assert!(
        r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream")
    );
    drop(r);
    for path in [
        format!("/v1/stream/c/x?offset=-1&token={reader}"),
        format!("/v1/stream/c/x?offset=-1&live=long-poll&token={reader}"),
    ] {
        assert_eq!(send(&s, M::GET, &path, None, &[], "").await.status(), 401);
    }
    // Scopes and expiry hold for a query token too.
    assert_eq!(
        send(&s, M::GET, &sse(&writer), None, &[], "")
            .await
            .status(),
        403
    );
    assert_eq!(
        send(&s, M::GET, &sse(&expired), None, &[], "")
            .await
            .status(),
        401
    );
    // Not on a write.
    let path = format!("/v1/stream/c/x?token={writer}");
    assert_eq!(
        send(&s, M::POST, &path, None, &[TEXT], "no").await.status(),
        401
    );

    // The cookie, on both APIs.
    let cookie = format!("a=b; riffle_token={reader}");
    let c = [("cookie", cookie.as_str())];
    assert_eq!(
        send(&s, M::GET, "/v1/stream/c/x?offset=-1", None, &c, "")
            .await
            .status(),
        200
    );
    assert_eq!(
        send(&s, M::GET, "/v0/topics", None, &c, "").await.status(),
        200
    );
    let bad = format!("riffle_token={expired}");
    let r = send(
        &s,
        M::GET,
        "/v0/topics",
        None,
        &[("cookie", bad.as_str())],
        "",
    )
    .await;
    assert_eq!(r.status(), 401);

    // A watch session made with a Bearer header opens with the same JWT as ?token= or a cookie,
    // as an EventSource would.
    let body = r#"{"topics":{"c-t":{"from_seq":0}}}"#;
    let r = send(&s, M::POST, "/v0/watch", Some(&reader), &[JSON], body).await;
    assert_eq!(r.status(), 200);
    let url = stream_url(r).await;
    let r = send(
        &s,
        M::GET,
        &format!("{url}?token={reader}"),
        None,
        &[SSE],
        "",
    )
    .await;
    assert_eq!(r.status(), 200);
    drop(r);
    let r = send(&s, M::GET, &url, None, &[SSE, c[0]], "").await;
    assert_eq!(r.status(), 200);
    drop(r);
    // The WebSocket with the cookie (a browser's WebSocket cannot set headers either), and
    // not with a query token (SSE GETs only).
    let base = s.base.replacen("http://", "ws://", 1);
    let ws = tokio_tungstenite::connect_async(format!("{base}/v0/ws?token={reader}")).await;
    assert!(ws.is_err(), "a query token opened a WebSocket");
    let mut req = tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(
        format!("{base}/v0/ws"),
    )
    .unwrap();
    req.headers_mut().insert("cookie", cookie.parse().unwrap());
    let ws = tokio_tungstenite::connect_async(req).await;
    assert!(ws.is_ok(), "{:?}", ws.err());
}

// ---- 8. hostile Authorization values ---------------------------------------------------------------

fn b64(s: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s)
}

#[tokio::test]
async fn random_and_oversized_authorization_values_never_5xx() {
    let s = start().await;
    ok(&s, M::PUT, "/v1/stream/f", &[TEXT], "").await;
    let mut seed = 0x9E37_79B9_7F4A_7C15u64;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let mut values: Vec<String> = Vec::new();
    for _ in 0..40 {
        let len = (next() % 300) as usize;
        let v: String = (0..len)
            .map(|_| char::from(0x20 + (next() % 95) as u8))
            .collect();
        values.push(format!("Bearer {v}"));
        values.push(v);
    }
    for _ in 0..20 {
        let part = |n: &mut dyn FnMut() -> u64| {
            let bytes: Vec<u8> = (0..(n() % 64)).map(|_| n() as u8).collect();
            b64(&bytes)
        };
        values.push(format!(
            "Bearer {}.{}.{}",
            part(&mut next),
            part(&mut next),
            part(&mut next)
        ));
    }
    let g = json!([{ "prefix": "", "scopes": "r+w+d+a" }]);
    let none = format!(
        "{}.{}.",
        b64(br#"{"alg":"none","typ":"JWT"}"#),
        b64(json!({ "exp": now() + 600, "grants": g })
            .to_string()
            .as_bytes())
    );
    let deep = format!("{}{}", "[".repeat(5000), "]".repeat(5000));
    values.extend([
        "Bearer ...".to_string(),
        "Bearer a.b.c".to_string(),
        format!(
            "Bearer {}.{}.{}",
            b64(b"{not json"),
            b64(b"[1,2"),
            b64(b"sig")
        ),
        format!(
            "Bearer {}.{}.{}",
            b64(br#"{"alg":"HS256"}"#),
            b64(b"{\"exp\":"),
            b64(b"x")
        ),
        format!("Bearer {none}"),
        format!("Bearer {}", none.to_lowercase()),
        format!("Bearer {}", "x".repeat(60 * 1024)),
        format!(
            "Bearer {}.{}.{}",
            "a".repeat(20 * 1024),
            "b".repeat(20 * 1024),
            "c".repeat(20 * 1024)
        ),
    ]);
    // Signed with the right secret, but with claims of every wrong shape.
    for c in [
        json!({ "exp": "soon", "grants": g }),
        json!({ "exp": -1, "grants": g }),
        json!({ "exp": 1e300, "grants": g }),
        json!({ "exp": now() + 600, "grants": "all" }),
        json!({ "exp": now() + 600, "grants": [{ "prefix": 5, "scopes": "r" }] }),
        json!({ "exp": now() + 600, "grants": [{ "prefix": "", "name": "x", "scopes": "r" }] }),
        json!({ "exp": now() + 600, "grants": [{ "prefix": "", "scopes": [] }] }),
        json!({ "exp": now() + 600, "grants": [{ "prefix": "", "scopes": "r+fly" }] }),
    ] {
        values.push(format!("Bearer {}", hs_with(&c)));
    }
    let deep_claims = format!("{{\"exp\":{},\"grants\":{deep}}}", now() + 600);
    let deep_token = {
        // Signed by hand: a 5000-deep claim cannot go through serde_json's serializer.
        let msg = format!(
            "{}.{}",
            b64(br#"{"alg":"HS256","typ":"JWT"}"#),
            b64(deep_claims.as_bytes())
        );
        let key = EncodingKey::from_secret(SECRET.as_bytes()).unwrap();
        let sig = jsonwebtoken::crypto::sign(msg.as_bytes(), &key, Algorithm::HS256).unwrap();
        format!("{msg}.{sig}")
    };
    values.push(format!("Bearer {deep_token}"));
    for v in &values {
        for (m, path, body) in [
            (M::GET, "/v0/topics", ""),
            (M::POST, "/v0/topics/f", r#"{"records":[{"data":1}]}"#),
            (M::GET, "/v1/stream/f?offset=-1", ""),
            (M::POST, "/v1/stream/f", "x"),
        ] {
            let r = s
                .client
                .request(m.clone(), s.url(path))
                .header("authorization", v.as_str())
                .header(
                    "content-type",
                    if path.starts_with("/v0") {
                        "application/json"
                    } else {
                        "text/plain"
                    },
                )
                .body(body)
                .send()
                .await;
            let Ok(r) = r else { continue }; // a value the client itself refuses to send
            let st = r.status().as_u16();
            let short: String = v.chars().take(80).collect();
            assert!(st < 500, "{m} {path} with {short:?}: {st}");
            assert!(
                matches!(st, 400 | 401 | 431),
                "{m} {path} with {short:?}: {st}"
            );
        }
    }
    s.client
        .get(s.url("/healthz"))
        .send()
        .await
        .expect("still serving");
}

/// A correctly signed token whose `exp` is as far away as a u64 goes is a valid token; live
/// responses compute their end from it and must not fail on it.
#[tokio::test]
async fn a_far_future_exp_on_live_responses_never_5xx() {
    let s = Server::start_with(
        Options::default()
            .long_poll_secs(1)
            .env("DS_AUTH__JWT_HS256_SECRET", SECRET),
    )
    .await;
    let g = json!([{ "prefix": "", "scopes": "r+w" }]);
    let mut failures = Vec::new();
    for exp in [
        json!(u64::MAX),
        json!(1u64 << 62),
        json!(now() + 100 * 365 * 86_400),
    ] {
        let t = hs_with(&json!({ "exp": exp, "grants": g }));
        let _ = send(&s, M::PUT, "/v1/stream/far", Some(&t), &[TEXT], "").await;
        for q in ["offset=now&live=long-poll", "offset=-1&live=sse"] {
            let r = s
                .client
                .get(s.url(&format!("/v1/stream/far?{q}")))
                .header("authorization", format!("Bearer {t}"))
                .timeout(Duration::from_secs(5))
                .send()
                .await;
            match r {
                Ok(r) if r.status().as_u16() < 500 => {}
                Ok(r) => failures.push(format!("exp {exp}, {q}: {}", r.status())),
                Err(e) => failures.push(format!("exp {exp}, {q}: no answer: {e}")),
            }
        }
    }
    assert_eq!(failures, Vec::<String>::new());
    s.client
        .get(s.url("/healthz"))
        .send()
        .await
        .expect("still serving");
}

/// The `stream_url` of a `POST /v0/watch` answer.
async fn stream_url(r: reqwest::Response) -> String {
    let v: Value = serde_json::from_str(&r.text().await.expect("a body")).expect("JSON");
    v["stream_url"].as_str().expect("stream_url").to_string()
}
