//! Route templates: the bounded set of `route` labels. A request's path is reduced to one of
//! these, never to a stream or topic name, so the number of series stays fixed however many
//! names clients use.

use http::{Method, StatusCode};

/// A route template (an index into [`TABLE`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Route(u8);

/// `(api, route)` of every template.
const TABLE: &[(&str, &str)] = &[
    ("streams", "stream"),
    ("streams", "reserved"),
    ("streams", "__ds/jwks.json"),
    ("streams", "__ds/subscriptions/:id"),
    ("streams", "__ds/subscriptions/:id/streams"),
    ("streams", "__ds/subscriptions/:id/callback"),
    ("streams", "__ds/subscriptions/:id/claim"),
    ("streams", "__ds/subscriptions/:id/ack"),
    ("streams", "__ds/subscriptions/:id/release"),
    ("topics", "health"),
    ("topics", "ready"),
    ("topics", "metrics"),
    ("topics", "topics"),
    ("topics", "topics/:t"),
    ("topics", "topics/:t/diff"),
    ("topics", "topics/:t/delete"),
    ("topics", "topics/:t/claim"),
    ("topics", "topics/:t/ack"),
    ("topics", "topics/:t/nack"),
    ("topics", "topics/:t/extend"),
    ("topics", "topics/:t/work"),
    ("topics", "topics/:t/other"),
    ("topics", "routers"),
    ("topics", "routers/:r"),
    ("topics", "watch"),
    ("topics", "watch/:w"),
    ("topics", "ws"),
    ("topics", "unknown"),
    ("other", "healthz"),
    ("other", "readyz"),
    ("other", "metrics"),
    ("other", "unknown"),
];

pub const ROUTES: usize = TABLE.len();

const fn at(route: &str) -> Route {
    let mut i = 0;
    while i < TABLE.len() {
        if eq(TABLE[i].1.as_bytes(), route.as_bytes()) {
            return Route(i as u8);
        }
        i += 1;
    }
    panic!("no such route template");
}

const fn eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let mut i = 0;
    while i < a.len() {
        if a[i] != b[i] {
            return false;
        }
        i += 1;
    }
    true
}

impl Route {
    pub const STREAM: Route = at("stream");
    pub const WS: Route = at("ws");
    // The last two rows (`at` finds the `/v0` rows of the same names first).
    const OTHER_METRICS: Route = Route(TABLE.len() as u8 - 2);
    const OTHER_UNKNOWN: Route = Route(TABLE.len() as u8 - 1);
    const TOPICS_UNKNOWN: Route = at("unknown");

    pub fn index(self) -> usize {
        self.0 as usize
    }

    pub fn api(self) -> &'static str {
        TABLE[self.index()].0
    }

    pub fn template(self) -> &'static str {
        TABLE[self.index()].1
    }

    /// The template of a request path (raw or canonical: only the shape matters).
    pub fn of(path: &str) -> Route {
        if let Some(name) = path.strip_prefix(super::super::STREAM_PREFIX) {
            return match name.strip_prefix("__ds/") {
                Some(rest) => Self::reserved(rest),
                None if name == "__ds" => at("reserved"),
                None => Route::STREAM,
            };
        }
        if let Some(rest) = path.strip_prefix("/v0") {
            return Self::topics(rest.strip_prefix('/').unwrap_or(rest));
        }
        match path {
            "/healthz" => at("healthz"),
            "/readyz" => at("readyz"),
            "/metrics" => Route::OTHER_METRICS,
            _ => Route::OTHER_UNKNOWN,
        }
    }

    /// The `__ds` control APIs (`rest` after `__ds/`).
    fn reserved(rest: &str) -> Route {
        let segs: Vec<&str> = rest.split('/').collect();
        match segs.as_slice() {
            ["jwks.json"] => at("__ds/jwks.json"),
            ["subscriptions", _] => at("__ds/subscriptions/:id"),
            ["subscriptions", _, "streams", ..] => at("__ds/subscriptions/:id/streams"),
            ["subscriptions", _, "callback"] => at("__ds/subscriptions/:id/callback"),
            ["subscriptions", _, "claim"] => at("__ds/subscriptions/:id/claim"),
            ["subscriptions", _, "ack"] => at("__ds/subscriptions/:id/ack"),
            ["subscriptions", _, "release"] => at("__ds/subscriptions/:id/release"),
            _ => at("reserved"),
        }
    }

    fn topics(rest: &str) -> Route {
        let mut segs = rest.split('/');
        let first = segs.next().unwrap_or("");
        let second = segs.next();
        let third = segs.next();
        if segs.next().is_some() {
            return Route::TOPICS_UNKNOWN;
        }
        match (first, second, third) {
            ("health", None, None) => at("health"),
            ("ready", None, None) => at("ready"),
            ("metrics", None, None) => at("metrics"),
            ("topics", None, None) => at("topics"),
            ("topics", Some(_), None) => at("topics/:t"),
            ("topics", Some(_), Some(op)) => match op {
                "diff" => at("topics/:t/diff"),
                "delete" => at("topics/:t/delete"),
                "claim" => at("topics/:t/claim"),
                "ack" => at("topics/:t/ack"),
                "nack" => at("topics/:t/nack"),
                "extend" => at("topics/:t/extend"),
                "work" => at("topics/:t/work"),
                _ => at("topics/:t/other"),
            },
            ("routers", None, None) => at("routers"),
            ("routers", Some(_), None) => at("routers/:r"),
            ("watch", None, None) => at("watch"),
            ("watch", Some(_), None) => at("watch/:w"),
            ("ws", None, None) => Route::WS,
            _ => Route::TOPICS_UNKNOWN,
        }
    }
}

/// `method` labels; anything else is `other`.
pub const METHODS: [&str; 7] = ["GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "other"];

pub fn method_index(m: &Method) -> usize {
    match *m {
        Method::GET => 0,
        Method::HEAD => 1,
        Method::POST => 2,
        Method::PUT => 3,
        Method::DELETE => 4,
        Method::OPTIONS => 5,
        _ => 6,
    }
}

/// `status` labels: the status class.
pub const CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

pub fn class_index(s: StatusCode) -> usize {
    (s.as_u16() / 100).clamp(1, 5) as usize - 1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_never_carry_names() {
        let cases = [
            ("/v1/stream/a/b/c", "streams", "stream"),
            ("/v1/stream/__ds/x", "streams", "reserved"),
            ("/v1/stream/__ds", "streams", "reserved"),
            ("/v1/stream/__ds/jwks.json", "streams", "__ds/jwks.json"),
            (
                "/v1/stream/__ds/subscriptions/s-1",
                "streams",
                "__ds/subscriptions/:id",
            ),
            (
                "/v1/stream/__ds/subscriptions/s-1/streams/a%2Fb",
                "streams",
                "__ds/subscriptions/:id/streams",
            ),
            (
                "/v1/stream/__ds/subscriptions/s-1/claim",
                "streams",
                "__ds/subscriptions/:id/claim",
            ),
            (
                "/v1/stream/__ds/subscriptions/s-1/x/y",
                "streams",
                "reserved",
            ),
            ("/v0/topics", "topics", "topics"),
            ("/v0/topics/orders", "topics", "topics/:t"),
            ("/v0/topics/orders/diff", "topics", "topics/:t/diff"),
            ("/v0/topics/orders/zzz", "topics", "topics/:t/other"),
            ("/v0/topics/a/b/c", "topics", "unknown"),
            ("/v0/routers/r1", "topics", "routers/:r"),
            ("/v0/watch/wid_1", "topics", "watch/:w"),
            ("/v0/ws", "topics", "ws"),
            ("/v0/metrics", "topics", "metrics"),
            ("/v0", "topics", "unknown"),
            ("/metrics", "other", "metrics"),
            ("/favicon.ico", "other", "unknown"),
        ];
        for (path, api, route) in cases {
            let r = Route::of(path);
            assert_eq!((r.api(), r.template()), (api, route), "{path}");
        }
        assert_eq!(class_index(StatusCode::TOO_MANY_REQUESTS), 3);
        assert_eq!(CLASSES[class_index(StatusCode::OK)], "2xx");
    }
}
