//! `riffle`: the server binary.

use clap::{Args, Parser, Subcommand};
use riffle_server::config::{Settings, Sources};
use std::path::PathBuf;
use std::process::ExitCode;

// glibc's per-thread arenas grow and shrink with an mprotect per request under this load;
// mimalloc keeps freed pages for reuse. Built with `no_thp`: memory-mode streams grow the heap
// steadily, and transparent huge pages made every growth step a 2 MiB fault (zeroed at once, and
// open to compaction stalls) instead of 4 KiB ones.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

// mimalloc's own entry point for its options (declared by libmimalloc-sys only behind a feature
// that would change every symbol's hash, see build.rs); `option` is an index into its table.
unsafe extern "C" {
    fn mi_option_set(option: std::ffi::c_int, value: std::ffi::c_long);
}
/// `mi_option_purge_delay` and `mi_option_arena_reserve` in mimalloc.h (the same indices in
/// mimalloc 2 and 3).
const MI_OPTION_PURGE_DELAY: std::ffi::c_int = 15;
const MI_OPTION_ARENA_RESERVE: std::ffi::c_int = 23;

/// mimalloc's defaults suit a large process; these suit a server that often idles small.
/// Each applies unless its variable is set in the environment, which still decides.
///
/// - `purge_delay` 10 ms: mimalloc 3 keeps a page it no longer uses for 1 s (10 s inside its
///   arenas) before giving it back; what a burst of connections freed then stays resident long
///   after. 10 ms (the delay of mimalloc 2) returns it while still reusing pages across
///   back-to-back requests; measured, no change in append throughput, about 0.3 MiB less RSS
///   at 1,000 subscribers.
/// - `arena_reserve` 64 MiB (the value is in KiB): an arena's bitmaps are sized for all of it
///   and written when it is reserved, so the default 1 GiB arena made 184 KiB resident before
///   the first request; a 64 MiB one, 32 KiB. Later arenas grow (mimalloc doubles their size
///   every eighth one), so a large memory-mode store still needs only a few dozen.
///
/// The arena first: reading a variable that is set allocates, and the first allocation
/// reserves the first arena.
const ALLOCATOR_OPTIONS: [(&str, std::ffi::c_int, std::ffi::c_long); 2] = [
    ("MIMALLOC_ARENA_RESERVE", MI_OPTION_ARENA_RESERVE, 64 * 1024),
    ("MIMALLOC_PURGE_DELAY", MI_OPTION_PURGE_DELAY, 10),
];

/// Sets [`ALLOCATOR_OPTIONS`] before the program's first allocation: Rust's runtime allocates
/// before `main` (its stack-overflow handler), and mimalloc sizes its first arena then.
/// Listed in `.init_array`, so the C runtime calls it before `main`, as it calls every
/// constructor.
extern "C" fn tune_allocator() {
    for (var, option, value) in ALLOCATOR_OPTIONS {
        // A set variable decides: mimalloc reads it at its first use of the option.
        if std::env::var_os(var).is_none() {
            // SAFETY: mi_option_set range-checks the index and stores the value in mimalloc's
            // static option table; any value is valid for these options. It is a plain store,
            // made before any thread but this one exists.
            unsafe { mi_option_set(option, value) };
        }
    }
}

// SAFETY: `.init_array` holds pointers to functions the C runtime calls once, in order, on
// the main thread before `main`; `tune_allocator` has the `extern "C"` signature it expects
// (glibc passes argc, argv and envp; under the C calling conventions of Linux targets the
// caller owns its arguments, so a callee may ignore them), does not unwind, and only reads
// the environment (set up before constructors run).
#[cfg(target_os = "linux")]
#[used]
#[unsafe(link_section = ".init_array")]
static TUNE_ALLOCATOR: extern "C" fn() = tune_allocator;

const CONFIG_HELP: &str = "\
Configuration, later wins: built-in defaults, CONFIG_DIR/default.toml, CONFIG_DIR/<profile>.toml,
CONFIG_DIR/local.toml, --config PATH, DS_* environment variables (DS_SECTION__KEY), --host/--port.

Keys (TOML section.key / environment), defaults in brackets:
  server.host                      DS_SERVER__HOST                      [127.0.0.1]
  server.port                      DS_SERVER__PORT                      [4437]
  server.long_poll_timeout_secs    DS_SERVER__LONG_POLL_TIMEOUT_SECS    [30]
  server.sse_reconnect_interval_secs DS_SERVER__SSE_RECONNECT_INTERVAL_SECS [60]
  server.worker_threads            DS_SERVER__WORKER_THREADS            [0 = one per CPU]
  server.send_buffer_bytes         DS_SERVER__SEND_BUFFER_BYTES         [262144, 0 = kernel autotuning]
  server.port_file                 DS_SERVER__PORT_FILE                 [unset; with port 0, learn the port]
  http.cors_origins                DS_HTTP__CORS_ORIGINS                [*]
  limits.max_memory_bytes          DS_LIMITS__MAX_MEMORY_BYTES          [0 = a quarter of the RAM]
  limits.max_stream_bytes          DS_LIMITS__MAX_STREAM_BYTES          [0 = no per-stream cap]
  limits.max_request_body_bytes    DS_LIMITS__MAX_REQUEST_BODY_BYTES    [67108864 = 64 MiB]
  limits.max_fork_depth            DS_LIMITS__MAX_FORK_DEPTH            [100]
  limits.max_producer_id_bytes     DS_LIMITS__MAX_PRODUCER_ID_BYTES     [256]
  limits.max_stream_seq_bytes      DS_LIMITS__MAX_STREAM_SEQ_BYTES      [256]
  limits.max_producers_per_stream  DS_LIMITS__MAX_PRODUCERS_PER_STREAM  [1024]
  limits.max_topics                DS_LIMITS__MAX_TOPICS                [100000, 0 = none]
  limits.max_streams               DS_LIMITS__MAX_STREAMS               [0 = none]
  limits.max_total_bytes           DS_LIMITS__MAX_TOTAL_BYTES           [0 = none]
  auth.api_keys                    DS_AUTH__API_KEYS                    [empty = auth off]
  auth.jwt_hs256_secret            DS_AUTH__JWT_HS256_SECRET            [empty = none]
  auth.jwt_public_key_file         DS_AUTH__JWT_PUBLIC_KEY_FILE         [empty = none]
  auth.jwt_jwks_file               DS_AUTH__JWT_JWKS_FILE               [empty = none]
  auth.jwt_issuer, jwt_audience    DS_AUTH__JWT_ISSUER, DS_AUTH__JWT_AUDIENCE [empty = unchecked]
  auth.jwt_leeway_secs             DS_AUTH__JWT_LEEWAY_SECS             [0]
  auth.jwt_claim                   DS_AUTH__JWT_CLAIM                   [grants]
  auth.allow_insecure_no_auth      DS_AUTH__ALLOW_INSECURE_NO_AUTH      [false]
  auth.probe_auth                  DS_AUTH__PROBE_AUTH                  [false]
  auth.cookie_name                 DS_AUTH__COOKIE_NAME                 [empty = none]
  limits.max_routers               DS_LIMITS__MAX_ROUTERS               [10000, 0 = none]
  limits.max_watch_sessions        DS_LIMITS__MAX_WATCH_SESSIONS        [10000, 0 = none]
  limits.max_live_connections      DS_LIMITS__MAX_LIVE_CONNECTIONS      [10000, 0 = none]
  limits.max_live_connections_per_key DS_LIMITS__MAX_LIVE_CONNECTIONS_PER_KEY [1000]
  limits.max_inflight_per_key      DS_LIMITS__MAX_INFLIGHT_PER_KEY      [1000, 0 = none]
  limits.max_subscriptions         DS_LIMITS__MAX_SUBSCRIPTIONS         [10000, 0 = none]
  limits.max_subscription_links    DS_LIMITS__MAX_SUBSCRIPTION_LINKS    [1000000, 0 = none]
  subscriptions.allow_localhost_webhooks DS_SUBSCRIPTIONS__ALLOW_LOCALHOST_WEBHOOKS [false]
  subscriptions.webhook_timeout_ms DS_SUBSCRIPTIONS__WEBHOOK_TIMEOUT_MS [10000]
  subscriptions.webhook_connect_timeout_ms DS_SUBSCRIPTIONS__WEBHOOK_CONNECT_TIMEOUT_MS [5000]
  subscriptions.webhook_concurrency DS_SUBSCRIPTIONS__WEBHOOK_CONCURRENCY [64]
  subscriptions.public_url         DS_SUBSCRIPTIONS__PUBLIC_URL         [empty = the creating request's]
  storage.mode                     DS_STORAGE__MODE    memory|file-fast|file-durable|acid|redb [file-durable]
  storage.data_dir                 DS_STORAGE__DATA_DIR                 [./data/streams]
  storage.wal_shards               DS_STORAGE__WAL_SHARDS               [0 = cores/2, 1 to 8]
  storage.sync_interval_ms         DS_STORAGE__SYNC_INTERVAL_MS         [50]
  storage.max_open_files           DS_STORAGE__MAX_OPEN_FILES           [0 = half the open-files limit]
  tls.cert_path, tls.key_path      DS_TLS__CERT_PATH, DS_TLS__KEY_PATH  [unset: plain HTTP]
  log.rust_log                     DS_LOG__RUST_LOG (or RUST_LOG)       [info]
  metrics.max_series               DS_METRICS__MAX_SERIES               [1000]

A topics deployment's variables are read as aliases: TOPICS_HOST, TOPICS_PORT, TOPICS_PORT_FILE,
TOPICS_WAL_SHARDS,
TOPICS_API_KEYS, TOPICS_ALLOW_INSECURE_NO_AUTH, TOPICS_PROBE_AUTH, TOPICS_MAX_BODY_BYTES,
TOPICS_MAX_TOPICS, _ROUTERS, _WATCH_SESSIONS, _TOTAL_BYTES, _SSE_CONNECTIONS(_PER_KEY),
_INFLIGHT_PER_KEY (set with a different DS_ value, the start is refused).";

/// Riffle: durable, append-only streams over HTTP (the Durable Streams protocol).
#[derive(Parser)]
#[command(version, about, long_about = None, args_conflicts_with_subcommands = true, after_help = CONFIG_HELP)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    serve: ServeArgs,
}

#[derive(Subcommand)]
enum Command {
    /// Start the server (the default when no command is given).
    #[command(after_help = CONFIG_HELP)]
    Serve(ServeArgs),
}

/// Configuration layers, later wins: built-in defaults, CONFIG_DIR/default.toml,
/// CONFIG_DIR/<profile>.toml, CONFIG_DIR/local.toml, --config, DS_* environment variables
/// (DS_SECTION__KEY, e.g. DS_SERVER__PORT=8080), then --host/--port.
#[derive(Args, Clone, Default)]
struct ServeArgs {
    /// Extra TOML configuration file, layered over config/*.toml.
    #[arg(long, value_name = "PATH")]
    config: Option<PathBuf>,
    /// Profile: also read CONFIG_DIR/<NAME>.toml.
    #[arg(long, value_name = "NAME")]
    profile: Option<String>,
    /// Directory holding default.toml, <profile>.toml and local.toml.
    #[arg(long, value_name = "DIR", default_value = "config")]
    config_dir: PathBuf,
    /// Address to listen on (overrides server.host / DS_SERVER__HOST).
    #[arg(long)]
    host: Option<String>,
    /// Port to listen on (overrides server.port / DS_SERVER__PORT).
    #[arg(long)]
    port: Option<u16>,
}

fn main() -> ExitCode {
    // Elsewhere, as early as this program can.
    #[cfg(not(target_os = "linux"))]
    tune_allocator();
    let cli = Cli::parse();
    let args = match cli.command {
        Some(Command::Serve(a)) => a,
        None => cli.serve,
    };
    let sources = Sources {
        config_dir: args.config_dir,
        profile: args.profile,
        config_file: args.config,
    };
    let config = Settings::load(&sources, std::env::vars()).and_then(|mut s| {
        if let Some(h) = args.host {
            s.server.host = h;
        }
        if let Some(p) = args.port {
            s.server.port = p;
        }
        s.validate(std::env::var("RUST_LOG").ok())
    });
    let config = match config {
        Ok(c) => c,
        Err(e) => {
            eprintln!("riffle: {e}");
            return ExitCode::from(2);
        }
    };
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(&config.log_filter))
        .init();
    riffle_server::serve::raise_open_files_limit();
    // One thread needs no work-stealing scheduler: a single-threaded runtime does the same work
    // with less bookkeeping per task switch (about 8 % less CPU per append, measured).
    let mut builder = if config.worker_threads == 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut b = tokio::runtime::Builder::new_multi_thread();
        b.worker_threads(config.worker_threads);
        b
    };
    let runtime = match builder.enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("riffle: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(riffle_server::serve::run(config, shutdown_signal())) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("riffle: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}

/// SIGINT or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
}
