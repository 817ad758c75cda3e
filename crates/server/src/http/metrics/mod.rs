//! Prometheus metrics (`prometheus-client`): one registry per server, rendered at `/metrics`
//! and `/v0/metrics`.
//!
//! Cardinality is bounded: labels are route templates ([`Route`]), methods, status classes,
//! live-connection kinds, durability classes, auth-failure reasons and limit names, never a
//! stream or topic name. The per-request path does no label lookup and no allocation: the
//! counter and histogram of each (route, method, class) are created on first use and their
//! handles cached in fixed arrays indexed by the labels' positions.

mod routes;
mod storage;
mod subscriptions;

pub use routes::Route;

use http::{HeaderValue, Method, StatusCode};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use riffle_engine::Engine;
use routes::{CLASSES, METHODS, ROUTES, class_index, method_index};
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

/// Why a request was refused, for the auth-failure and 429 counters: an [`ApiError`]'s
/// `reason` travels to [`App::handle`](super::App::handle) as this response extension.
///
/// [`ApiError`]: super::ApiError
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reason(pub &'static str);

/// Kinds of live connections (the `kind` label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LiveKind {
    Sse,
    LongPoll,
    Watch,
    Work,
    Ws,
}

const LIVE_KINDS: [(LiveKind, &str); 5] = [
    (LiveKind::Sse, "sse"),
    (LiveKind::LongPoll, "long_poll"),
    (LiveKind::Watch, "watch"),
    (LiveKind::Work, "work"),
    (LiveKind::Ws, "ws"),
];

/// Request latency buckets, in seconds: from a cached read to a long-poll's timeout.
const LATENCY_BUCKETS: [f64; 17] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0, 30.0,
];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    api: &'static str,
    route: &'static str,
    method: &'static str,
    status: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    api: &'static str,
    route: &'static str,
    method: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabel {
    kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabel {
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LimitLabel {
    limit: &'static str,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

/// The server's metrics. Shared by the `App` that answers during recovery and the one after.
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    /// Handles of `requests`, by `(route, method, class)` position.
    request_handles: Box<[OnceLock<Counter>]>,
    latency: HistogramFamily<RouteLabels>,
    /// Handles of `latency`, by `(route, method)` position.
    latency_handles: Box<[OnceLock<Histogram>]>,
    live: [Gauge; 5],
    auth_failures: Family<ReasonLabel, Counter>,
    throttled: Family<LimitLabel, Counter>,
    storage: Arc<storage::StorageCollector>,
    /// Subscription deliveries.
    pub subscriptions: subscriptions::SubscriptionMetrics,
}

impl Metrics {
    /// `progress` counts WAL records replayed by the recovery in progress.
    pub fn new(progress: Arc<AtomicU64>) -> Arc<Self> {
        // `register` ends each help text with a period itself.
        let mut registry = Registry::default();
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "riffle_http_requests",
            "HTTP requests answered, by API, route template, method and status class",
            requests.clone(),
        );
        let latency = HistogramFamily::<RouteLabels>::new_with_constructor(|| {
            Histogram::new(LATENCY_BUCKETS)
        });
        registry.register(
            "riffle_http_request_duration_seconds",
            "Time from a request's head to its response's head (a live response's wait for data included, not its life), by API, route template and method (a POST to `stream` is an append)",
            latency.clone(),
        );
        let live_family = Family::<KindLabel, Gauge>::default();
        registry.register(
            "riffle_live_connections",
            "Live responses open now (SSE, long-polls, /v0/watch and /work streams, WebSockets), by kind",
            live_family.clone(),
        );
        // Created up front: every kind shows, at 0 too.
        let live = LIVE_KINDS.map(|(_, k)| live_family.get_or_create_owned(&KindLabel { kind: k }));
        let auth_failures = Family::<ReasonLabel, Counter>::default();
        registry.register(
            "riffle_auth_failures",
            "Requests refused 401 or 403 by authentication or authorization, by reason",
            auth_failures.clone(),
        );
        let throttled = Family::<LimitLabel, Counter>::default();
        registry.register(
            "riffle_throttled",
            "Requests refused 429 by a limit, by the limit's configuration key",
            throttled.clone(),
        );
        let storage = Arc::new(storage::StorageCollector {
            engine: OnceLock::new(),
            progress,
        });
        registry.register_collector(Box::new(storage.clone()));
        let subscriptions = subscriptions::SubscriptionMetrics::register(&mut registry);
        let slots = ROUTES * METHODS.len() * CLASSES.len();
        Arc::new(Self {
            registry,
            requests,
            request_handles: (0..slots).map(|_| OnceLock::new()).collect(),
            latency,
            latency_handles: (0..ROUTES * METHODS.len())
                .map(|_| OnceLock::new())
                .collect(),
            live,
            auth_failures,
            throttled,
            storage,
            subscriptions,
        })
    }

    /// The engine recovery produced: its gauges and the WAL's numbers are exported from now on.
    pub fn set_engine(&self, engine: Engine) {
        let _ = self.storage.engine.set(engine);
    }

    /// Count one answered request and its time to the response head.
    pub fn request(
        &self,
        route: Route,
        method: &Method,
        status: StatusCode,
        reason: Option<Reason>,
        elapsed: Duration,
    ) {
        let (m, c) = (method_index(method), class_index(status));
        let i = (route.index() * METHODS.len() + m) * CLASSES.len() + c;
        if let Some(slot) = self.request_handles.get(i) {
            slot.get_or_init(|| {
                self.requests.get_or_create_owned(&RequestLabels {
                    api: route.api(),
                    route: route.template(),
                    method: METHODS[m],
                    status: CLASSES[c],
                })
            })
            .inc();
        }
        if let Some(slot) = self.latency_handles.get(route.index() * METHODS.len() + m) {
            slot.get_or_init(|| {
                self.latency.get_or_create_owned(&RouteLabels {
                    api: route.api(),
                    route: route.template(),
                    method: METHODS[m],
                })
            })
            .observe(elapsed.as_secs_f64());
        }
        self.refused(status, reason);
    }

    /// Count a refusal by its reason: 401/403 that carry one (a 403 without one is not about
    /// credentials, e.g. a fenced producer), and every 429.
    fn refused(&self, status: StatusCode, reason: Option<Reason>) {
        match (status.as_u16(), reason) {
            (401 | 403, Some(Reason(r))) => {
                self.auth_failures
                    .get_or_create(&ReasonLabel { reason: r })
                    .inc();
            }
            (429, r) => {
                let limit = r.map_or("unknown", |r| r.0);
                self.throttled.get_or_create(&LimitLabel { limit }).inc();
            }
            _ => {}
        }
    }

    /// The gauge of live connections of `kind`.
    pub fn live(&self, kind: LiveKind) -> Gauge {
        let i = LIVE_KINDS.iter().position(|(k, _)| *k == kind).unwrap_or(0);
        self.live[i].clone()
    }

    /// Live connections open now, by kind (the `kind` label's values).
    pub fn live_counts(&self) -> [(&'static str, i64); 5] {
        std::array::from_fn(|i| (LIVE_KINDS[i].1, self.live[i].get()))
    }

    /// The registry as text: OpenMetrics when `accept` asks for it (Prometheus does), else the
    /// Prometheus text format 0.0.4. `extra` (families in the text format, e.g. the `/v0`
    /// gauges) goes before OpenMetrics' `# EOF`. Returns the content type and the text.
    pub fn render(&self, accept: Option<&HeaderValue>, extra: &str) -> (&'static str, String) {
        let open = accept
            .and_then(|a| a.to_str().ok())
            .is_some_and(|a| a.contains("application/openmetrics-text"));
        let mut text = String::with_capacity(16 * 1024);
        // Writing into a String cannot fail; an encoder error would be a bug in a metric's
        // encoding, and then the scrape shows what was written before it.
        if open {
            let _ = prometheus_client::encoding::text::encode_registry(&mut text, &self.registry);
            text.push_str(extra);
            let _ = prometheus_client::encoding::text::encode_eof(&mut text);
            (
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
                text,
            )
        } else {
            let _ = prometheus_client::encoding::prometheus_text::encode(&mut text, &self.registry);
            text.push_str(extra);
            (
                prometheus_client::encoding::prometheus_text::CONTENT_TYPE,
                text,
            )
        }
    }
}
