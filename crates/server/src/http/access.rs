//! Who may do what: the credential a request presents (`Authorization: Bearer`, or on a GET
//! the `token` query parameter or the configured cookie, for browsers' EventSource), and the
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
pub async fn with<F: std::future::Future>(cred: Option<Credential>, f: F) -> F::Output {
    match cred {
        None => f.await,
        cred => CREDENTIAL.scope(cred, f).await,
    }
}

/// What a route needs.
struct Need {
    scopes: Scopes,
    /// Names it touches (stream names without `/v1/stream/`, topic names).
    names: Vec<String>,
}

const STREAM: &str = "/v1/stream/";

fn need(req: &Parts, path: &str, probe_auth: bool) -> Option<Need> {
    let m = &req.method;
    let need = |scopes, names: Vec<String>| Some(Need { scopes, names });
    let read = Scopes::READ;
    let (write, delete, admin) = (Scopes::WRITE, Scopes::DELETE, Scopes::ADMIN);
    if *m == Method::OPTIONS {
        return None; // CORS preflights carry no credentials
    }
    if matches!(path, "/healthz" | "/readyz" | "/v0/health" | "/v0/ready") {
        return probe_auth.then(|| Need {
            scopes: read,
            names: Vec::new(),
        });
    }
    if matches!(path, "/metrics" | "/v0/metrics") {
        return need(read, Vec::new());
    }
    if let Some(name) = path.strip_prefix(STREAM) {
        let name = name.to_string();
        return match *m {
            Method::GET | Method::HEAD => need(read, vec![name]),
            Method::DELETE => need(delete, vec![name]),
            Method::PUT => {
                let source = req
                    .headers
                    .get("stream-forked-from")
                    .and_then(|v| v.to_str().ok())
                    .map(|s| s.strip_prefix(STREAM).unwrap_or(s).to_string());
                match source {
                    Some(src) => need(write.with(read), vec![name, src]),
                    None => need(write, vec![name]),
                }
            }
            _ => need(write, vec![name]),
        };
    }
    let segs: Vec<&str> = path.trim_start_matches("/v0/").split('/').collect();
    let topic = |t: &str| vec![t.to_string()];
    match (m, segs.as_slice()) {
        (_, ["topics"]) | (_, ["routers"]) => need(read, Vec::new()),
        (&Method::PUT, ["topics", t]) => need(admin, topic(t)),
        (&Method::POST, ["topics", t]) => need(write, topic(t)),
        (&Method::DELETE, ["topics", t]) => need(delete, topic(t)),
        (_, ["topics", t]) => need(read, topic(t)),
        (_, ["topics", t, "diff"]) => need(read, topic(t)),
        (_, ["topics", t, "delete"]) => need(delete, topic(t)),
        (_, ["topics", t, "claim" | "work"]) => need(read.with(write), topic(t)),
        (_, ["topics", t, _]) => need(write, topic(t)),
        (&Method::PUT, ["routers", _]) => need(admin, Vec::new()),
        (&Method::DELETE, ["routers", _]) => need(delete, Vec::new()),
        (_, ["routers", _]) => need(read, Vec::new()),
        (_, ["watch", ..]) | (_, ["ws"]) => need(read, Vec::new()),
        _ => need(read, Vec::new()),
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
    if req.method == Method::GET
        && let Some(q) = req.uri.query()
        && let Some((_, t)) = form_urlencoded::parse(q.as_bytes()).find(|(k, _)| k == "token")
    {
        return Ok(Some(std::borrow::Cow::Owned(t.into_owned())));
    }
    if let Some(name) = cookie {
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

fn unauthorized(why: &str) -> ApiError {
    ApiError::new(StatusCode::UNAUTHORIZED, why)
        .code("unauthorized")
        .reason("unauthorized")
        .with_header("www-authenticate", "Bearer")
}

fn forbidden(why: String) -> ApiError {
    ApiError::new(StatusCode::FORBIDDEN, why)
        .code("forbidden")
        .reason("forbidden")
}

/// Whether `cred` may touch every name in `names` (answers 403 otherwise).
pub fn check_names<'a>(
    cred: Option<&Credential>,
    names: impl IntoIterator<Item = &'a str>,
) -> Result<(), ApiError> {
    let Some(c) = cred else { return Ok(()) };
    for n in names {
        if !c.covers(n) {
            return Err(
                forbidden(format!("the credential does not cover {n:?}")).reason("forbidden_name")
            );
        }
    }
    Ok(())
}

/// Whether `cred` has `scopes` (answers 403 otherwise).
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

impl App {
    /// Authenticate and authorize a request for the route of `path` (canonical for streams):
    /// the credential (`None` when auth is off or the route is open), or the 401/403.
    pub fn authorize(&self, req: &Parts, path: &str) -> Result<Option<Credential>, ApiError> {
        let auth = &self.config.auth;
        if !auth.keys.enabled() {
            return Ok(None);
        }
        let Some(need) = need(req, path, auth.probe_auth) else {
            return Ok(None);
        };
        let token = token(req, auth.cookie_name.as_deref())?.ok_or_else(|| {
            unauthorized("a credential is required: Authorization: Bearer <key>").reason("missing")
        })?;
        let cred = auth
            .keys
            .check(&token)
            .ok_or_else(|| unauthorized("unknown credential").reason("unknown"))?;
        check_scopes(Some(&cred), need.scopes)?;
        check_names(Some(&cred), need.names.iter().map(String::as_str))?;
        Ok(Some(cred))
    }
}
