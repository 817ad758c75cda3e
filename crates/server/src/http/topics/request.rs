//! `/v0` request bodies and queries: parsed with serde (record `data` and `meta` kept as the
//! client's JSON text, never turned into a tree), validated against the documented bounds,
//! and turned into engine requests. Every violation is a 400 with its documented code.

use super::error::invalid;
use crate::http::ApiError;
use bytes::Bytes;
use http::StatusCode;
use riffle_engine::Durability;
use riffle_engine::topic::{DiffQuery, Discard, NewRecord, TagMatch, TopicConfig, TopicKind};
use serde::Deserialize;
use serde::de::{DeserializeOwned, IgnoredAny};
use serde_json::value::RawValue;

pub const MAX_BATCH_RECORDS: usize = 10_000;
pub const MAX_RECORD_BYTES: usize = 1 << 20;
pub const MAX_META_BYTES: usize = 16 << 10;
pub const MAX_META_KEYS: usize = 64;
pub const MAX_TAG_BYTES: usize = 256;
pub const MAX_NODE_BYTES: usize = 128;
pub const MAX_LIMIT: usize = 1000;
pub const MAX_IDEMPOTENCY_KEY: usize = 256;
pub const MAX_WAIT_MS: u64 = 30_000;
pub const DEFAULT_DIFF_BYTES: usize = 1 << 20;
pub const MAX_DIFF_BYTES: usize = 8 << 20;

/// Topic and router names: `^[A-Za-z0-9][A-Za-z0-9._:-]{0,254}$`.
pub fn valid_name(name: &str) -> bool {
    let b = name.as_bytes();
    !b.is_empty()
        && b.len() <= 255
        && b[0].is_ascii_alphanumeric()
        && b[1..]
            .iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'_' | b':' | b'-'))
}

pub fn check_name(name: &str) -> Result<(), ApiError> {
    if valid_name(name) {
        Ok(())
    } else {
        Err(invalid(format!(
            "invalid topic name {name:?}: names match ^[A-Za-z0-9][A-Za-z0-9._:-]{{0,254}}$"
        )))
    }
}

/// A struct that must come as a JSON object (serde's derived `Deserialize` also takes an
/// array of the fields in order, which no client means).
#[derive(Debug)]
pub struct Object<T>(pub T);

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Object<T> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<T>(std::marker::PhantomData<T>);
        impl<'de, T: Deserialize<'de>> serde::de::Visitor<'de> for V<T> {
            type Value = T;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<T, A::Error> {
                T::deserialize(serde::de::value::MapAccessDeserializer::new(map))
            }
        }
        d.deserialize_map(V(std::marker::PhantomData)).map(Object)
    }
}

/// Parse a JSON object body that borrows from it. The whole body must be UTF-8 (members the
/// parser skips are not checked otherwise).
pub fn parse_borrowed<'a, T: Deserialize<'a>>(body: &'a [u8]) -> Result<T, ApiError> {
    if std::str::from_utf8(body).is_err() {
        return Err(invalid("the request body is not UTF-8"));
    }
    serde_json::from_slice::<Object<T>>(body)
        .map(|o| o.0)
        .map_err(|e| invalid(format!("invalid JSON body: {e}")))
}

/// Parse a JSON object body (an empty body is `{}`).
pub fn parse<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    let body: &[u8] = if body.iter().all(u8::is_ascii_whitespace) {
        b"{}"
    } else {
        body
    };
    parse_borrowed(body)
}

/// The topic configuration object, every field optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigBody {
    #[serde(rename = "type")]
    kind: Option<String>,
    ttl_ms: Option<u64>,
    cap_records: Option<u64>,
    cap_bytes: Option<u64>,
    discard: Option<String>,
    durable: Option<bool>,
    durability: Option<String>,
    #[serde(default, deserialize_with = "explicit")]
    priority: Option<Option<i64>>,
    auto_priority: Option<bool>,
    auto_create: Option<bool>,
    idempotency_window_ms: Option<u64>,
    dedupe_node: Option<bool>,
    lease_ms: Option<u64>,
    claim_jitter_ms: Option<u64>,
    max_deliveries: Option<u64>,
    #[serde(default, deserialize_with = "explicit")]
    dead_letter: Option<Option<String>>,
    leases_durable: Option<bool>,
}

/// `Some(None)` for an explicit `null`, `None` when absent.
fn explicit<'de, D, T>(d: D) -> Result<Option<Option<T>>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(d).map(Some)
}

impl ConfigBody {
    /// The configuration this body asks for, over `base` (the defaults, or an existing
    /// topic's configuration when updating). `storage`: whether the server has a data dir
    /// (without one, the default class is `ephemeral`).
    pub fn apply(
        &self,
        topic: &str,
        mut c: TopicConfig,
        fresh: bool,
        storage: bool,
    ) -> Result<TopicConfig, ApiError> {
        if let Some(k) = &self.kind {
            c.kind = match k.as_str() {
                "log" => TopicKind::Log,
                "queue" => TopicKind::Queue,
                _ => {
                    return Err(invalid(format!(
                        "type must be \"log\" or \"queue\", not {k:?}"
                    )));
                }
            };
        }
        if let Some(v) = self.ttl_ms {
            c.ttl_ms = v;
        }
        if let Some(v) = self.cap_records {
            c.cap_records = v;
        }
        if let Some(v) = self.cap_bytes {
            c.cap_bytes = v;
        }
        if let Some(d) = &self.discard {
            c.discard = match d.as_str() {
                "old" => Discard::Old,
                "reject" => Discard::Reject,
                _ => {
                    return Err(invalid(format!(
                        "discard must be \"old\" or \"reject\", not {d:?}"
                    )));
                }
            };
        }
        match (&self.durability, self.durable) {
            (Some(d), durable) => {
                let class: Durability = d.parse().map_err(|_| {
                    invalid(format!(
                        "durability must be one of ephemeral, memory, disk, fsync, not {d:?}"
                    ))
                })?;
                if durable.is_some_and(|b| b != (class == Durability::Fsync)) {
                    return Err(invalid(format!(
                        "durable: {} contradicts durability: {d:?}",
                        durable.unwrap_or_default()
                    )));
                }
                c.durability = class;
            }
            (None, Some(true)) => c.durability = Durability::Fsync,
            (None, Some(false)) => c.durability = Durability::Disk,
            (None, None) if fresh && !storage => c.durability = Durability::Ephemeral,
            (None, None) => {}
        }
        if let Some(p) = self.priority {
            c.priority = p.map(|p| p.clamp(-1000, 1000) as i32);
        }
        if let Some(v) = self.auto_priority {
            c.auto_priority = v;
        }
        if let Some(v) = self.auto_create {
            c.auto_create = v;
        }
        if let Some(v) = self.idempotency_window_ms {
            c.idempotency_window_ms = v;
        }
        if let Some(v) = self.dedupe_node {
            c.dedupe_node = v;
        }
        if let Some(v) = self.lease_ms {
            c.lease_ms = v.clamp(100, 86_400_000);
        }
        if let Some(v) = self.claim_jitter_ms {
            c.claim_jitter_ms = v.min(5000);
        }
        if let Some(v) = self.max_deliveries {
            c.max_deliveries = v;
        }
        if let Some(d) = &self.dead_letter {
            if let Some(name) = d {
                check_name(name)?;
                if name == topic {
                    return Err(invalid("dead_letter must differ from the topic itself"));
                }
            }
            c.dead_letter = d.clone();
        }
        if let Some(v) = self.leases_durable {
            c.leases_durable = v;
        }
        Ok(c)
    }
}

/// One record of a write: `data` and `meta` borrowed from the request body as JSON text.
/// Unknown fields are refused (a misspelt `tag` would store the record untagged).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RecordBody<'a> {
    #[serde(default, borrow)]
    data: Option<&'a RawValue>,
    tag: Option<String>,
    node: Option<String>,
    #[serde(default, borrow)]
    meta: Option<&'a RawValue>,
}

/// `POST /v0/topics/:t`, or a WebSocket `publish` (whose frame also holds the op's own
/// fields). Unknown fields are refused: a misspelt field is an error, never a silent default.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WriteBody<'a> {
    #[serde(borrow)]
    records: Option<Vec<Object<RecordBody<'a>>>>,
    node: Option<String>,
    pub idempotency_key: Option<String>,
    pub create: Option<bool>,
    pub config: Option<Object<ConfigBody>>,
    #[serde(default)]
    #[allow(dead_code)] // accepted for compatibility; there is no backpressure to disable
    disable_backpressure: Option<bool>,
    /// The fields of a WebSocket `publish` frame around the write; refused over HTTP.
    #[serde(default)]
    op: Option<IgnoredAny>,
    #[serde(default)]
    id: Option<IgnoredAny>,
    #[serde(default)]
    topic: Option<IgnoredAny>,
    #[serde(default)]
    return_seqs: Option<IgnoredAny>,
}

pub fn check_chars(what: &str, v: &str, max: usize) -> Result<(), ApiError> {
    let n = v.chars().count();
    if n > max {
        return Err(invalid(format!(
            "{what} is {n} characters; the limit is {max}"
        )));
    }
    Ok(())
}

fn check_str(what: &str, v: &str, max: usize) -> Result<(), ApiError> {
    if v.len() > max {
        return Err(invalid(format!(
            "{what} is {} bytes; the limit is {max}",
            v.len()
        )));
    }
    Ok(())
}

impl WriteBody<'_> {
    /// Refuse the WebSocket frame's own fields in an HTTP write's body.
    pub fn http_only(&self) -> Result<(), ApiError> {
        let ws = [
            ("op", self.op.is_some()),
            ("id", self.id.is_some()),
            ("topic", self.topic.is_some()),
            ("return_seqs", self.return_seqs.is_some()),
        ];
        match ws.iter().find(|(_, present)| *present) {
            Some((name, _)) => Err(invalid(format!(
                "invalid JSON body: unknown field `{name}` (a write's body holds records, node, \
                 idempotency_key, create, config and disable_backpressure; return_seqs is a \
                 query parameter)"
            ))),
            None => Ok(()),
        }
    }

    /// The records to write, validated; their JSON text shares `body`'s memory.
    pub fn records(&mut self, body: &Bytes) -> Result<Vec<NewRecord>, ApiError> {
        let records = self.records.take().unwrap_or_default();
        if records.is_empty() {
            return Err(invalid("records must hold 1 to 10000 records"));
        }
        if records.len() > MAX_BATCH_RECORDS {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                format!(
                    "{} records in one write; the limit is {MAX_BATCH_RECORDS}",
                    records.len()
                ),
            )
            .code("batch_too_large")
            .detail(serde_json::json!({"max": MAX_BATCH_RECORDS, "count": records.len()})));
        }
        if let Some(n) = &self.node {
            check_str("node", n, MAX_NODE_BYTES)?;
        }
        let mut out = Vec::with_capacity(records.len());
        for (i, Object(r)) in records.into_iter().enumerate() {
            let data = r
                .data
                .map_or(Bytes::from_static(b"null"), |d| raw_bytes(body, d));
            if data.len() > MAX_RECORD_BYTES {
                return Err(ApiError::new(
                    StatusCode::BAD_REQUEST,
                    format!(
                        "record {i} is {} bytes; the limit is {MAX_RECORD_BYTES}",
                        data.len()
                    ),
                )
                .code("record_too_large")
                .detail(serde_json::json!({"index": i, "max": MAX_RECORD_BYTES})));
            }
            if let Some(t) = &r.tag {
                check_str("tag", t, MAX_TAG_BYTES)?;
            }
            let node = r.node.or_else(|| self.node.clone());
            if let Some(n) = &node {
                check_str("node", n, MAX_NODE_BYTES)?;
            }
            let meta = match r.meta {
                None => None,
                Some(m) if m.get() == "null" => None,
                Some(m) => Some(check_meta(i, body, m)?),
            };
            out.push(NewRecord {
                data,
                tag: r.tag,
                node,
                meta,
            });
        }
        Ok(out)
    }
}

/// A raw value's text (without the whitespace around it), as a slice of the body it was
/// parsed from: no copy.
fn raw_bytes(body: &Bytes, v: &RawValue) -> Bytes {
    let text = v.get().trim().as_bytes();
    let inside = body.as_ptr_range();
    if inside.contains(&text.as_ptr()) || text.is_empty() {
        body.slice_ref(text)
    } else {
        Bytes::copy_from_slice(text)
    }
}

fn check_meta(i: usize, body: &Bytes, m: &RawValue) -> Result<Bytes, ApiError> {
    let text = m.get().trim();
    if text.len() > MAX_META_BYTES {
        return Err(invalid(format!(
            "record {i}: meta is {} bytes; the limit is {MAX_META_BYTES}",
            text.len()
        )));
    }
    // Keys are counted on a map of raw values: the values themselves stay text.
    let map: std::collections::HashMap<String, &RawValue> = serde_json::from_str(text)
        .map_err(|_| invalid(format!("record {i}: meta must be a JSON object")))?;
    if map.len() > MAX_META_KEYS {
        return Err(invalid(format!(
            "record {i}: meta has {} keys; the limit is {MAX_META_KEYS}",
            map.len()
        )));
    }
    Ok(raw_bytes(body, m))
}

/// A reader's own node(s): a string or an array of strings.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum Nodes {
    One(String),
    Many(Vec<String>),
}

impl Nodes {
    pub fn into_vec(self) -> Vec<String> {
        match self {
            Nodes::One(n) => vec![n],
            Nodes::Many(v) => v,
        }
    }
}

/// `POST /v0/topics/:t/diff`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DiffBody {
    #[serde(default)]
    pub from_seq: u64,
    pub limit: Option<u64>,
    pub node: Option<Nodes>,
    #[serde(default)]
    pub include_tags: bool,
    pub include_meta: Option<bool>,
    #[serde(default)]
    pub wait_ms: u64,
    pub max_batch_bytes: Option<u64>,
}

impl DiffBody {
    pub fn query(&mut self) -> DiffQuery {
        DiffQuery {
            from_seq: self.from_seq,
            limit: clamp_limit(self.limit, 256),
            nodes: self.node.take().map(Nodes::into_vec).unwrap_or_default(),
            max_bytes: self.max_batch_bytes.map_or(DEFAULT_DIFF_BYTES, |b| {
                (b as usize).clamp(1, MAX_DIFF_BYTES)
            }),
        }
    }
}

/// A `limit`: default when absent, clamped to 1..=1000.
pub fn clamp_limit(limit: Option<u64>, default: usize) -> usize {
    limit.map_or(default, |l| (l as usize).clamp(1, MAX_LIMIT))
}

/// `POST /v0/topics/:t/delete`. Unknown fields are refused: a misspelt `before_seq` would
/// otherwise widen a permanent delete.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeleteBody {
    pub before_seq: Option<u64>,
    #[serde(rename = "match")]
    pub matches: Option<serde_json::Value>,
}

impl DeleteBody {
    pub fn tag_match(&self) -> Result<Option<TagMatch>, ApiError> {
        self.matches.as_ref().map(tag_match).transpose()
    }
}

/// A tag criterion as the API spells it: `["tag","Eq",x]`, `["tag","Glob","x*"]` (a
/// trailing-prefix pattern) or a bare string (Eq).
pub fn tag_match(m: &serde_json::Value) -> Result<TagMatch, ApiError> {
    {
        let bad = || {
            invalid(
                "match must be [\"tag\",\"Eq\",value], [\"tag\",\"Glob\",\"prefix*\"] or a tag string",
            )
        };
        let (op, value) = match m {
            serde_json::Value::String(s) => ("Eq", s.as_str()),
            serde_json::Value::Array(a) if a.len() == 3 => {
                let (Some("tag"), Some(op), Some(v)) =
                    (a[0].as_str(), a[1].as_str(), a[2].as_str())
                else {
                    return Err(bad());
                };
                (op, v)
            }
            _ => return Err(bad()),
        };
        match op {
            "Eq" => Ok(TagMatch::Eq(value.to_string())),
            "Glob" => match value.strip_suffix('*') {
                Some(prefix) if !prefix.contains('*') => Ok(TagMatch::Prefix(prefix.into())),
                None if !value.contains('*') => Ok(TagMatch::Eq(value.to_string())),
                _ => Err(invalid("Glob patterns may only end in * (a prefix match)")),
            },
            _ => Err(bad()),
        }
    }
}

/// A tag criterion in the API's form.
pub fn tag_match_json(m: &TagMatch) -> serde_json::Value {
    match m {
        TagMatch::Eq(x) => serde_json::json!(["tag", "Eq", x]),
        TagMatch::Prefix(p) => serde_json::json!(["tag", "Glob", format!("{p}*")]),
    }
}

/// A listing's `page_size` (default 100, at most 1000) and `cursor` (base64 of
/// `{"after": name}`), from the query.
pub fn page(query: Option<&str>) -> Result<(usize, Option<String>), ApiError> {
    use base64::Engine as _;
    let page_size = match query_value(query, "page_size") {
        None => 100,
        Some(v) => match v.parse::<usize>() {
            Ok(n) if n >= 1 => n.min(1000),
            _ => return Err(invalid("page_size must be an integer from 1 to 1000")),
        },
    };
    let decode = |c: &str| -> Option<String> {
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(c)
            .or_else(|_| base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(c))
            .ok()?;
        let v: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
        v.get("after")?.as_str().map(str::to_string)
    };
    let after = match query_value(query, "cursor") {
        None => None,
        Some(c) => Some(decode(&c).ok_or_else(|| invalid("invalid cursor"))?),
    };
    Ok((page_size, after))
}

/// A page of at most `page_size` items the caller may see, and whether more may follow. Pages
/// of the engine's listing (`fetch(after, n)`) are read until the page is full, so the page's
/// cursor is always the name of an item shown: a hidden name never leaks through it.
pub fn visible_page<T>(
    page_size: usize,
    mut after: Option<String>,
    mut fetch: impl FnMut(Option<&str>, usize) -> (Vec<T>, bool),
    visible: impl Fn(&T) -> bool,
    name: impl Fn(&T) -> &str,
) -> (Vec<T>, bool) {
    let mut out = Vec::new();
    loop {
        let (items, more) = fetch(after.as_deref(), page_size);
        after = items.last().map(|i| name(i).to_string());
        for i in items {
            if visible(&i) {
                if out.len() == page_size {
                    return (out, true);
                }
                out.push(i);
            }
        }
        if !more || out.len() == page_size {
            return (out, more);
        }
    }
}

/// The cursor of the page after the one ending at `last`.
pub fn next_cursor(last: &str) -> serde_json::Value {
    use base64::Engine as _;
    let c = serde_json::json!({ "after": last }).to_string();
    serde_json::json!(base64::engine::general_purpose::STANDARD.encode(c))
}

/// A boolean query parameter (`true`/`false`/`1`/`0`), or its default.
pub fn query_flag(query: Option<&str>, key: &str, default: bool) -> Result<bool, ApiError> {
    match query_value(query, key) {
        None => Ok(default),
        Some(v) => match v.as_str() {
            "true" | "1" | "" => Ok(true),
            "false" | "0" => Ok(false),
            _ => Err(invalid(format!("{key} must be true or false"))),
        },
    }
}

/// The value of a query parameter.
pub fn query_value(query: Option<&str>, key: &str) -> Option<String> {
    form_urlencoded::parse(query?.as_bytes())
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.into_owned())
}
