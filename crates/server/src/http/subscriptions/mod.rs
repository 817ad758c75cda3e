//! The Durable Streams reserved control APIs (`/v1/stream/__ds/...`, PROTOCOL.md sections 6
//! and 7): subscriptions, their stream links, webhook callbacks, pull-wake claims, acks and
//! releases, and the webhook signing keys (JWKS). Same shape as the streams face: route,
//! parse and validate, one engine call, render. Delivery is `crate::subscriptions`.
//!
//! Authorization: with auth on, managing a subscription needs `admin` on
//! `__ds/subscriptions/<id>`, reading it `read`, claiming `write`; callbacks, acks and
//! releases carry the wake's own token instead; the JWKS is public.

mod parse;
pub mod render;
pub mod token;

use super::auth::Scopes;
use super::body::{RequestBody, ResponseBody};
use super::{ApiError, App};
use http::request::Parts;
use http::{Method, Response, StatusCode, header};
use render::{error_response, json_response, no_content};
use riffle_engine::subs::SubError;
use serde_json::json;

pub const PREFIX: &str = "/v1/stream/__ds/";

/// Whether `path` (raw, as requested) belongs to the reserved APIs.
pub fn owns(path: &str) -> bool {
    path == "/v1/stream/__ds" || path.starts_with(PREFIX)
}

/// Serve a request of the reserved APIs.
pub async fn handle(app: &App, req: &Parts, body: RequestBody) -> Response<ResponseBody> {
    route(app, req, body).await.unwrap_or_else(error_response)
}

async fn route(
    app: &App,
    req: &Parts,
    body: RequestBody,
) -> Result<Response<ResponseBody>, ApiError> {
    let rest = req.uri.path().strip_prefix(PREFIX).unwrap_or("");
    let segs: Vec<&str> = rest.split('/').collect();
    let m = &req.method;
    match segs.as_slice() {
        ["jwks.json"] if matches!(*m, Method::GET | Method::HEAD) => Ok(jwks(app)),
        ["jwks", "rotate"] if *m == Method::POST => rotate(app),
        ["subscriptions", id, tail @ ..] => {
            let id = parse::sub_id(id)?;
            subscription(app, req, body, &id, tail).await
        }
        ["jwks.json"] => Err(not_allowed("GET, HEAD")),
        ["jwks", "rotate"] => Err(not_allowed("POST")),
        _ => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "no such control API under /v1/stream/__ds/",
        )
        .code("NOT_FOUND")),
    }
}

async fn subscription(
    app: &App,
    req: &Parts,
    body: RequestBody,
    id: &str,
    tail: &[&str],
) -> Result<Response<ResponseBody>, ApiError> {
    let engine = &app.engine;
    let m = &req.method;
    match (m, tail) {
        (&Method::PUT, []) => {
            let spec = parse::spec(
                &read(app, req, body).await?,
                app.subs.settings.allow_localhost_webhooks,
            )?;
            check_spec_names(&spec)?;
            let origin = origin(app, req);
            let (created, info) = engine.sub_put(id, spec, &origin).await.map_err(sub_error)?;
            let status = if created {
                StatusCode::CREATED
            } else {
                StatusCode::OK
            };
            let v = render::subscription(&info, &origin, &app.subs.keys.active_kid());
            Ok(json_response(status, &v))
        }
        (&Method::GET | &Method::HEAD, []) => {
            let info = engine.sub_get(id).map_err(sub_error)?;
            let v = render::subscription(&info, &origin(app, req), &app.subs.keys.active_kid());
            Ok(json_response(StatusCode::OK, &v))
        }
        (&Method::DELETE, []) => {
            engine.sub_delete(id).await.map_err(sub_error)?;
            Ok(no_content())
        }
        (&Method::POST, ["streams"]) => {
            let m = parse::object(&read(app, req, body).await?)?;
            let streams = parse::streams(m.get("streams"), true)?;
            let cred = super::access::current();
            super::access::check_names(
                cred.as_ref(),
                streams.iter().map(String::as_str),
                Scopes::READ,
            )?;
            engine
                .sub_add_streams(id, &streams)
                .await
                .map_err(sub_error)?;
            Ok(no_content())
        }
        (&Method::DELETE, ["streams", path @ ..]) if !path.is_empty() => {
            let raw = path.join("/");
            let decoded = percent_encoding::percent_decode_str(&raw)
                .decode_utf8()
                .map_err(|_| parse::invalid("the stream path is not valid UTF-8"))?;
            let path = parse::rel_path(&decoded, "the stream path")?;
            engine
                .sub_remove_stream(id, &path)
                .await
                .map_err(sub_error)?;
            Ok(no_content())
        }
        (&Method::POST, ["claim"]) => {
            let worker = parse::worker(&read(app, req, body).await?)?;
            let w = engine.sub_claim(id, &worker).await.map_err(sub_error)?;
            let secret = app.subs.keys.token_secret();
            let t = token::issue(&secret, &w, unix_now(app));
            Ok(json_response(StatusCode::OK, &render::claimed(&w, &t)))
        }
        (&Method::POST, [action @ ("callback" | "ack" | "release")]) => {
            let claims = wake_token(app, req, id)?;
            let r = parse::wake_request(&read(app, req, body).await?)?;
            if r.generation != claims.generation || r.wake_id != claims.wake_id {
                return Err(sub_error(SubError::Fenced));
            }
            let (generation, wake) = (r.generation, r.wake_id.as_str());
            if *action == "release" {
                engine
                    .sub_release(id, claims.sid, generation, wake)
                    .await
                    .map_err(sub_error)?;
                return Ok(no_content());
            }
            let pull = *action == "ack";
            let next = engine
                .sub_ack(id, claims.sid, generation, wake, &r.acks, r.done, pull)
                .await
                .map_err(sub_error)?;
            Ok(json_response(
                StatusCode::OK,
                &json!({ "ok": true, "next_wake": next }),
            ))
        }
        (_, []) => Err(not_allowed("GET, HEAD, PUT, DELETE")),
        (_, ["streams"] | ["claim" | "callback" | "ack" | "release"]) => Err(not_allowed("POST")),
        (_, ["streams", ..]) => Err(not_allowed("DELETE")),
        _ => {
            Err(ApiError::new(StatusCode::NOT_FOUND, "no such subscription API").code("NOT_FOUND"))
        }
    }
}

/// A 405, with the `Allow` header RFC 9110 §15.5.6 requires.
fn not_allowed(allow: &'static str) -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        format!("method not allowed here: use {allow}"),
    )
    .code("METHOD_NOT_ALLOWED")
    .with_header("allow", allow)
}

async fn read(app: &App, req: &Parts, body: RequestBody) -> Result<bytes::Bytes, ApiError> {
    let declared = req
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    super::body::read_limited(declared, body, app.config.limits.max_request_body_bytes).await
}

/// The base URL callbacks and the JWKS are reached at: the configured public URL, else the
/// scheme and host this request came through.
fn origin(app: &App, req: &Parts) -> String {
    let public = &app.subs.settings.public_url;
    if !public.is_empty() {
        return public.clone();
    }
    let host = req
        .headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .or_else(|| req.uri.authority().map(|a| a.as_str()))
        .unwrap_or("localhost");
    format!("{}://{host}", app.scheme)
}

/// Unix seconds by the engine's clock (the one wake deadlines are in).
fn unix_now(app: &App) -> u64 {
    u64::try_from(app.engine.now_ms() / 1000).unwrap_or(0)
}

/// The wake token a callback, ack or release carries.
fn wake_token(app: &App, req: &Parts, id: &str) -> Result<token::WakeClaims, ApiError> {
    let unauthorized = |code: &'static str, msg: &str| {
        ApiError::new(StatusCode::UNAUTHORIZED, msg.to_string())
            .code(code)
            .with_header("www-authenticate", "Bearer")
    };
    let bearer = req
        .headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .ok_or_else(|| {
            unauthorized(
                "TOKEN_INVALID",
                "missing or malformed Authorization: Bearer <token>",
            )
        })?;
    token::check(&app.subs.keys.token_secret(), bearer, id).map_err(|e| match e {
        token::TokenError::Expired => unauthorized("TOKEN_EXPIRED", "the wake token expired"),
        token::TokenError::Invalid => unauthorized("TOKEN_INVALID", "the wake token is not valid"),
    })
}

fn jwks(app: &App) -> Response<ResponseBody> {
    let mut resp = json_response(StatusCode::OK, &app.subs.keys.jwks(unix_now(app)));
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/jwk-set+json"),
    );
    h.insert(
        header::CACHE_CONTROL,
        header::HeaderValue::from_static("public, max-age=300"),
    );
    resp
}

/// Rotate the webhook signing key: new deliveries are signed with a new key; the old public
/// key stays in the JWKS for an hour.
fn rotate(app: &App) -> Result<Response<ResponseBody>, ApiError> {
    let kid = app.subs.keys.rotate(unix_now(app)).map_err(|e| {
        let status = match e {
            crate::subscriptions::signing::SigningError::TooManyRotations(_) => {
                StatusCode::TOO_MANY_REQUESTS
            }
            _ => StatusCode::SERVICE_UNAVAILABLE,
        };
        ApiError::new(status, format!("could not rotate the signing key: {e}"))
    })?;
    tracing::info!(%kid, "webhook signing key rotated");
    Ok(json_response(StatusCode::OK, &json!({ "kid": kid })))
}

/// The names a subscription's body gives are checked against the request's credential, as
/// every name in a body is: each stream it links (explicitly, or every one its pattern can
/// match, i.e. all under the pattern's literal prefix) and its wake stream (the server appends
/// wake events there) must be inside the key's names, with the scope the route itself needs
/// (`admin`). Otherwise a tenant's key could watch, and learn the names and tails of, another
/// tenant's streams, and have the server write into them.
fn check_spec_names(spec: &riffle_engine::subs::SubSpec) -> Result<(), ApiError> {
    let cred = super::access::current();
    let cred = cred.as_ref();
    let streams = spec.streams.iter().map(String::as_str);
    super::access::check_names(cred, streams, Scopes::ADMIN)?;
    if let Some(pattern) = &spec.pattern {
        let segs: Vec<&str> = pattern.split('/').collect();
        match segs.iter().position(|s| *s == "*" || *s == "**") {
            // No wildcard: it matches that one name.
            None => super::access::check_names(cred, [pattern.as_str()], Scopes::ADMIN)?,
            Some(i) => {
                let prefix: String = segs[..i].iter().map(|s| format!("{s}/")).collect();
                super::access::check_prefix(cred, &prefix, Scopes::ADMIN)?;
            }
        }
    }
    if let riffle_engine::subs::SubKind::PullWake { wake_stream } = &spec.kind {
        super::access::check_names(cred, [wake_stream.as_str()], Scopes::ADMIN)?;
    }
    Ok(())
}

/// The protocol's error for a refused subscription request.
fn sub_error(e: SubError) -> ApiError {
    let conflict = |code, msg: String| ApiError::new(StatusCode::CONFLICT, msg).code(code);
    let msg = e.to_string();
    match e {
        SubError::NotFound => {
            ApiError::new(StatusCode::NOT_FOUND, msg).code("SUBSCRIPTION_NOT_FOUND")
        }
        SubError::Exists => conflict("SUBSCRIPTION_ALREADY_EXISTS", msg),
        SubError::NotPullWake | SubError::NotWebhook => parse::invalid(msg),
        SubError::AlreadyClaimed { holder, generation } => conflict("ALREADY_CLAIMED", msg)
            .detail(json!({ "current_holder": holder, "generation": generation })),
        SubError::NoPendingWork => conflict("NO_PENDING_WORK", msg),
        SubError::Fenced => conflict("FENCED", msg),
        SubError::InvalidOffset(m) => conflict("INVALID_OFFSET", m),
        SubError::Limit { limit, max } => ApiError::new(StatusCode::TOO_MANY_REQUESTS, msg)
            .code("LIMIT_REACHED")
            .reason(limit)
            .detail(json!({ "limit": limit, "max": max }))
            .with_header("retry-after", 1),
        SubError::Engine(e) => ApiError::from(e),
    }
}
