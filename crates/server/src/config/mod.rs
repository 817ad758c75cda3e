//! Layered configuration, compatible with the `durable-streams-server` layout users migrate
//! from. Later layers win: built-in defaults, `config/default.toml`, `config/<profile>.toml`,
//! `config/local.toml`, `--config PATH`, then `DS_*` environment variables with `__` between
//! section and key (`DS_SERVER__PORT=8080`).

use riffle_engine::{ArenaBacking, Durability};
use serde::Deserialize;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct Settings {
    pub server: ServerSettings,
    pub http: HttpSettings,
    pub limits: LimitSettings,
    pub storage: StorageSettings,
    pub tls: TlsSettings,
    pub log: LogSettings,
    pub auth: AuthSettings,
    pub metrics: MetricsSettings,
    pub subscriptions: SubscriptionSettings,
}

/// The `__ds` subscriptions' webhook delivery.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SubscriptionSettings {
    /// Accept `http://localhost` and `http://127.0.0.x` webhook URLs: the protocol's
    /// development exception, never for production.
    pub allow_localhost_webhooks: bool,
    /// Whole-request and connect timeouts of one webhook delivery.
    pub webhook_timeout_ms: u64,
    pub webhook_connect_timeout_ms: u64,
    /// Webhook deliveries in flight at once, server-wide.
    pub webhook_concurrency: u64,
    /// The base URL (`https://host[:port]`) of callback and JWKS URLs; empty: the scheme and
    /// `Host` of the request that created the subscription.
    pub public_url: String,
}

impl Default for SubscriptionSettings {
    fn default() -> Self {
        Self {
            allow_localhost_webhooks: false,
            webhook_timeout_ms: 10_000,
            webhook_connect_timeout_ms: 5_000,
            webhook_concurrency: 64,
            public_url: String::new(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MetricsSettings {
    /// Most per-topic series one scrape shows (beyond them, `topics_per_topic_truncated` is
    /// 1): a scrape's size must not grow with the number of topics.
    pub max_series: u64,
}

impl Default for MetricsSettings {
    fn default() -> Self {
        Self { max_series: 1000 }
    }
}

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct AuthSettings {
    /// API keys: comma-separated `key`, `key:scopes` or `key:scopes:prefixes` (empty: auth
    /// off). Alias: `TOPICS_API_KEYS`.
    pub api_keys: String,
    /// Allow a non-loopback bind with auth off. Alias: `TOPICS_ALLOW_INSECURE_NO_AUTH`.
    pub allow_insecure_no_auth: bool,
    /// The probes (`/healthz`, `/readyz`, `/v0/health`, `/v0/ready`) need a credential too.
    /// Alias: `TOPICS_PROBE_AUTH`.
    pub probe_auth: bool,
    /// A cookie that may carry the token (browsers' EventSource cannot set headers); empty:
    /// none.
    pub cookie_name: String,
    /// JWT gatekeeper tokens signed with HS256 by this shared secret (at least 32 bytes).
    pub jwt_hs256_secret: String,
    /// JWT gatekeeper tokens signed by the private half of this PEM public key (RSA: RS256,
    /// EC: ES256, Ed25519: EdDSA).
    pub jwt_public_key_file: String,
    /// JWT gatekeeper tokens signed by any key of this JWKS file (chosen by `kid`).
    pub jwt_jwks_file: String,
    /// The `iss` a token must carry (empty: not checked).
    pub jwt_issuer: String,
    /// The `aud` a token must carry (empty: not checked).
    pub jwt_audience: String,
    /// Clock skew allowed on `exp` and `nbf`, in seconds.
    pub jwt_leeway_secs: u64,
    /// The claim that lists a token's grants.
    pub jwt_claim: String,
}

/// Authentication as configured.
#[derive(Debug, Clone)]
pub struct Auth {
    pub keys: std::sync::Arc<crate::http::auth::Keys>,
    pub jwt: Option<std::sync::Arc<crate::http::jwt::Jwt>>,
    pub probe_auth: bool,
    pub cookie_name: Option<String>,
}

impl Auth {
    /// Whether requests need a credential (keys or a JWT key are configured).
    pub fn enabled(&self) -> bool {
        self.keys.enabled() || self.jwt.is_some()
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerSettings {
    pub host: String,
    pub port: u16,
    /// How long a long-poll read waits for data before answering 204.
    pub long_poll_timeout_secs: u64,
    /// How long an SSE response stays open before the server ends it so clients reconnect.
    pub sse_reconnect_interval_secs: u64,
    /// Threads serving requests; 0 means one per CPU this process may use.
    pub worker_threads: usize,
    /// Each connection's socket send buffer (`SO_SNDBUF`; the kernel doubles it); 0 leaves
    /// the kernel's autotuning.
    pub send_buffer_bytes: usize,
    /// Write the port listened on to this file once bound (with `port = 0`, the one the system
    /// chose); empty: none. Alias `TOPICS_PORT_FILE`.
    pub port_file: String,
}

impl Default for ServerSettings {
    fn default() -> Self {
        Self {
            host: "127.0.0.1".into(),
            port: 4437,
            long_poll_timeout_secs: 30,
            sse_reconnect_interval_secs: 60,
            worker_threads: 0,
            send_buffer_bytes: 256 * 1024,
            port_file: String::new(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HttpSettings {
    /// `*`, or a comma-separated list of allowed origins.
    pub cors_origins: String,
}

impl Default for HttpSettings {
    fn default() -> Self {
        Self {
            cors_origins: "*".into(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LimitSettings {
    /// RAM held for clients' streams: per-stream state, producers, ephemeral records; 0 sizes
    /// it from the machine (a quarter of its memory).
    pub max_memory_bytes: u64,
    /// Largest size of one stream; 0: no per-stream cap (file-backed streams are bounded by
    /// the disk, `ephemeral` ones by `max_memory_bytes`).
    pub max_stream_bytes: u64,
    /// Largest request body (64 MiB by default, the topics reference's `TOPICS_MAX_BODY_BYTES`:
    /// its clients send batches that large).
    pub max_request_body_bytes: u64,
    /// Deepest fork chain.
    pub max_fork_depth: u64,
    /// Longest `Producer-Id`, in bytes.
    pub max_producer_id_bytes: u64,
    /// Longest `Stream-Seq`, in bytes.
    pub max_stream_seq_bytes: u64,
    /// Producers remembered per stream (least recently used forgotten first).
    pub max_producers_per_stream: u64,
    /// Most `/v0` topics, routers and watch sessions; 0: no limit. Past one, creating one
    /// more is a 429 (updating one that exists never counts).
    pub max_topics: u64,
    pub max_routers: u64,
    pub max_watch_sessions: u64,
    /// Most Durable Streams streams; 0: no limit.
    pub max_streams: u64,
    /// Most data bytes retained across all streams and topics; 0: no limit. Appends and
    /// writes past it are a 429.
    pub max_total_bytes: u64,
    /// Live connections (SSE, long-poll, WebSocket) at once, server-wide and per credential
    /// (with auth on); requests in flight per credential. 0: no cap.
    pub max_live_connections: u64,
    pub max_live_connections_per_key: u64,
    pub max_inflight_per_key: u64,
    /// Most `__ds` subscriptions, and most streams one links; 0: no limit.
    pub max_subscriptions: u64,
    pub max_subscription_links: u64,
}

impl Default for LimitSettings {
    fn default() -> Self {
        Self {
            max_memory_bytes: 0,
            max_stream_bytes: 0,
            max_request_body_bytes: 64 << 20,
            max_fork_depth: 100,
            max_producer_id_bytes: 256,
            max_stream_seq_bytes: 256,
            max_producers_per_stream: 1024,
            max_topics: 100_000,
            max_routers: 10_000,
            max_watch_sessions: 10_000,
            max_streams: 0,
            max_total_bytes: 0,
            max_live_connections: 10_000,
            max_live_connections_per_key: 1_000,
            max_inflight_per_key: 1_000,
            max_subscriptions: 10_000,
            max_subscription_links: 1_000_000,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StorageSettings {
    pub mode: String,
    pub data_dir: PathBuf,
    /// WAL shards; 0 means one per two cores, 1 to 8.
    pub wal_shards: u32,
    /// Longest time a `disk`-class append stays unsynced.
    pub sync_interval_ms: u64,
    /// Stream files held open at once; 0 means half the open-files limit.
    pub max_open_files: u64,
    /// What RAM-held chunks are kept in: `file`, `memfd` or `heap` (see [`ArenaBacking`]).
    pub arena: String,
    /// Where `arena = "file"` makes its unlinked file; unset: the data directory, or the
    /// system's temporary directory in memory mode.
    pub arena_dir: Option<PathBuf>,
}

impl Default for StorageSettings {
    fn default() -> Self {
        Self {
            mode: "file-durable".into(),
            data_dir: PathBuf::from("./data/streams"),
            wal_shards: 0,
            sync_interval_ms: 50,
            max_open_files: 0,
            arena: "file".into(),
            arena_dir: None,
        }
    }
}

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct TlsSettings {
    pub cert_path: Option<PathBuf>,
    pub key_path: Option<PathBuf>,
}

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct LogSettings {
    pub rust_log: Option<String>,
}

/// Where the storage keeps streams.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StorageMode {
    /// Everything in RAM (`ephemeral` class); lost on restart. No data directory.
    Memory,
    /// A data directory with the WAL and stream files; `default` is the class of streams
    /// created without `Stream-Durability`.
    Files {
        data_dir: PathBuf,
        default: Durability,
        wal_shards: u32,
        sync_interval: Duration,
        /// Stream files held open at once; 0: sized from the open-files limit at start-up.
        max_open_files: usize,
    },
}

/// Validated, ready-to-use configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub addr: SocketAddr,
    /// Threads serving requests (at least 1).
    pub worker_threads: usize,
    /// `server.send_buffer_bytes` (0: the kernel's autotuning).
    pub send_buffer_bytes: usize,
    /// `server.port_file`: where to write the bound port.
    pub port_file: Option<PathBuf>,
    pub long_poll_timeout: Duration,
    pub sse_reconnect_interval: Duration,
    pub cors: Cors,
    pub limits: LimitSettings,
    pub storage: StorageMode,
    /// What the process's memory arena is kept in.
    pub arena: ArenaBacking,
    pub tls: Option<(PathBuf, PathBuf)>,
    pub log_filter: String,
    pub auth: Auth,
    /// `metrics.max_series`.
    pub max_series: usize,
    pub subscriptions: SubscriptionSettings,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cors {
    Any,
    Origins(Vec<String>),
}

/// Where configuration layers come from, beyond the environment.
#[derive(Debug, Clone, Default)]
pub struct Sources {
    /// Directory holding `default.toml`, `<profile>.toml` and `local.toml`.
    pub config_dir: PathBuf,
    pub profile: Option<String>,
    pub config_file: Option<PathBuf>,
}

/// A configuration problem, reported as one line naming the key.
#[derive(Debug, thiserror::Error)]
#[error("configuration error: {0}")]
pub struct ConfigError(pub String);

/// Largest `storage.max_open_files`: far above any open-files limit Linux allows by default
/// (`fs.nr_open` is 2^20), so a larger value can only be a mistake.
const MAX_OPEN_FILES: usize = 1 << 30;

fn err(msg: impl Into<String>) -> ConfigError {
    ConfigError(msg.into())
}

impl Settings {
    /// Read every layer. `env` is the process environment (injected for tests).
    pub fn load(
        sources: &Sources,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, ConfigError> {
        let file = |path: &Path, required: bool| {
            config::File::from(path.to_path_buf())
                .format(config::FileFormat::Toml)
                .required(required)
        };
        let mut builder = config::Config::builder()
            .add_source(file(&sources.config_dir.join("default.toml"), false));
        if let Some(profile) = &sources.profile {
            builder = builder.add_source(file(
                &sources.config_dir.join(format!("{profile}.toml")),
                false,
            ));
        }
        builder = builder.add_source(file(&sources.config_dir.join("local.toml"), false));
        if let Some(path) = &sources.config_file {
            if !path.exists() {
                return Err(err(format!("--config {}: file not found", path.display())));
            }
            builder = builder.add_source(file(path, true));
        }
        let all: Vec<(String, String)> = env.into_iter().collect();
        let env: config::Map<String, String> = all
            .iter()
            .filter(|(k, _)| k.starts_with("DS_"))
            .cloned()
            .collect();
        // A topics deployment's variables name the same keys.
        let aliases: Vec<(String, String)> = [
            ("TOPICS_HOST", "DS_SERVER__HOST"),
            ("TOPICS_PORT", "DS_SERVER__PORT"),
            ("TOPICS_WAL_SHARDS", "DS_STORAGE__WAL_SHARDS"),
            ("TOPICS_PORT_FILE", "DS_SERVER__PORT_FILE"),
            ("TOPICS_API_KEYS", "DS_AUTH__API_KEYS"),
            (
                "TOPICS_ALLOW_INSECURE_NO_AUTH",
                "DS_AUTH__ALLOW_INSECURE_NO_AUTH",
            ),
            ("TOPICS_PROBE_AUTH", "DS_AUTH__PROBE_AUTH"),
            ("TOPICS_MAX_TOPICS", "DS_LIMITS__MAX_TOPICS"),
            ("TOPICS_MAX_ROUTERS", "DS_LIMITS__MAX_ROUTERS"),
            ("TOPICS_MAX_WATCH_SESSIONS", "DS_LIMITS__MAX_WATCH_SESSIONS"),
            ("TOPICS_MAX_BODY_BYTES", "DS_LIMITS__MAX_REQUEST_BODY_BYTES"),
            ("TOPICS_MAX_TOTAL_BYTES", "DS_LIMITS__MAX_TOTAL_BYTES"),
            (
                "TOPICS_MAX_SSE_CONNECTIONS",
                "DS_LIMITS__MAX_LIVE_CONNECTIONS",
            ),
            (
                "TOPICS_MAX_SSE_CONNECTIONS_PER_KEY",
                "DS_LIMITS__MAX_LIVE_CONNECTIONS_PER_KEY",
            ),
            (
                "TOPICS_MAX_INFLIGHT_PER_KEY",
                "DS_LIMITS__MAX_INFLIGHT_PER_KEY",
            ),
        ]
        .iter()
        .filter_map(|(alias, key)| {
            let v = all.iter().find(|(k, _)| k == alias)?.1.clone();
            Some((alias.to_string(), key.to_string(), v))
        })
        .map(|(alias, key, v)| match env.get(&key) {
            Some(own) if *own != v => Err(err(format!(
                "{alias} and {key} are both set, to different values: set one"
            ))),
            _ => Ok((key, v)),
        })
        .collect::<Result<_, _>>()?;
        let env: config::Map<String, String> = env.into_iter().chain(aliases).collect();
        builder = builder.add_source(
            config::Environment::with_prefix("DS")
                .prefix_separator("_")
                .separator("__")
                .try_parsing(true)
                .source(Some(env)),
        );
        builder
            .build()
            .and_then(|c| c.try_deserialize::<Settings>())
            .map_err(|e| err(e.to_string()))
    }

    /// Check every value and derive the runtime configuration.
    pub fn validate(self, rust_log_env: Option<String>) -> Result<Config, ConfigError> {
        let host: IpAddr = match self.server.host.as_str() {
            "localhost" => IpAddr::from([127, 0, 0, 1]),
            h => h.parse().map_err(|_| {
                err(format!(
                    "server.host (DS_SERVER__HOST): {h:?} is not an IP address"
                ))
            })?,
        };
        if self.server.worker_threads > 1024 {
            return Err(err(
                "server.worker_threads (DS_SERVER__WORKER_THREADS) must be at most 1024 (0: one per CPU)",
            ));
        }
        if self.server.long_poll_timeout_secs == 0 {
            return Err(err(
                "server.long_poll_timeout_secs (DS_SERVER__LONG_POLL_TIMEOUT_SECS) must be at least 1",
            ));
        }
        if self.server.sse_reconnect_interval_secs == 0 {
            return Err(err(
                "server.sse_reconnect_interval_secs (DS_SERVER__SSE_RECONNECT_INTERVAL_SECS) must be at least 1",
            ));
        }
        let cors = parse_cors(&self.http.cors_origins)?;
        for (key, value) in [
            (
                "limits.max_request_body_bytes",
                self.limits.max_request_body_bytes,
            ),
            ("limits.max_fork_depth", self.limits.max_fork_depth),
            (
                "limits.max_producer_id_bytes",
                self.limits.max_producer_id_bytes,
            ),
            (
                "limits.max_stream_seq_bytes",
                self.limits.max_stream_seq_bytes,
            ),
            (
                "limits.max_producers_per_stream",
                self.limits.max_producers_per_stream,
            ),
        ] {
            if value == 0 {
                return Err(err(format!("{key} must be greater than 0")));
            }
        }
        // Each fork level is a step of every read of the fork; ids and seqs are kept per
        // stream in RAM, checkpoints and WAL records.
        for (key, value, max) in [
            ("limits.max_fork_depth", self.limits.max_fork_depth, 10_000),
            (
                "limits.max_producer_id_bytes",
                self.limits.max_producer_id_bytes,
                65_536,
            ),
            (
                "limits.max_stream_seq_bytes",
                self.limits.max_stream_seq_bytes,
                65_536,
            ),
            (
                "limits.max_producers_per_stream",
                self.limits.max_producers_per_stream,
                1_000_000,
            ),
        ] {
            if value > max {
                return Err(err(format!("{key} must be at most {max}")));
            }
        }
        if self.storage.sync_interval_ms == 0 {
            return Err(err(
                "storage.sync_interval_ms (DS_STORAGE__SYNC_INTERVAL_MS) must be at least 1",
            ));
        }
        if self.storage.wal_shards > 64 {
            return Err(err(
                "storage.wal_shards (DS_STORAGE__WAL_SHARDS) must be at most 64",
            ));
        }
        let max_open_files = usize::try_from(self.storage.max_open_files)
            .ok()
            .filter(|&n| n <= MAX_OPEN_FILES)
            .ok_or_else(|| {
                err(format!(
                    "storage.max_open_files (DS_STORAGE__MAX_OPEN_FILES) must be at most \
                     {MAX_OPEN_FILES} (0: half the open-files limit)"
                ))
            })?;
        let files = |default| StorageMode::Files {
            data_dir: self.storage.data_dir.clone(),
            default,
            wal_shards: self.storage.wal_shards,
            sync_interval: Duration::from_millis(self.storage.sync_interval_ms),
            max_open_files,
        };
        let storage = match self.storage.mode.as_str() {
            "memory" => StorageMode::Memory,
            "file-fast" => files(Durability::Disk),
            // `acid` and `redb` name the same guarantee: atomic, crash-consistent commits
            // through the WAL, acknowledged after the group fsync (there is no redb inside).
            "file-durable" | "acid" | "redb" => files(Durability::Fsync),
            m => {
                return Err(err(format!(
                    "storage.mode (DS_STORAGE__MODE) {m:?} is not one of memory, file-fast, \
                     file-durable, acid, redb"
                )));
            }
        };
        let arena = match (self.storage.arena.as_str(), self.storage.arena_dir) {
            ("file", Some(dir)) => ArenaBacking::File(dir),
            ("file", None) => ArenaBacking::File(match &storage {
                StorageMode::Files { data_dir, .. } => data_dir.clone(),
                StorageMode::Memory => std::env::temp_dir(),
            }),
            ("memfd", None) => ArenaBacking::SharedMemory,
            ("heap", None) => ArenaBacking::Heap,
            ("memfd" | "heap", Some(_)) => {
                return Err(err(
                    "storage.arena_dir (DS_STORAGE__ARENA_DIR) applies only to storage.arena = file",
                ));
            }
            (a, _) => {
                return Err(err(format!(
                    "storage.arena (DS_STORAGE__ARENA) {a:?} is not one of file, memfd, heap"
                )));
            }
        };
        let tls = match (self.tls.cert_path, self.tls.key_path) {
            (None, None) => None,
            (Some(c), Some(k)) => Some((c, k)),
            (Some(_), None) => {
                return Err(err(
                    "tls.cert_path is set but tls.key_path (DS_TLS__KEY_PATH) is not; set both or neither",
                ));
            }
            (None, Some(_)) => {
                return Err(err(
                    "tls.key_path is set but tls.cert_path (DS_TLS__CERT_PATH) is not; set both or neither",
                ));
            }
        };
        let log_filter = self
            .log
            .rust_log
            .or(rust_log_env)
            .unwrap_or_else(|| "info".into());
        if tracing_subscriber::EnvFilter::try_new(&log_filter).is_err() {
            return Err(err(format!(
                "log.rust_log (DS_LOG__RUST_LOG / RUST_LOG): {log_filter:?} is not a valid filter"
            )));
        }
        let keys = crate::http::auth::Keys::parse(&self.auth.api_keys)
            .map_err(|e| err(format!("auth.api_keys (DS_AUTH__API_KEYS): {e}")))?;
        let a = &self.auth;
        let jwt = crate::http::jwt::Jwt::from_settings(&crate::http::jwt::JwtSettings {
            hs256_secret: a.jwt_hs256_secret.clone(),
            public_key_file: a.jwt_public_key_file.clone(),
            jwks_file: a.jwt_jwks_file.clone(),
            issuer: a.jwt_issuer.clone(),
            audience: a.jwt_audience.clone(),
            leeway_secs: a.jwt_leeway_secs,
            claim: a.jwt_claim.clone(),
        })
        .map_err(err)?;
        if !keys.enabled() && jwt.is_none() && !host.is_loopback() && !a.allow_insecure_no_auth {
            return Err(err(format!(
                "server.host {host} is not a loopback address and auth is off: set \
                 auth.api_keys (DS_AUTH__API_KEYS) or a JWT key (auth.jwt_*), or \
                 auth.allow_insecure_no_auth (DS_AUTH__ALLOW_INSECURE_NO_AUTH=true) to serve \
                 everyone"
            )));
        }
        let auth = Auth {
            keys: std::sync::Arc::new(keys),
            jwt: jwt.map(std::sync::Arc::new),
            probe_auth: self.auth.probe_auth,
            cookie_name: Some(self.auth.cookie_name.trim().to_string()).filter(|c| !c.is_empty()),
        };
        let subscriptions = validate_subscriptions(self.subscriptions)?;
        let worker_threads = match self.server.worker_threads {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n => n,
        };
        Ok(Config {
            addr: SocketAddr::new(host, self.server.port),
            worker_threads,
            send_buffer_bytes: self.server.send_buffer_bytes,
            port_file: Some(self.server.port_file.trim())
                .filter(|p| !p.is_empty())
                .map(PathBuf::from),
            long_poll_timeout: Duration::from_secs(self.server.long_poll_timeout_secs),
            sse_reconnect_interval: Duration::from_secs(self.server.sse_reconnect_interval_secs),
            cors,
            limits: self.limits,
            storage,
            arena,
            tls,
            log_filter,
            auth,
            max_series: usize::try_from(self.metrics.max_series).unwrap_or(usize::MAX),
            subscriptions,
        })
    }
}

fn validate_subscriptions(
    mut s: SubscriptionSettings,
) -> Result<SubscriptionSettings, ConfigError> {
    for (key, value) in [
        (
            "subscriptions.webhook_timeout_ms (DS_SUBSCRIPTIONS__WEBHOOK_TIMEOUT_MS)",
            s.webhook_timeout_ms,
        ),
        (
            "subscriptions.webhook_connect_timeout_ms (DS_SUBSCRIPTIONS__WEBHOOK_CONNECT_TIMEOUT_MS)",
            s.webhook_connect_timeout_ms,
        ),
    ] {
        if !(1..=600_000).contains(&value) {
            return Err(err(format!("{key} must be from 1 to 600000")));
        }
    }
    if !(1..=10_000).contains(&s.webhook_concurrency) {
        return Err(err(
            "subscriptions.webhook_concurrency (DS_SUBSCRIPTIONS__WEBHOOK_CONCURRENCY) must be from 1 to 10000",
        ));
    }
    let url = s.public_url.trim().trim_end_matches('/').to_string();
    let scheme_ok = url.starts_with("http://") || url.starts_with("https://");
    let rest = url.split_once("://").map_or("", |(_, r)| r);
    if !url.is_empty() && (!scheme_ok || rest.is_empty() || rest.contains(['/', '?', '#'])) {
        return Err(err(format!(
            "subscriptions.public_url (DS_SUBSCRIPTIONS__PUBLIC_URL) {url:?} must be \
             http(s)://host[:port], without a path"
        )));
    }
    s.public_url = url;
    Ok(s)
}

fn parse_cors(value: &str) -> Result<Cors, ConfigError> {
    let origins: Vec<String> = value
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect();
    if origins.is_empty() {
        return Err(err(
            "http.cors_origins (DS_HTTP__CORS_ORIGINS) is empty; use \"*\" or a list of origins",
        ));
    }
    if origins.iter().any(|o| o == "*") {
        return Ok(Cors::Any);
    }
    if let Some(bad) = origins
        .iter()
        .find(|o| !(o.starts_with("http://") || o.starts_with("https://")))
    {
        return Err(err(format!(
            "http.cors_origins (DS_HTTP__CORS_ORIGINS): {bad:?} is not an origin like https://example.com"
        )));
    }
    Ok(Cors::Origins(origins))
}

#[cfg(test)]
mod tests;
