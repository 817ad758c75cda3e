//! JWT gatekeeper tokens over both APIs: an auth matrix of every route (no credential, a
//! malformed header, an unknown API key, an expired token, a wrong signature, the wrong scope,
//! names outside the grants, the right token) with nothing changed by a refused request;
//! listings and watches that never show names outside the grants; watch sessions bound to
//! their token; RS256 / ES256 / EdDSA public keys and a JWKS file (key confusion refused);
//! `iss`, `aud` and `nbf`; and the start-up refusals of a bad JWT configuration. Live responses
//! ending at the token's expiry, and hostile Authorization values, are in `auth_jwt_live.rs`.

mod common;

use base64::Engine as _;
use common::{Options, Server, TempDir, run_to_exit};
use jsonwebtoken::{Algorithm, EncodingKey, Header, encode, jwk::Jwk, jwk::JwkSet};
use reqwest::Method as M;
use serde_json::{Value, json};
use std::time::Duration;

const SECRET: &str = "riffle-jwt-test-secret-0123456789abcdef";
const TEXT: (&str, &str) = ("content-type", "text/plain");
const JSON: (&str, &str) = ("content-type", "application/json");

fn now() -> u64 {
    jsonwebtoken::get_current_timestamp()
}

fn fixture(name: &str) -> String {
    format!("{}/tests/fixtures/jwt/{name}", env!("CARGO_MANIFEST_DIR"))
}

fn pem(name: &str) -> Vec<u8> {
    std::fs::read(fixture(name)).expect("a fixture key")
}

fn sign(alg: Algorithm, key: &EncodingKey, kid: Option<&str>, claims: &Value) -> String {
    let mut h = Header::new(alg);
    h.kid = kid.map(str::to_string);
    encode(&h, claims, key).expect("a signed token")
}

fn hs_with(secret: &[u8], claims: &Value) -> String {
    let key = EncodingKey::from_secret(secret).unwrap();
    sign(Algorithm::HS256, &key, None, claims)
}

/// An HS256 token (the server's secret) with these grants, valid for ten minutes.
fn hs(grants: Value) -> String {
    hs_with(
        SECRET.as_bytes(),
        &json!({ "exp": now() + 600, "grants": grants }),
    )
}

/// A token granting `scopes` on names starting with `prefix`.
fn on(prefix: &str, scopes: &str) -> String {
    hs(json!([{ "prefix": prefix, "scopes": scopes }]))
}

fn root() -> String {
    on("", "r+w+d+a")
}

fn bearer(t: &str) -> String {
    format!("Bearer {t}")
}

/// Send with `auth` as the whole Authorization value (`None`: none); status, headers, body.
async fn call(
    s: &Server,
    m: M,
    path: &str,
    auth: Option<&str>,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, reqwest::header::HeaderMap, String) {
    let mut r = s.client.request(m, s.url(path)).body(body.to_string());
    if let Some(a) = auth {
        r = r.header("authorization", a);
    }
    for (k, v) in headers {
        r = r.header(*k, *v);
    }
    let resp = r.send().await.expect("an answer");
    let (status, h) = (resp.status().as_u16(), resp.headers().clone());
    (status, h, resp.text().await.unwrap_or_default())
}

/// `call` with a Bearer token; the status and body.
async fn as_(
    s: &Server,
    t: &str,
    m: M,
    path: &str,
    hs: &[(&str, &str)],
    body: &str,
) -> (u16, String) {
    let (st, _, b) = call(s, m, path, Some(&bearer(t)), hs, body).await;
    (st, b)
}

/// As an all-powerful token; asserts the status.
async fn root_does(s: &Server, m: M, path: &str, hs: &[(&str, &str)], body: &str, want: u16) {
    let (st, b) = as_(s, &root(), m.clone(), path, hs, body).await;
    assert_eq!(st, want, "{m} {path}: {b}");
}

fn code(body: &str) -> String {
    let v: Value = serde_json::from_str(body).unwrap_or_else(|_| panic!("JSON: {body}"));
    v["error"]["code"].as_str().unwrap_or_default().to_string()
}

fn json_of(body: &str) -> Value {
    serde_json::from_str(body).unwrap_or_else(|_| panic!("JSON: {body}"))
}

async fn start(extra: &[(&str, &str)]) -> Server {
    let mut o = Options::default()
        .env("DS_STORAGE__MODE", "file-durable")
        .env("DS_STORAGE__DATA_DIR", "data")
        .env("DS_AUTH__COOKIE_NAME", "riffle_token");
    for (k, v) in extra {
        o = o.env(k, v);
    }
    Server::start_with(o).await
}

async fn start_hs() -> Server {
    start(&[
        ("DS_AUTH__JWT_HS256_SECRET", SECRET),
        ("DS_AUTH__API_KEYS", "apikey-reader:r"),
    ])
    .await
}

// ---- 1. the matrix ------------------------------------------------------------------------

const STREAMS: [&str; 5] = ["m/s1", "m/s2", "m/src", "m/new", "m/fork"];

/// Everything a request could change, read with an all-powerful token.
async fn fingerprint(s: &Server) -> Value {
    let root = root();
    let mut out = serde_json::Map::new();
    for n in STREAMS {
        let (st, h, _) = call(
            s,
            M::HEAD,
            &format!("/v1/stream/{n}"),
            Some(&bearer(&root)),
            &[],
            "",
        )
        .await;
        let next = h
            .get("stream-next-offset")
            .map(|v| v.to_str().unwrap().to_string());
        out.insert(n.into(), json!([st, next]));
    }
    let (_, body) = as_(s, &root, M::GET, "/v0/topics?page_size=1000", &[], "").await;
    let mut list = json_of(&body);
    list.as_object_mut().unwrap().remove("performance");
    for t in list["topics"].as_array_mut().unwrap() {
        t.as_object_mut().unwrap().remove("effective_priority");
        let name = t["topic"].as_str().unwrap().to_string();
        let diff = r#"{"from_seq":0,"limit":1000}"#;
        let (_, d) = as_(
            s,
            &root,
            M::POST,
            &format!("/v0/topics/{name}/diff"),
            &[JSON],
            diff,
        )
        .await;
        let (_, info) = as_(
            s,
            &root,
            M::GET,
            &format!("/v0/topics/{name}?touch=false"),
            &[],
            "",
        )
        .await;
        out.insert(format!("diff {name}"), json_of(&d)["records"].clone());
        out.insert(format!("queue {name}"), json_of(&info)["queue"].clone());
    }
    out.insert("topics".into(), list);
    let (_, body) = as_(s, &root, M::GET, "/v0/routers", &[], "").await;
    let mut routers = json_of(&body);
    routers.as_object_mut().unwrap().remove("performance");
    out.insert("routers".into(), routers);
    Value::Object(out)
}

/// The fingerprint once it holds still (routers copy in the background).
async fn settled(s: &Server) -> Value {
    let mut a = fingerprint(s).await;
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let b = fingerprint(s).await;
        if a == b {
            return b;
        }
        a = b;
    }
    panic!("the state never settled: {a}");
}

struct Route {
    m: M,
    path: &'static str,
    headers: Vec<(&'static str, &'static str)>,
    body: &'static str,
    /// The scopes the route needs on its names (`+`-separated letters).
    need: &'static str,
    /// The answer to the right scope outside the grants: 403, or 200 for what only filters.
    outside: u16,
    ok: u16,
}

fn route(m: M, path: &'static str, body: &'static str, need: &'static str, ok: u16) -> Route {
    let headers = if path.starts_with("/v0") && !body.is_empty() {
        vec![JSON]
    } else if path.starts_with("/v1") && matches!(m, M::PUT | M::POST) {
        vec![TEXT]
    } else {
        vec![]
    };
    Route {
        m,
        path,
        headers,
        body,
        need,
        outside: 403,
        ok,
    }
}

fn routes() -> Vec<Route> {
    let mut fork = route(M::PUT, "/v1/stream/m/fork", "", "r+w", 201);
    fork.headers
        .push(("stream-forked-from", "/v1/stream/m/src"));
    let mut list = vec![
        route(M::PUT, "/v1/stream/m/new", "", "w", 201),
        route(M::POST, "/v1/stream/m/s1", "more", "w", 204),
        route(M::GET, "/v1/stream/m/s1?offset=-1", "", "r", 200),
        route(M::HEAD, "/v1/stream/m/s1", "", "r", 200),
        fork,
        route(M::DELETE, "/v1/stream/m/s2", "", "d", 204),
        route(M::PUT, "/v0/topics/m-new", "{}", "a", 201),
        route(M::GET, "/v0/topics/m-t1?touch=false", "", "r", 200),
        route(
            M::POST,
            "/v0/topics/m-t1",
            r#"{"records":[{"data":2}]}"#,
            "w",
            200,
        ),
        route(M::POST, "/v0/topics/m-t1/diff", "{}", "r", 200),
        route(
            M::POST,
            "/v0/topics/m-t1/delete",
            r#"{"before_seq":2}"#,
            "d",
            200,
        ),
        route(M::DELETE, "/v0/topics/m-del", "", "d", 200),
        route(M::GET, "/v0/topics", "", "r", 200),
        route(
            M::PUT,
            "/v0/routers/m-r2",
            r#"{"source":"m-quiet","dest":"m-copy2"}"#,
            "a",
            201,
        ),
        route(M::GET, "/v0/routers/m-r1", "", "r", 200),
        route(M::GET, "/v0/routers", "", "r", 200),
        route(M::DELETE, "/v0/routers/m-r1", "", "d", 200),
        route(
            M::POST,
            "/v0/watch",
            r#"{"topics":{"m-t1":{"from_seq":0}}}"#,
            "r",
            200,
        ),
        route(
            M::POST,
            "/v0/topics/m-q/claim",
            r#"{"node":"w","max":1}"#,
            "r+w",
            200,
        ),
        route(
            M::POST,
            "/v0/topics/m-q/extend",
            r#"{"node":"w","seqs":[1],"lease_ms":60000}"#,
            "w",
            200,
        ),
        route(
            M::POST,
            "/v0/topics/m-q/nack",
            r#"{"node":"w","seqs":[1]}"#,
            "w",
            200,
        ),
        route(
            M::POST,
            "/v0/topics/m-q/ack",
            r#"{"node":"w","seqs":[1]}"#,
            "w",
            200,
        ),
        route(M::GET, "/metrics", "", "r", 200),
    ];
    for r in &mut list {
        if matches!(r.path, "/v0/topics" | "/v0/routers" | "/metrics") {
            r.outside = 200; // listings filter; metrics name nothing
        }
    }
    list
}

/// A refused row's answer: the status, the challenge and the API's own error form.
fn check_refusal(
    r: &Route,
    row: &str,
    want: u16,
    presented: bool,
    got: &(u16, reqwest::header::HeaderMap, String),
) {
    let (st, h, body) = got;
    let what = format!("{} {} [{row}]", r.m, r.path);
    assert_eq!(*st, want, "{what}: {body}");
    if want == 401 {
        let c = h
            .get("www-authenticate")
            .map(|v| v.to_str().unwrap())
            .unwrap_or("");
        assert!(c.starts_with("Bearer"), "{what}: challenge {c:?}");
        if presented {
            assert!(
                c.starts_with("Bearer error=\"invalid_token\""),
                "{what}: challenge {c:?}"
            );
        }
    }
    if r.m == M::HEAD || !(400..500).contains(st) {
        return;
    }
    if r.path.starts_with("/v0") {
        let want_code = if want == 401 {
            "unauthorized"
        } else {
            "forbidden"
        };
        assert_eq!(code(body), want_code, "{what}");
    } else if r.path.starts_with("/v1") {
        assert!(
            !body.trim_start().starts_with('{'),
            "{what}: plain text, got {body}"
        );
    }
}

#[tokio::test]
async fn every_route_needs_the_right_scope_on_its_names() {
    let s = start_hs().await;
    // The state every row starts from, made by an all-powerful token.
    for n in ["m/s1", "m/s2", "m/src"] {
        root_does(&s, M::PUT, &format!("/v1/stream/{n}"), &[TEXT], "", 201).await;
    }
    root_does(&s, M::POST, "/v1/stream/m/s1", &[TEXT], "hello", 204).await;
    for t in ["m-t1", "m-del", "m-quiet", "m-rsrc"] {
        root_does(&s, M::PUT, &format!("/v0/topics/{t}"), &[JSON], "{}", 201).await;
    }
    let recs = r#"{"records":[{"data":1},{"data":2},{"data":3}]}"#;
    root_does(&s, M::POST, "/v0/topics/m-t1", &[JSON], recs, 200).await;
    root_does(
        &s,
        M::PUT,
        "/v0/topics/m-q",
        &[JSON],
        r#"{"type":"queue"}"#,
        201,
    )
    .await;
    root_does(&s, M::POST, "/v0/topics/m-q", &[JSON], recs, 200).await;
    let r1 = r#"{"source":"m-rsrc","dest":"m-copy1"}"#;
    root_does(&s, M::PUT, "/v0/routers/m-r1", &[JSON], r1, 201).await;

    let expired = hs_with(
        SECRET.as_bytes(),
        &json!({ "exp": now() - 120, "grants": [{ "prefix": "", "scopes": "r+w+d+a" }] }),
    );
    let forged = hs_with(
        b"not-the-server-secret-but-32-bytes-long!",
        &json!({ "exp": now() + 600, "grants": [{ "prefix": "", "scopes": "r+w+d+a" }] }),
    );
    for r in routes() {
        let send = |auth: Option<String>| {
            let (s, r) = (&s, &r);
            async move { call(s, r.m.clone(), r.path, auth.as_deref(), &r.headers, r.body).await }
        };
        let before = settled(&s).await;
        // 401: nothing, or nothing usable.
        for (row, auth, presented) in [
            ("no credential", None, false),
            ("Basic", Some("Basic cm9vdDpyb290".to_string()), false),
            ("empty Bearer", Some("Bearer".to_string()), false),
            ("unknown API key", Some(bearer("nope")), true),
            ("expired", Some(bearer(&expired)), true),
            ("wrong secret", Some(bearer(&forged)), true),
        ] {
            check_refusal(&r, row, 401, presented, &send(auth).await);
        }
        // 403: a valid token without one of the scopes needed (every scope but that one).
        for missing in r.need.split('+') {
            let others: Vec<&str> = ["r", "w", "d", "a"]
                .into_iter()
                .filter(|x| *x != missing)
                .collect();
            let t = on("", &others.join("+"));
            check_refusal(
                &r,
                &format!("without {missing}"),
                403,
                true,
                &send(Some(bearer(&t))).await,
            );
        }
        // The right scopes, but on other names: another prefix, an exact name that is only a
        // beginning of the route's names.
        let other = on("z", r.need);
        let got = send(Some(bearer(&other))).await;
        check_refusal(&r, "other prefix", r.outside, true, &got);
        let exact = hs(json!([{ "name": "m", "scopes": r.need }]));
        let got = send(Some(bearer(&exact))).await;
        check_refusal(&r, "exact name m", r.outside, true, &got);
        let after = settled(&s).await;
        assert_eq!(
            before, after,
            "{} {}: a refused request changed the state",
            r.m, r.path
        );
        // The right token: the needed scopes on the prefix of the route's names.
        let right = on("m", r.need);
        let (st, _, body) = send(Some(bearer(&right))).await;
        assert_eq!(st, r.ok, "{} {} with {}: {body}", r.m, r.path, r.need);
    }
    // A fork with write on its name but no read on its source is refused too.
    let t = hs(json!([{ "prefix": "m/f", "scopes": "r+w" }, { "prefix": "m/src", "scopes": "w" }]));
    let fork = [TEXT, ("stream-forked-from", "/v1/stream/m/src")];
    assert_eq!(
        as_(&s, &t, M::PUT, "/v1/stream/m/f2", &fork, "").await.0,
        403
    );
    // An API key works next to the JWT configuration.
    let (st, _, _) = call(
        &s,
        M::GET,
        "/v0/topics",
        Some("Bearer apikey-reader"),
        &[],
        "",
    )
    .await;
    assert_eq!(st, 200);
}

// ---- 2. and 3. listings and watches ------------------------------------------------------------

fn names(v: &Value, list: &str, field: &str) -> Vec<String> {
    v[list]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t[field].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test]
async fn listings_and_watches_never_show_names_outside_the_grants() {
    let s = start_hs().await;
    for t in ["a-1", "a-2", "b-1", "b-2", "c", "cx"] {
        root_does(&s, M::PUT, &format!("/v0/topics/{t}"), &[JSON], "{}", 201).await;
    }
    for (r, src, dest) in [
        ("ra", "a-1", "a-copy"),
        ("rb", "b-1", "b-copy"),
        ("rx", "a-2", "b-x"),
    ] {
        let def = json!({ "source": src, "dest": dest }).to_string();
        root_does(&s, M::PUT, &format!("/v0/routers/{r}"), &[JSON], &def, 201).await;
    }
    let t = hs(json!([{ "prefix": "a-", "scopes": "r" }, { "name": "c", "scopes": "r" }]));
    let shown = ["a-1", "a-2", "a-copy", "c"];
    let (st, body) = as_(&s, &t, M::GET, "/v0/topics", &[], "").await;
    assert_eq!(
        (st, names(&json_of(&body), "topics", "topic")),
        (200, shown.map(String::from).to_vec())
    );
    let (_, body) = as_(&s, &t, M::GET, "/v0/topics?prefix=b", &[], "").await;
    assert_eq!(
        names(&json_of(&body), "topics", "topic"),
        Vec::<String>::new(),
        "{body}"
    );
    // Page by page, neither the pages nor their cursors name anything else.
    let mut cursor: Option<String> = None;
    let (mut seen, mut leaks) = (Vec::new(), Vec::new());
    for _ in 0..20 {
        let q = match &cursor {
            Some(c) => format!("/v0/topics?page_size=1&cursor={c}"),
            None => "/v0/topics?page_size=1".to_string(),
        };
        let (st, body) = as_(&s, &t, M::GET, &q, &[], "").await;
        assert_eq!(st, 200, "{body}");
        let v = json_of(&body);
        seen.extend(names(&v, "topics", "topic"));
        let Some(c) = v["next_cursor"].as_str() else {
            break;
        };
        let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(c.trim_end_matches('='))
            .or_else(|_| base64::engine::general_purpose::STANDARD.decode(c))
            .unwrap_or_default();
        let text = String::from_utf8_lossy(&raw).to_string();
        for hidden in ["b-1", "b-2", "b-copy", "b-x", "cx"] {
            if text.contains(&format!("\"{hidden}\"")) {
                leaks.push(text.clone()); // asserted last, so the rest runs
            }
        }
        cursor = Some(c.to_string());
    }
    assert_eq!(seen, shown.map(String::from).to_vec());
    // Routers: only those whose source and dest are both readable.
    let (_, body) = as_(&s, &t, M::GET, "/v0/routers", &[], "").await;
    assert_eq!(
        names(&json_of(&body), "routers", "router"),
        ["ra"],
        "{body}"
    );
    for r in ["rb", "rx"] {
        let (st, body) = as_(&s, &t, M::GET, &format!("/v0/routers/{r}"), &[], "").await;
        assert_eq!((st, code(&body).as_str()), (403, "forbidden"), "{r}");
    }
    // Watches: a name or a prefix outside the grants is refused, even beside allowed ones.
    for w in [
        json!({ "topics": { "b-1": { "from_seq": 0 } } }),
        json!({ "topics": { "a-1": { "from_seq": 0 }, "b-1": { "from_seq": 0 } } }),
        json!({ "topics": { "cx": { "from_seq": 0 } } }),
        json!({ "topics": { "nope": { "tail": true } } }),
        json!({ "prefixes": ["b-"] }),
        json!({ "prefixes": ["a"] }),
        json!({ "prefixes": ["c"] }),
        json!({ "topics": { "a-1": { "from_seq": 0 } }, "prefixes": ["b"] }),
    ] {
        let (st, body) = as_(&s, &t, M::POST, "/v0/watch", &[JSON], &w.to_string()).await;
        assert_eq!(
            (st, code(&body).as_str()),
            (403, "forbidden"),
            "{w}: {body}"
        );
    }
    let (st, body) = as_(
        &s,
        &t,
        M::POST,
        "/v0/watch",
        &[JSON],
        r#"{"prefixes":["a-"]}"#,
    )
    .await;
    assert_eq!(st, 200, "{body}");
    let v = json_of(&body);
    let mut watched: Vec<&String> = v["topics"].as_object().unwrap().keys().collect();
    watched.sort();
    assert_eq!(watched, ["a-1", "a-2", "a-copy"], "{body}");
    assert_eq!(
        leaks,
        Vec::<String>::new(),
        "next_cursor names topics outside the grants"
    );
}

#[tokio::test]
async fn a_watch_session_opens_only_with_the_token_that_made_it() {
    let s = start_hs().await;
    let root = root();
    root_does(&s, M::PUT, "/v0/topics/w-1", &[JSON], "{}", 201).await;
    let mine = on("w-", "r");
    let (st, body) = as_(
        &s,
        &mine,
        M::POST,
        "/v0/watch",
        &[JSON],
        r#"{"topics":{"w-1":{"from_seq":0}}}"#,
    )
    .await;
    assert_eq!(st, 200, "{body}");
    let url = json_of(&body)["stream_url"].as_str().unwrap().to_string();
    let sse = ("accept", "text/event-stream");
    // Another token, even a broader one or one with the same grants, cannot open it: the
    // reference (topics-v0-api.md, GET /v0/watch/:wid) answers 401 to a key that is not the
    // creator's; the brief asked for 403. Either way, refused and nothing delivered.
    let same_grants = hs_with(
        SECRET.as_bytes(),
        &json!({ "exp": now() + 900, "grants": [{ "prefix": "w-", "scopes": "r" }] }),
    );
    for (what, t) in [
        ("broader", root.as_str()),
        ("same grants", same_grants.as_str()),
    ] {
        let (st, _, body) = call(&s, M::GET, &url, Some(&bearer(t)), &[sse], "").await;
        assert!(matches!(st, 401 | 403), "{what}: {st} {body}");
        assert!(!body.contains("event: record"), "{what}: {body}");
    }
    let (st, _, _) = call(&s, M::GET, &url, None, &[sse], "").await;
    assert_eq!(st, 401);
    // Its own token opens it (and the stream stays open: only the head is awaited).
    let r = s
        .client
        .get(s.url(&url))
        .header("authorization", bearer(&mine))
        .header("accept", "text/event-stream")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}

// ---- 4. and 5. public keys, JWKS, iss/aud/nbf ------------------------------------------------------------

fn claims() -> Value {
    json!({ "exp": now() + 600, "grants": [{ "prefix": "", "scopes": "r" }] })
}

async fn status_with(s: &Server, t: &str) -> u16 {
    call(s, M::GET, "/v0/topics", Some(&bearer(t)), &[], "")
        .await
        .0
}

#[tokio::test]
async fn public_keys_verify_their_own_signatures_only() {
    let rsa = EncodingKey::from_rsa_pem(&pem("rsa-private.pem")).unwrap();
    let ec = EncodingKey::from_ec_pem(&pem("ec-private.pem")).unwrap();
    let ec_other = EncodingKey::from_ec_pem(&pem("ec-other-private.pem")).unwrap();
    let ed = EncodingKey::from_ed_pem(&pem("ed-private.pem")).unwrap();
    let c = claims();
    let rs256 = sign(Algorithm::RS256, &rsa, None, &c);
    let es256 = sign(Algorithm::ES256, &ec, None, &c);
    let es256_other = sign(Algorithm::ES256, &ec_other, None, &c);
    let eddsa = sign(Algorithm::EdDSA, &ed, None, &c);
    for (file, good, bad) in [
        ("rsa-public.pem", &rs256, vec![&es256, &eddsa]),
        ("ec-public.pem", &es256, vec![&es256_other, &rs256, &eddsa]),
        ("ed-public.pem", &eddsa, vec![&rs256, &es256]),
    ] {
        let path = fixture(file);
        let s = start(&[("DS_AUTH__JWT_PUBLIC_KEY_FILE", &path)]).await;
        assert_eq!(status_with(&s, good).await, 200, "{file}");
        for t in bad {
            assert_eq!(status_with(&s, t).await, 401, "{file}: another key's token");
        }
        // Algorithm confusion: HS256 keyed with the public key's PEM text.
        let confused = hs_with(&pem(file), &c);
        assert_eq!(
            status_with(&s, &confused).await,
            401,
            "{file}: HS256 with the PEM"
        );
        assert_eq!(
            status_with(&s, &hs(json!([{ "prefix": "", "scopes": "r" }]))).await,
            401,
            "{file}"
        );
    }
}

#[tokio::test]
async fn a_jwks_file_picks_the_key_by_kid() {
    let rsa = EncodingKey::from_rsa_pem(&pem("rsa-private.pem")).unwrap();
    let ec = EncodingKey::from_ec_pem(&pem("ec-private.pem")).unwrap();
    let mut k1 = Jwk::from_encoding_key(&rsa, Algorithm::RS256).unwrap();
    k1.common.key_id = Some("k-rsa".into());
    let mut k2 = Jwk::from_encoding_key(&ec, Algorithm::ES256).unwrap();
    k2.common.key_id = Some("k-ec".into());
    let dir = TempDir::new("jwks");
    let file = dir.path().join("jwks.json");
    let set = JwkSet { keys: vec![k1, k2] };
    std::fs::write(&file, serde_json::to_vec(&set).unwrap()).unwrap();
    let s = start(&[("DS_AUTH__JWT_JWKS_FILE", file.to_str().unwrap())]).await;
    let c = claims();
    assert_eq!(
        status_with(&s, &sign(Algorithm::RS256, &rsa, Some("k-rsa"), &c)).await,
        200
    );
    assert_eq!(
        status_with(&s, &sign(Algorithm::ES256, &ec, Some("k-ec"), &c)).await,
        200
    );
    for (what, t) in [
        (
            "unknown kid",
            sign(Algorithm::RS256, &rsa, Some("k-gone"), &c),
        ),
        (
            "the other key's kid",
            sign(Algorithm::ES256, &ec, Some("k-rsa"), &c),
        ),
        ("HS256 keyed with the RSA JWK's kid", {
            let mut h = Header::new(Algorithm::HS256);
            h.kid = Some("k-rsa".into());
            encode(
                &h,
                &c,
                &EncodingKey::from_secret(&pem("rsa-public.pem")).unwrap(),
            )
            .unwrap()
        }),
    ] {
        assert_eq!(status_with(&s, &t).await, 401, "{what}");
    }
}

#[tokio::test]
async fn issuer_audience_and_not_before_are_checked() {
    let s = start(&[
        ("DS_AUTH__JWT_HS256_SECRET", SECRET),
        ("DS_AUTH__JWT_ISSUER", "gate"),
        ("DS_AUTH__JWT_AUDIENCE", "riffle"),
    ])
    .await;
    let g = json!([{ "prefix": "", "scopes": "r" }]);
    let base = json!({ "exp": now() + 600, "iss": "gate", "aud": "riffle", "grants": g });
    let with = |k: &str, v: Option<Value>| {
        let mut c = base.clone();
        match v {
            Some(v) => c[k] = v,
            None => {
                c.as_object_mut().unwrap().remove(k);
            }
        }
        hs_with(SECRET.as_bytes(), &c)
    };
    assert_eq!(
        status_with(&s, &hs_with(SECRET.as_bytes(), &base)).await,
        200
    );
    assert_eq!(
        status_with(&s, &with("aud", Some(json!(["x", "riffle"])))).await,
        200
    );
    assert_eq!(
        status_with(&s, &with("nbf", Some(json!(now() - 10)))).await,
        200
    );
    for (what, t) in [
        ("wrong iss", with("iss", Some(json!("other")))),
        ("no iss", with("iss", None)),
        ("wrong aud", with("aud", Some(json!("other")))),
        ("no aud", with("aud", None)),
        ("nbf ahead", with("nbf", Some(json!(now() + 120)))),
        ("no exp", with("exp", None)),
        ("no grants", with("grants", None)),
    ] {
        let (st, h, body) = call(&s, M::GET, "/v0/topics", Some(&bearer(&t)), &[], "").await;
        assert_eq!(
            (st, code(&body).as_str()),
            (401, "unauthorized"),
            "{what}: {body}"
        );
        assert!(
            h["www-authenticate"]
                .to_str()
                .unwrap()
                .starts_with("Bearer error=\"invalid_token\"")
        );
    }
}

// ---- 9. start-up refusals ---------------------------------------------------------------------

#[test]
fn a_bad_jwt_configuration_refuses_to_start() {
    let quick = Duration::from_secs(10);
    let short = "short-secret-XYZZY";
    let (st, err) = run_to_exit(&[], &[("DS_AUTH__JWT_HS256_SECRET", short)], quick);
    assert!(!st.success(), "{err}");
    assert!(
        err.contains("jwt_hs256_secret") && !err.contains(short),
        "{err}"
    );
    let missing = "/nonexistent/riffle-jwt/public.pem";
    let (st, err) = run_to_exit(&[], &[("DS_AUTH__JWT_PUBLIC_KEY_FILE", missing)], quick);
    assert!(
        !st.success() && err.contains("jwt_public_key_file"),
        "{err}"
    );
    let dir = TempDir::new("badjwks");
    let jwks = dir.path().join("jwks.json");
    std::fs::write(&jwks, "this is not JSON").unwrap();
    let (st, err) = run_to_exit(
        &[],
        &[("DS_AUTH__JWT_JWKS_FILE", jwks.to_str().unwrap())],
        quick,
    );
    assert!(!st.success() && err.contains("jwt_jwks_file"), "{err}");
    // A file that is not a public key at all (a private key's PEM is not one either way).
    let not_a_key = dir.path().join("key.pem");
    std::fs::write(
        &not_a_key,
        "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n",
    )
    .unwrap();
    let env = [("DS_AUTH__JWT_PUBLIC_KEY_FILE", not_a_key.to_str().unwrap())];
    let (st, err) = run_to_exit(&[], &env, quick);
    assert!(
        !st.success() && err.contains("jwt_public_key_file"),
        "{err}"
    );
}
