//! PUT (create and fork), POST (append and close), DELETE.

use super::headers::{Field, ReqHeaders};
use super::names;
use super::offset::{offset_header, parse_offset};
use super::params;
use super::payload::{EmptyArray, framing_of, read_body, to_payload};
use super::{ResponseBody, with_content_type};
use crate::http::body::RequestBody;
use crate::http::path::{PathError, canonical};
use crate::http::{ApiError, App, STREAM_PREFIX, body};
use http::request::Parts;
use http::{Response, StatusCode, header as h};
use riffle_engine::{
    AppendRequest, AppendStatus, CreateSpec, Durability, EngineError, ForkSpec, ReadFrom,
};
use std::borrow::Cow;

pub async fn create(
    app: &App,
    name: &str,
    req: &Parts,
    body: RequestBody,
) -> Result<Response<ResponseBody>, ApiError> {
    let hs = &ReqHeaders::scan(&req.headers);
    hs.no_conflicts()?;
    let closed = params::closed_flag(hs);
    let expiry = params::expiry(hs)?;
    let fork = fork_spec(hs)?;
    let durability = match hs.text(Field::StreamDurability)? {
        None => None,
        Some(v) => Some(v.parse::<Durability>().map_err(|()| {
            ApiError::bad_request(format!(
                "Stream-Durability {v:?} is not one of ephemeral, memory, disk, fsync"
            ))
        })?),
    };
    let content_type = match hs.text(Field::ContentType)? {
        Some(ct) if !ct.is_empty() => {
            params::check_media_type(ct)?;
            Some(ct.to_string())
        }
        _ if fork.is_some() => None,
        _ => Some("application/octet-stream".to_string()),
    };
    // A fork without a content type takes its source's, which decides how to read the body.
    let framing = match (&content_type, &fork) {
        (Some(ct), _) => framing_of(ct),
        (None, Some(f)) => match (app.engine.info(&f.source), app.engine.info(name)) {
            (Ok(info), _) => info.framing,
            // A retried fork whose source has gone since: the fork itself answers (200 if the
            // same request created it).
            (Err(_), Ok(existing)) => existing.framing,
            (Err(EngineError::NotFound), _) => return Err(EngineError::ForkSourceNotFound.into()),
            (Err(EngineError::Gone), _) => return Err(EngineError::ForkSourceGone.into()),
            (Err(e), _) => return Err(e.into()),
        },
        (None, None) => riffle_engine::Framing::Bytes,
    };
    let body = read_body(hs, body, app.config.limits.max_request_body_bytes).await?;
    let initial = to_payload(body, framing, EmptyArray::Allowed)?;
    let spec = CreateSpec {
        content_type: content_type.map(|ct| (ct, framing)),
        expiry,
        closed,
        initial,
        fork,
        durability,
    };
    // Everything that can reject the request is checked before the create takes effect.
    // HTTP/2 names the host in `:authority` (the URI's), HTTP/1.1 in `Host`.
    let host = match (hs.text(Field::Host)?, req.uri.authority()) {
        (Some(h), _) => h.to_string(),
        (None, Some(a)) => a.to_string(),
        (None, None) => "localhost".to_string(),
    };
    let created = app.engine.create(name, spec).await?;
    let info = created.info;
    let mut resp = with_content_type(
        if created.created {
            StatusCode::CREATED
        } else {
            StatusCode::OK
        },
        &info.content_type,
    )
    .header(&names::STREAM_NEXT_OFFSET, offset_header(info.next));
    if created.created {
        resp = resp.header(h::LOCATION, format!("{}://{host}{name}", app.scheme));
    }
    if info.closed {
        resp = resp.header(&names::STREAM_CLOSED, "true");
    }
    resp.body(body::empty())
        .map_err(|e| ApiError::bad_request(format!("invalid response header: {e}")))
}

/// The fork headers of a PUT, validated.
fn fork_spec(hs: &ReqHeaders) -> Result<Option<ForkSpec>, ApiError> {
    let source = hs.text(Field::StreamForkedFrom)?;
    let offset = hs.text(Field::StreamForkOffset)?;
    let sub = hs.text(Field::StreamForkSubOffset)?;
    let Some(source) = source else {
        if offset.is_some() || sub.is_some() {
            return Err(ApiError::bad_request(
                "Stream-Fork-Offset and Stream-Fork-Sub-Offset need Stream-Forked-From",
            ));
        }
        return Ok(None);
    };
    let offset = match offset.map(parse_offset).transpose()? {
        None | Some(ReadFrom::Tail) => None,
        Some(ReadFrom::Start) => Some(0),
        Some(ReadFrom::At(pos)) => Some(pos),
    };
    let sub = sub.map(params::sub_offset).transpose()?.unwrap_or(0);
    Ok(Some(ForkSpec {
        source: source_path(source)?,
        offset,
        sub,
    }))
}

/// `Stream-Forked-From` names a stream on this server: a path under `/v1/stream/`, a name
/// relative to it, or a full URL of one. The path gets the same canonical form as request
/// paths (and the same refusals), so every spelling that reaches a stream names it as a source.
fn source_path(value: &str) -> Result<String, ApiError> {
    let path = match value.find("://") {
        Some(i) => {
            let rest = &value[i + 3..];
            rest.find('/').map_or("", |j| &rest[j..])
        }
        None => value,
    };
    let path = path.split(['?', '#']).next().unwrap_or("");
    let invalid =
        |e: PathError| ApiError::bad_request(format!("invalid Stream-Forked-From {value:?}: {e}"));
    // An absolute path is canonicalized before looking for the prefix, so `/v1/%73tream/x`
    // is `/v1/stream/x` here as it is in a request line.
    let absolute = match path.strip_prefix('/') {
        Some(_) => canonical(path).map_err(invalid)?,
        None => Cow::Borrowed(path),
    };
    let full = if absolute.starts_with(STREAM_PREFIX) {
        absolute.into_owned()
    } else {
        let name = absolute.trim_start_matches('/');
        if name.is_empty() {
            return Err(ApiError::bad_request("Stream-Forked-From names no stream"));
        }
        canonical(&format!("{STREAM_PREFIX}{name}"))
            .map_err(invalid)?
            .into_owned()
    };
    Ok(full)
}

pub async fn append(
    app: &App,
    name: &str,
    req: &Parts,
    body: RequestBody,
) -> Result<Response<ResponseBody>, ApiError> {
    let hs = &ReqHeaders::scan(&req.headers);
    hs.no_conflicts()?;
    let close = params::closed_flag(hs);
    let producer = params::producer(hs)?;
    let stream_seq = hs.text(Field::StreamSeq)?.map(str::to_string);
    let content_type = hs
        .text(Field::ContentType)?
        .filter(|c| !c.is_empty())
        .map(str::to_string);
    let body = read_body(hs, body, app.config.limits.max_request_body_bytes).await?;
    if !body.is_empty()
        && let Some(ct) = &content_type
        && let Err(e) = params::check_media_type(ct)
    {
        // Not a type at all, so no type mismatch: a closed stream's 409, or this 400. (A
        // close without a body ignores its type.)
        return Err(refused_body(app, name, None, e));
    }
    let refused = |e: ApiError| refused_body(app, name, content_type.as_deref(), e);
    if body.is_empty() && !close {
        return Err(refused(ApiError::bad_request(
            "empty body: an append needs data unless Stream-Closed: true closes the stream",
        )));
    }
    let payload = if body.is_empty() {
        Default::default()
    } else {
        let Some(ct) = &content_type else {
            return Err(refused(ApiError::bad_request(
                "Content-Type is required with a body",
            )));
        };
        // The body is framed by its declared type, and a body declared JSON must be JSON.
        to_payload(body, framing_of(ct), EmptyArray::Rejected).map_err(refused)?
    };
    let had_data = !payload.is_empty();
    let out = app
        .engine
        .append(
            name,
            AppendRequest {
                content_type,
                payload,
                stream_seq,
                producer,
                close,
            },
        )
        .await?;
    // New data from a producer is 200; everything else (plain appends, duplicates, closes) 204.
    let status = if out.status == AppendStatus::Written && out.producer.is_some() && had_data {
        StatusCode::OK
    } else {
        StatusCode::NO_CONTENT
    };
    let mut resp = Response::builder()
        .status(status)
        .header(&names::STREAM_NEXT_OFFSET, offset_header(out.next));
    if out.closed {
        resp = resp.header(&names::STREAM_CLOSED, "true");
    }
    if let Some(p) = out.producer {
        resp = resp
            .header(&names::PRODUCER_EPOCH, p.epoch)
            .header(&names::PRODUCER_SEQ, p.seq);
    }
    Ok(resp.body(body::empty()).expect("static headers"))
}

/// A body that cannot be appended (`e`, a 400) is refused by the checks that come before it
/// (the protocol's precedence): a missing stream's 404, a closed stream's 409 with
/// `Stream-Closed`, and a content type other than the stream's 409.
fn refused_body(app: &App, name: &str, content_type: Option<&str>, e: ApiError) -> ApiError {
    match app.engine.info(name) {
        Err(not_there) => not_there.into(),
        Ok(info) if info.closed => EngineError::Closed { next: info.next }.into(),
        Ok(info)
            if content_type.is_some_and(|ct| {
                !riffle_engine::has_media_key(ct, &riffle_engine::media_key(&info.content_type))
            }) =>
        {
            EngineError::ContentTypeMismatch {
                expected: info.content_type.to_string(),
            }
            .into()
        }
        Ok(_) => e,
    }
}

pub async fn delete(app: &App, name: &str) -> Result<Response<ResponseBody>, ApiError> {
    app.engine.delete(name).await?;
    Ok(Response::builder()
        .status(StatusCode::NO_CONTENT)
        .body(body::empty())
        .expect("static response"))
}
