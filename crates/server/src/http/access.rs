//! Who may do what: the credential a request presents (`Authorization: Bearer`, the `token`
//! query parameter of an SSE stream GET, or on a GET or HEAD the configured cookie, for
//! browsers' EventSource and WebSocket), and the
//! scopes and names each route needs, the same rule in both APIs:
//!
//! - `read`: catch-up and live reads, HEAD, diff, watch, listings, metrics;
//! - `write`: appends, closes, Durable Streams creates and forks (a fork also needs `read` on
//!   its source), `/v0` writes, ack, nack, extend; `read`+`write`: claim and `/work`;
//! - `delete`: deletes; `admin`: `/v0` topic and router configuration (and a write's inline
//!   `config`, checked by its handler).
//!
//! Names in bodies (watch topics, router source and dest) are checked by their handlers with
//! the credential this module leaves in the request's task ([`current`]).

use super::auth::{Credential, Scopes};
use super::{ApiError, App};
use futures_util::future::Either;
use http::request::Parts;
use http::{Method, StatusCode, header};

tokio::task_local! {
    static CREDENTIAL: Option<Credential>;
}

/// The credential of the request being served (`None` when auth is off).
pub fn current() -> Option<Credential> {
    CREDENTIAL.try_with(Clone::clone).ok().flatten()
}

/// Run `f` as the request of `cred` (with auth off, as it is: nothing to carry).
///
/// Not an `async fn`: that would hold `f` twice (as its argument and inside the scope it
/// awaits), and a request's future is part of every connection's task.
pub fn with<F: std::future::Future>(
    cred: Option<Credential>,
    f: F,
) -> impl std::future::Future<Output = F::Output> {
    match cred {
        None => Either::Left(f),
        cred => Either::Right(CREDENTIAL.scope(cred, f)),
    }
}

/// What a route needs: `scopes` somewhere (what a route naming nothing checks), and on each
/// name it touches (stream names without `/v1/stream/`, topic names) the scopes given.
struct Need {
    scopes: Scopes,
    names: Vec<(String, Scopes)>,
}

const STREAM: &str = "/v1/stream/";

fn need(req: &Parts, path: &str, probe_auth: bool) -> Option<Need> {
    let m = &req.method;
    let on = |scopes: Scopes, name: &str| {
        Some(Need {
            scopes,
            names: vec![(name.to_string(), scopes)],
        })
    };
    let anywhere = |scopes| {
        Some(Need {
            scopes,
            names: Vec::new(),
        })
    };
    let read = Scopes::READ;
    let (write, delete, admin) = (Scopes::WRITE, Scopes::DELETE, Scopes::ADMIN);
    if *m == Method::OPTIONS {
        return None; // CORS preflights carry no credentials
    }
    if matches!(path, "/healthz" | "/readyz" | "/v0/health" | "/v0/ready") {
        return if probe_auth { anywhere(read) } else { None };
    }
    if matches!(path, "/metrics" | "/v0/metrics") {
        return anywhere(read);
    }
    if let Some(rest) = path.strip_prefix(super::subscriptions::PREFIX) {
        let segs: Vec<&str> = rest.split('/').collect();
        let sub = |id: &str| format!("__ds/subscriptions/{id}");
        return match (m, segs.as_slice()) {
            // Public keys, fetched by webhook receivers.
            (_, ["jwks.json"]) => None,
            // The wake's own token is the credential (checked by the handler).
            (_, ["subscriptions", _, "callback" | "ack" | "release"]) => None,
            (&Method::GET | &Method::HEAD, ["subscriptions", id]) => on(read, &sub(id)),
            (_, ["subscriptions", id, "claim"]) => on(write, &sub(id)),
            (_, ["subscriptions", id, ..]) => on(admin, &sub(id)),
            // The server-wide signing key: admin on the `__ds/` namespace itself, not merely
            // somewhere (a tenant's admin key must not rotate every tenant's key).
            (_, ["jwks", "rotate"]) => on(admin, "__ds/jwks"),
            _ => anywhere(admin),
        };
    }
    if let Some(name) = path.strip_prefix(STREAM) {
        return match *m {
            Method::GET | Method::HEAD => on(read, name),
            Method::DELETE => on(delete, name),
            Method::PUT => {
                let source = req
                    .headers
                    .get("stream-forked-from")
                    .and_then(|v| v.to_str().ok())
                    .map(|s| s.strip_prefix(STREAM).unwrap_or(s).to_string());
                match source {
                    // A fork writes its new stream and reads its source.
                    Some(src) => Some(Need {
                        scopes: write.with(read),
                        names: vec![(name.to_string(), write), (src, read)],
                    }),
                    None => on(write, name),
                }
            }
            _ => on(write, name),
        };
    }
    let segs: Vec<&str> = path.trim_start_matches("/v0/").split('/').collect();
    match (m, segs.as_slice()) {
        (_, ["topics"]) | (_, ["routers"]) => anywhere(read),
        (&Method::PUT, ["topics", t]) => on(admin, t),
        (&Method::POST, ["topics", t]) => on(write, t),
        (&Method::DELETE, ["topics", t]) => on(delete, t),
        (_, ["topics", t]) => on(read, t),
        (_, ["topics", t, "diff"]) => on(read, t),
        (_, ["topics", t, "delete"]) => on(delete, t),
        (_, ["topics", t, "claim" | "work"]) => on(read.with(write), t),
        (_, ["topics", t, _]) => on(write, t),
        // Router names are not topic names: the handlers check the source and destination.
        (&Method::PUT, ["routers", _]) => anywhere(admin),
        (&Method::DELETE, ["routers", _]) => anywhere(delete),
        (_, ["routers", _]) => anywhere(read),
        (_, ["watch", ..]) => anywhere(read),
        // Any valid credential opens a WebSocket: its scopes are checked per op (`subscribe`
        // reads, `publish` writes).
        (_, ["ws"]) => anywhere(Scopes::NONE),
        _ => anywhere(read),
    }
}

/// The token a request presents, if any.
fn token<'a>(
    req: &'a Parts,
    cookie: Option<&str>,
) -> Result<Option<std::borrow::Cow<'a, str>>, ApiError> {
    if let Some(h) = req.headers.get(header::AUTHORIZATION) {
        let v = h
            .to_str()
            .map_err(|_| unauthorized("malformed Authorization header").reason("malformed"))?;
        let (scheme, t) = v
            .split_once(' ')
            .ok_or_else(|| unauthorized("malformed Authorization header").reason("malformed"))?;
        if !scheme.eq_ignore_ascii_case("bearer") || t.trim().is_empty() {
            return Err(unauthorized("Authorization must be `Bearer <token>`").reason("malformed"));
        }
        return Ok(Some(t.trim().into()));
    }
    if let Some(q) = req.uri.query()
        && is_sse_get(req, q)
        && let Some((_, t)) = form_urlencoded::parse(q.as_bytes()).find(|(k, _)| k == "token")
    {
        return Ok(Some(std::borrow::Cow::Owned(t.into_owned())));
    }
    // Only a read's (GET, HEAD): browsers send cookies with cross-site form posts too, so a
    // cookie that authorized a write would let any page write with its visitor's token.
    if let Some(name) = cookie
        && matches!(req.method, Method::GET | Method::HEAD)
    {
        for h in req.headers.get_all(header::COOKIE) {
            let Ok(v) = h.to_str() else { continue };
            for c in v.split(';') {
                if let Some((k, t)) = c.trim().split_once('=')
                    && k == name
                {
                    return Ok(Some(std::borrow::Cow::Owned(t.to_string())));
                }
            }
        }
    }
    Ok(None)
}

/// Whether a request with query `q` is an SSE stream GET, the only kind whose token may ride in
/// the query (an `EventSource` cannot set headers; a query string ends up in logs, so nothing
/// else may): a Durable Streams `live=sse` read, a `/v0/watch/:wid` stream or a `/work` stream.
fn is_sse_get(req: &Parts, q: &str) -> bool {
    if req.method != Method::GET {
        return false;
    }
    let path = req.uri.path();
    if path.starts_with(STREAM) {
        return form_urlencoded::parse(q.as_bytes()).any(|(k, v)| k == "live" && v == "sse");
    }
    let segments: Vec<&str> = path.split('/').skip(1).collect();
    matches!(
        segments.as_slice(),
        ["v0", "watch", wid] if !wid.is_empty()
    ) || matches!(segments.as_slice(), ["v0", "topics", t, "work"] if !t.is_empty())
}

fn unauthorized(why: &str) -> ApiError {
    ApiError::new(StatusCode::UNAUTHORIZED, why)
        .code("unauthorized")
        .reason("unauthorized")
        .with_header("www-authenticate", "Bearer")
}

/// A 401 for a credential that was presented and refused (RFC 6750's `invalid_token`).
fn invalid_token(why: &str) -> ApiError {
    ApiError::new(StatusCode::UNAUTHORIZED, why)
        .code("unauthorized")
        .reason("invalid_token")
        .with_header("www-authenticate", "Bearer error=\"invalid_token\"")
}

fn forbidden(why: String) -> ApiError {
    ApiError::new(StatusCode::FORBIDDEN, why)
        .code("forbidden")
        .reason("forbidden")
}

/// Whether `cred` may do `scopes` on every name in `names` (answers 403 otherwise).
pub fn check_names<'a>(
    cred: Option<&Credential>,
    names: impl IntoIterator<Item = &'a str>,
    scopes: Scopes,
) -> Result<(), ApiError> {
    let Some(c) = cred else { return Ok(()) };
    for n in names {
        if !c.allows(n, scopes) {
            return Err(forbidden(format!(
                "the credential does not allow {} on {n:?}",
                scopes.names()
            ))
            .reason("forbidden_name"));
        }
    }
    Ok(())
}

/// Whether `cred` may do `scopes` on every name starting with `prefix` (403 otherwise).
pub fn check_prefix(
    cred: Option<&Credential>,
    prefix: &str,
    scopes: Scopes,
) -> Result<(), ApiError> {
    match cred {
        Some(c) if !c.allows_prefix(prefix, scopes) => Err(forbidden(format!(
            "the credential does not allow {} on every name starting with {prefix:?}",
            scopes.names()
        ))),
        _ => Ok(()),
    }
}

/// Whether `cred` has `scopes` somewhere (answers 403 otherwise).
pub fn check_scopes(cred: Option<&Credential>, scopes: Scopes) -> Result<(), ApiError> {
    match cred {
        Some(c) if !c.scopes.contains(scopes) => Err(forbidden(format!(
            "the credential's scopes ({}) do not include {}",
            c.scopes.names(),
            scopes.names()
        ))
        .reason("forbidden_scope")),
        _ => Ok(()),
    }
}

/// When the request's credential expires, as a timer deadline (`None`: never, or auth off).
/// Live responses end there, with a last event that says why.
pub fn expiry() -> Option<tokio::time::Instant> {
    let at = current()?.expires_at?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs_f64();
    // Past ten years ahead is never, as far as a response is concerned (and cannot overflow).
    let left = (at as f64 - now).clamp(0.0, 10.0 * 365.0 * 86_400.0);
    tokio::time::Instant::now().checked_add(std::time::Duration::from_secs_f64(left))
}

/// A timer for [`expiry`]: pending forever when the credential never expires.
pub async fn expired(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// The 401 of a request whose credential expired while it waited.
pub fn expired_error() -> ApiError {
    invalid_token(EXPIRED_MESSAGE).reason("expired")
}

/// What a live response says as it ends at its credential's expiry.
pub const EXPIRED_MESSAGE: &str = "the credential expired; reconnect with a fresh one";

impl App {
    /// Authenticate and authorize a request for the route of `path` (canonical for streams):
    /// the credential (`None` when auth is off or the route is open), or the 401/403.
    pub fn authorize(&self, req: &Parts, path: &str) -> Result<Option<Credential>, ApiError> {
        let auth = &self.config.auth;
        if !auth.enabled() {
            return Ok(None);
        }
        let Some(need) = need(req, path, auth.probe_auth) else {
            return Ok(None);
        };
        let token = token(req, auth.cookie_name.as_deref())?.ok_or_else(|| {
            unauthorized("a credential is required: Authorization: Bearer <token>")
                .reason("missing")
        })?;
        let cred = match (auth.keys.check(&token), &auth.jwt) {
            (Some(c), _) => c,
            (None, Some(jwt)) if super::jwt::Jwt::looks_like(&token) => jwt
                .check(&token)
                .map_err(|r| invalid_token(r.message()).reason(r.reason()))?,
            _ => return Err(invalid_token("unknown credential").reason("unknown")),
        };
        check_scopes(Some(&cred), need.scopes)?;
        for (name, scopes) in &need.names {
            check_names(Some(&cred), [name.as_str()], *scopes)?;
        }
        Ok(Some(cred))
    }
}
