//! The router endpoints: `PUT/GET/DELETE /v0/routers/:r` and the listing `GET /v0/routers`.
//! Each parses and validates, makes one engine call, and renders.

use super::error::{engine, invalid, topic_not_found};
use super::render::{self, Perf};
use super::request::{parse, query_value, tag_match, tag_match_json};
use crate::http::auth::Scopes;
use crate::http::body::ResponseBody;
use crate::http::{ApiError, App};
use bytes::Bytes;
use http::{Response, StatusCode};
use riffle_engine::EngineError;
use riffle_engine::topic::router::{Guarantee, RouterDef, RouterInfo};
use serde::Deserialize;
use serde_json::{Value, json};

type Answer = Result<Response<ResponseBody>, ApiError>;

/// Router names: topic names, which may also contain `>`.
pub fn check_router_name(name: &str) -> Result<(), ApiError> {
    let b = name.as_bytes();
    let ok = !b.is_empty()
        && b.len() <= 255
        && b[0].is_ascii_alphanumeric()
        && b[1..]
            .iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'_' | b':' | b'-' | b'>'));
    if ok {
        Ok(())
    } else {
        Err(invalid(format!(
            "invalid router name {name:?}: names match ^[A-Za-z0-9][A-Za-z0-9._:>-]{{0,254}}$"
        )))
    }
}

/// `PUT /v0/routers/:r`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RouterBody {
    source: Option<String>,
    dest: Option<String>,
    preserve_node: Option<bool>,
    preserve_tag: Option<bool>,
    create_dest: Option<bool>,
    filter: Option<Value>,
    allow_cycle: Option<bool>,
    guarantee: Option<String>,
    // What `GET` shows besides the definition: a client may send it back unchanged.
    #[serde(rename = "router")]
    _router: Option<Value>,
    #[serde(rename = "created")]
    _created: Option<Value>,
    #[serde(rename = "forwarded_total")]
    _forwarded_total: Option<Value>,
}

impl RouterBody {
    fn def(self) -> Result<RouterDef, ApiError> {
        let (Some(source), Some(dest)) = (self.source, self.dest) else {
            return Err(invalid("a router needs a source and a dest"));
        };
        super::request::check_name(&source)?;
        super::request::check_name(&dest)?;
        if source == dest {
            return Err(invalid("a router's source and dest must differ"));
        }
        let filter = match self.filter {
            None | Some(Value::Null) => None,
            Some(f) => Some(tag_match(&f)?),
        };
        let guarantee = match self.guarantee.as_deref() {
            None | Some("at_least_once") => Guarantee::AtLeastOnce,
            Some("exactly_once") => Guarantee::ExactlyOnce,
            Some(g) => {
                return Err(invalid(format!(
                    "guarantee must be at_least_once or exactly_once, not {g:?}"
                )));
            }
        };
        Ok(RouterDef {
            source,
            dest,
            preserve_node: self.preserve_node.unwrap_or(true),
            preserve_tag: self.preserve_tag.unwrap_or(true),
            create_dest: self.create_dest.unwrap_or(true),
            filter,
            allow_cycle: self.allow_cycle.unwrap_or(false),
            guarantee,
        })
    }
}

fn guarantee(g: Guarantee) -> &'static str {
    match g {
        Guarantee::AtLeastOnce => "at_least_once",
        Guarantee::ExactlyOnce => "exactly_once",
    }
}

/// A router's definition as the API shows it.
fn def_json(name: &str, d: &RouterDef) -> Value {
    json!({
        "router": name,
        "source": d.source,
        "dest": d.dest,
        "preserve_node": d.preserve_node,
        "preserve_tag": d.preserve_tag,
        "create_dest": d.create_dest,
        "filter": d.filter.as_ref().map(tag_match_json),
        "allow_cycle": d.allow_cycle,
        "guarantee": guarantee(d.guarantee),
    })
}

fn info_json(i: &RouterInfo) -> Value {
    let mut v = def_json(&i.name, &i.def);
    v["forwarded_total"] = json!(i.forwarded_total);
    v
}

/// The engine's router errors in the API's codes.
fn router_error(name: &str, def: Option<&RouterDef>, e: EngineError) -> ApiError {
    match e {
        EngineError::RouterNotFound => {
            ApiError::new(StatusCode::NOT_FOUND, format!("router {name:?} not found"))
                .code("router_not_found")
                .detail(json!({ "router": name }))
        }
        EngineError::RouterCycle(cycle) => ApiError::new(
            StatusCode::CONFLICT,
            format!(
                "router {name:?} would close a cycle: {}",
                cycle.join(" -> ")
            ),
        )
        .code("router_cycle")
        .detail(json!({ "router": name, "cycle": cycle })),
        EngineError::RouterFanIn(other) => {
            let dest = def.map_or("", |d| d.dest.as_str());
            ApiError::new(
                StatusCode::CONFLICT,
                format!(
                    "topic {dest:?} is already the dest of router {other:?} (one source per dest)"
                ),
            )
            .code("topic_exists_incompatible")
            .detail(json!({ "topic": dest, "reason": "router_dest_fan_in", "router": other }))
        }
        EngineError::RouterSelf => invalid("a router's source and dest must differ"),
        e => engine(def.map_or(name, |d| d.dest.as_str()), e),
    }
}

pub async fn put(app: &App, name: &str, body: Bytes) -> Answer {
    let perf = Perf::start();
    let b: RouterBody = parse(&body)?;
    let def = b.def()?;
    // Routers are configuration: `admin`, with both names inside the key's prefixes.
    let cred = crate::http::access::current();
    let names = [def.source.as_str(), def.dest.as_str()];
    crate::http::access::check_names(cred.as_ref(), names, Scopes::ADMIN)?;
    // A missing topic is named in the answer.
    if let Err(EngineError::NotFound) = app.engine.topic_info(&def.source, false) {
        return Err(topic_not_found(&def.source));
    }
    if !def.create_dest
        && let Err(EngineError::NotFound) = app.engine.topic_info(&def.dest, false)
    {
        return Err(topic_not_found(&def.dest));
    }
    let put = app
        .engine
        .router_put(name, def.clone())
        .await
        .map_err(|e| router_error(name, Some(&def), e))?;
    let status = if put.created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    let mut v = def_json(name, &put.info.def);
    v["created"] = json!(put.created);
    Ok(render::json_response(status, v, &perf))
}

pub fn get(app: &App, name: &str) -> Answer {
    let perf = Perf::start();
    let info = app
        .engine
        .router_get(name)
        .map_err(|e| router_error(name, None, e))?;
    let cred = crate::http::access::current();
    let (s, d) = (info.def.source.as_str(), info.def.dest.as_str());
    crate::http::access::check_names(cred.as_ref(), [s, d], Scopes::READ)?;
    Ok(render::json_response(
        StatusCode::OK,
        info_json(&info),
        &perf,
    ))
}

pub async fn delete(app: &App, name: &str) -> Answer {
    let perf = Perf::start();
    if let Ok(info) = app.engine.router_get(name) {
        let cred = crate::http::access::current();
        let (s, d) = (info.def.source.as_str(), info.def.dest.as_str());
        crate::http::access::check_names(cred.as_ref(), [s, d], Scopes::DELETE)?;
    }
    let deleted = app
        .engine
        .router_delete(name)
        .await
        .map_err(|e| router_error(name, None, e))?;
    let v = json!({ "router": name, "deleted": deleted });
    Ok(render::json_response(StatusCode::OK, v, &perf))
}

pub fn list(app: &App, query: Option<&str>) -> Answer {
    let perf = Perf::start();
    let prefix = query_value(query, "prefix").unwrap_or_default();
    let source = query_value(query, "source");
    let dest = query_value(query, "dest");
    let (page_size, after) = super::request::page(query)?;
    let cred = crate::http::access::current();
    let (routers, more) = super::request::visible_page(
        page_size,
        after,
        |after, n| {
            let (s, d) = (source.as_deref(), dest.as_deref());
            app.engine.router_list(&prefix, s, d, after, n)
        },
        |r| {
            cred.as_ref()
                .is_none_or(|c| c.covers(&r.def.source) && c.covers(&r.def.dest))
        },
        |r| &r.name,
    );
    let items: Vec<Value> = routers
        .iter()
        .map(|r| {
            json!({
                "router": r.name,
                "source": r.def.source,
                "dest": r.def.dest,
                "guarantee": guarantee(r.def.guarantee),
                "forwarded_total": r.forwarded_total,
            })
        })
        .collect();
    let mut v = json!({ "routers": items });
    if more && let Some(last) = routers.last() {
        v["next_cursor"] = super::request::next_cursor(&last.name);
    }
    Ok(render::json_response(StatusCode::OK, v, &perf))
}
