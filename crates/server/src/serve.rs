//! The listener: accepts connections (plain or TLS), hands each to [`conn`] (HTTP/1.1 and
//! HTTP/2), and shuts down gracefully: stop accepting, end live reads, let in-flight requests
//! finish.

use crate::config::{Config, StorageMode};
use crate::conn;
use crate::http::App;
use crate::http::metrics::Metrics;
use riffle_engine::wal::FsDir;
use riffle_engine::{Durability, Engine, EngineConfig, StorageConfig, SystemClock};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// How long in-flight requests get to finish after a shutdown signal.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);
/// How often expired streams are swept from memory (lazy expiry keeps answers exact).
const SWEEP_INTERVAL: Duration = Duration::from_secs(5);
/// How long the listener pauses after `accept` ran out of file descriptors (EMFILE/ENFILE):
/// retrying at once would spin, since the pending connection stays in the backlog.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);
/// Fewest stream files the automatic `storage.max_open_files` keeps open.
const MIN_AUTO_OPEN_FILES: usize = 16;

/// Raise the soft open-files limit to the hard one (a process may, and the soft default of
/// 1024 is low for a server with one file pair per stream and a socket per client), and log
/// both. A failure is logged and start-up goes on under the current limit.
pub fn raise_open_files_limit() {
    use rlimit::Resource;
    let before = match Resource::NOFILE.get() {
        Ok((soft, _)) => soft,
        Err(e) => {
            tracing::warn!(error = %e, "cannot read the open-files limit (RLIMIT_NOFILE)");
            return;
        }
    };
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(soft) => {
            let hard = Resource::NOFILE.get().map_or(soft, |(_, h)| h);
            tracing::info!(
                soft,
                hard,
                soft_at_start = before,
                "open-files limit (RLIMIT_NOFILE)"
            );
        }
        Err(e) => tracing::warn!(
            soft = before,
            error = %e,
            "cannot raise the open-files limit (RLIMIT_NOFILE); keeping it"
        ),
    }
}

/// `storage.max_open_files` when it is 0: half the soft open-files limit, leaving the other
/// half to sockets, WAL segments and the rest (`None` if the limit cannot be read).
fn auto_max_open_files() -> Option<usize> {
    let (soft, _) = rlimit::Resource::NOFILE.get().ok()?;
    let half = usize::try_from(soft / 2).unwrap_or(usize::MAX);
    Some(half.max(MIN_AUTO_OPEN_FILES))
}

/// After a failed `accept`: log, pause if retrying at once would fail again, and let the
/// listener go on (it never exits or spins on an error). `quiet_until` limits the warnings
/// about running out of descriptors to one a second.
async fn accept_failed(e: &std::io::Error, quiet_until: &mut Option<tokio::time::Instant>) {
    const ENFILE: i32 = 23;
    const EMFILE: i32 = 24;
    use std::io::ErrorKind::{ConnectionAborted, ConnectionReset, Interrupted};
    if matches!(e.raw_os_error(), Some(EMFILE | ENFILE)) {
        // The connection stays in the backlog until descriptors free up (connections ending,
        // stream files closing): pause rather than fail the same way in a loop.
        let now = tokio::time::Instant::now();
        if quiet_until.is_none_or(|t| now >= t) {
            tracing::warn!(error = %e, "accept: out of file descriptors; pausing new connections");
            *quiet_until = Some(now + Duration::from_secs(1));
        }
        tokio::time::sleep(ACCEPT_BACKOFF).await;
    } else if matches!(e.kind(), ConnectionAborted | ConnectionReset | Interrupted) {
        tracing::debug!(error = %e, "accept: the client left first");
    } else {
        tracing::warn!(error = %e, "accept failed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
    #[error("TLS: {0}")]
    Tls(String),
    /// A setting that cannot work here (beyond what the configuration's own checks see).
    #[error("{0}")]
    Setting(String),
    #[error("storage: {0}")]
    Storage(String),
    #[error("cannot write the port file {path}: {source}")]
    PortFile {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
}

impl ServeError {
    /// The exit status: 2 for a setting that cannot work (as for any invalid configuration),
    /// 1 for a failure of the environment.
    pub fn exit_code(&self) -> u8 {
        match self {
            ServeError::Tls(_) | ServeError::Setting(_) => 2,
            _ => 1,
        }
    }
}

/// Write `port` to `path` whole or not at all (a reader polling for the file never sees half
/// of it): a temporary file beside it, then a rename.
fn write_port_file(path: &std::path::Path, port: u16) -> std::io::Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    std::fs::write(&tmp, format!("{port}\n"))?;
    std::fs::rename(&tmp, path)
}

/// `limits.max_memory_bytes`, where 0 (the default) is sized from the machine: a quarter of
/// its physical memory, or 1 GiB where that cannot be read. The budget counts every stream's
/// own state (about 1 KiB), so a fixed small default would cap how many streams a server can
/// hold whatever the machine.
fn memory_budget(configured: u64) -> u64 {
    if configured > 0 {
        return configured;
    }
    let total = std::fs::read_to_string("/proc/meminfo").ok().and_then(|m| {
        let line = m.lines().find(|l| l.starts_with("MemTotal:"))?;
        let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
        kib.checked_mul(1024)
    });
    total.map_or(1 << 30, |bytes| bytes / 4)
}

/// The engine and what keeps its data directory ours.
pub struct Storage {
    pub engine: Engine,
    /// Held for the process's lifetime: a second process on the directory refuses to start.
    _lock: Option<std::fs::File>,
}

/// Open the configured storage, recovering a data directory if there is one.
pub fn open_storage(
    config: &Config,
    progress: Arc<std::sync::atomic::AtomicU64>,
) -> Result<Storage, ServeError> {
    let max_memory_bytes = memory_budget(config.limits.max_memory_bytes);
    tracing::info!(max_memory_bytes, "memory budget for streams");
    let engine_config = |default_durability| EngineConfig {
        // 0: no cap of its own (`ephemeral` streams are bounded by the memory budget).
        max_stream_bytes: match config.limits.max_stream_bytes {
            0 => u64::MAX,
            n => n,
        },
        max_memory_bytes,
        default_durability,
        // Validated against small maxima when the configuration was read.
        max_fork_depth: u32::try_from(config.limits.max_fork_depth).unwrap_or(u32::MAX),
        max_producer_id_bytes: usize::try_from(config.limits.max_producer_id_bytes)
            .unwrap_or(usize::MAX),
        max_stream_seq_bytes: usize::try_from(config.limits.max_stream_seq_bytes)
            .unwrap_or(usize::MAX),
        max_producers_per_log: usize::try_from(config.limits.max_producers_per_stream)
            .unwrap_or(usize::MAX),
        max_topics: config.limits.max_topics,
        max_streams: config.limits.max_streams,
        max_total_bytes: config.limits.max_total_bytes,
        max_routers: config.limits.max_routers,
        max_subscriptions: config.limits.max_subscriptions,
        max_subscription_links: config.limits.max_subscription_links,
    };
    match &config.storage {
        StorageMode::Memory => {
            open_arena(&config.arena);
            Ok(Storage {
                engine: Engine::new(engine_config(Durability::Ephemeral), Arc::new(SystemClock)),
                _lock: None,
            })
        }
        StorageMode::Files {
            data_dir,
            default,
            wal_shards,
            sync_interval,
            max_open_files,
        } => {
            let fail = |what: &str, e: &dyn std::fmt::Display| {
                ServeError::Storage(format!("{what} {}: {e}", data_dir.display()))
            };
            std::fs::create_dir_all(data_dir).map_err(|e| fail("cannot create", &e))?;
            let lock_path = data_dir.join("LOCK");
            let lock = std::fs::OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .open(&lock_path)
                .map_err(|e| fail("cannot open the lock file in", &e))?;
            if let Err(e) = lock.try_lock() {
                return Err(ServeError::Storage(format!(
                    "{} is in use by another process ({e}); refusing to start",
                    data_dir.display()
                )));
            }
            open_arena(&config.arena);
            let dir = FsDir::open(data_dir).map_err(|e| fail("cannot open", &e))?;
            let mut storage = StorageConfig::new(Arc::new(dir));
            storage.progress = progress;
            if *wal_shards > 0 {
                storage.shards = *wal_shards;
            }
            storage.sync_interval = *sync_interval;
            storage.max_open_files = match *max_open_files {
                0 => auto_max_open_files().unwrap_or(storage.max_open_files),
                n => n,
            };
            let storage_files = storage.max_open_files;
            let started = std::time::Instant::now();
            let (engine, report) =
                Engine::recover(engine_config(*default), Arc::new(SystemClock), storage)
                    .map_err(|e| fail("cannot recover", &e))?;
            for torn in &report.torn_tails {
                tracing::warn!(
                    "WAL ended in a torn record (an interrupted write), truncated: {torn}"
                );
            }
            tracing::info!(
                data_dir = %data_dir.display(),
                default_durability = %default,
                max_open_files = storage_files,
                streams = report.logs,
                wal_records_replayed = report.records_replayed,
                elapsed_ms = started.elapsed().as_millis() as u64,
                "storage recovered"
            );
            Ok(Storage {
                engine,
                _lock: Some(lock),
            })
        }
    }
}

/// Make the memory arena before recovery or a request stores anything in it.
fn open_arena(want: &riffle_engine::ArenaBacking) {
    let in_use = riffle_engine::configure_arena(want.clone());
    tracing::info!("RAM-held chunks are kept in {in_use}");
}

/// Serve until `signal` completes.
pub async fn run(config: Config, signal: impl Future<Output = ()>) -> Result<(), ServeError> {
    // Uptime counts from here, through recovery and after it.
    let started = std::time::Instant::now();
    let tls = config
        .tls
        .as_ref()
        .map(|(c, k)| tls_acceptor(c, k))
        .transpose()?;
    let listener = TcpListener::bind(config.addr)
        .await
        .map_err(|source| ServeError::Bind {
            addr: config.addr,
            source,
        })?;
    let addr = listener.local_addr().unwrap_or(config.addr);
    if let Some(path) = &config.port_file {
        write_port_file(path, addr.port()).map_err(|source| ServeError::PortFile {
            path: path.clone(),
            source,
        })?;
    }
    let scheme = if tls.is_some() { "https" } else { "http" };
    let connections = TaskTracker::new();
    let mut quiet_until = None;
    tokio::pin!(signal);

    // Recover on a blocking thread while the listener answers: probes say how far recovery
    // got (`/v0/ready`, `/readyz`: 503), everything else is a 503 with `Retry-After`.
    let progress = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let data_dir = match &config.storage {
        StorageMode::Files { data_dir, .. } => Some(data_dir.as_path()),
        StorageMode::Memory => None,
    };
    if let Some(dir) = data_dir
        && dir.exists()
        && !dir.is_dir()
    {
        return Err(ServeError::Setting(format!(
            "storage.data_dir (DS_STORAGE__DATA_DIR) {} is not a directory",
            dir.display()
        )));
    }
    let subs = Arc::new(
        crate::subscriptions::Subscriptions::open(config.subscriptions.clone(), data_dir)
            .map_err(|e| ServeError::Storage(format!("webhook signing keys: {e}")))?,
    );
    let (live, inflight) = App::slots(&config);
    let metrics = Metrics::new(progress.clone());
    let recovering = Arc::new(App {
        engine: Engine::new(EngineConfig::default(), Arc::new(SystemClock)),
        config: config.clone(),
        shutdown: CancellationToken::new(),
        scheme,
        topics: crate::http::topics::TopicsState::new(started),
        recovering: Some(progress.clone()),
        live: live.clone(),
        inflight: inflight.clone(),
        metrics: metrics.clone(),
        fanout: crate::fanout::Fanout::new(
            connections.clone(),
            tokio::runtime::Handle::current(),
            config.worker_threads,
        ),
        subs: subs.clone(),
    });
    let mut recovery = tokio::task::spawn_blocking({
        let config = config.clone();
        move || open_storage(&config, progress)
    });
    let storage = loop {
        tokio::select! {
            done = &mut recovery => {
                break done.map_err(|e| ServeError::Storage(format!("recovery panicked: {e}")))??;
            }
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => spawn_conn(&connections, stream, peer, recovering.clone(), tls.as_ref()),
                Err(e) => accept_failed(&e, &mut quiet_until).await,
            },
        }
    };
    let engine = storage.engine.clone();
    metrics.set_engine(engine.clone());
    // Recovered routers forward again (their tasks run on this runtime).
    engine.start_routers();
    let shutdown = CancellationToken::new();
    let fanout_threads = config.worker_threads;
    let app = Arc::new(App {
        engine: engine.clone(),
        config,
        shutdown: shutdown.clone(),
        scheme,
        topics: crate::http::topics::TopicsState::new(started),
        recovering: None,
        live,
        inflight,
        metrics,
        fanout: crate::fanout::Fanout::new(
            connections.clone(),
            tokio::runtime::Handle::current(),
            fanout_threads,
        ),
        subs: subs.clone(),
    });
    tracing::info!(
        %addr,
        tls = tls.is_some(),
        "riffle listening; streams at {}://{addr}/v1/stream/, topics at {}://{addr}/v0/topics/",
        app.scheme,
        app.scheme
    );
    // Start-up is over: what it alone ran is given back (see `resident`).
    match crate::resident::release_startup_pages() {
        Ok(r) => tracing::debug!(
            mappings = r.mappings,
            resident_kib = r.resident_kib,
            "start-up pages released"
        ),
        Err(e) => tracing::debug!(error = %e, "start-up pages kept"),
    }

    let delivery = tokio::spawn(crate::subscriptions::driver::run(
        engine.clone(),
        subs,
        app.metrics.clone(),
        shutdown.clone(),
    ));
    let sweeper = tokio::spawn({
        let engine = engine.clone();
        async move {
            let mut tick = tokio::time::interval(SWEEP_INTERVAL);
            loop {
                tick.tick().await;
                let n = engine.sweep_expired();
                if n > 0 {
                    tracing::debug!(expired = n, "swept expired streams");
                }
                engine.sweep_topics().await;
            }
        }
    });

    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    accept_failed(&e, &mut quiet_until).await;
                    continue;
                }
            },
            () = &mut signal => break,
        };
        spawn_conn(&connections, stream, peer, app.clone(), tls.as_ref());
    }

    tracing::info!("shutting down: ending live reads and draining connections");
    drop(listener);
    shutdown.cancel();
    sweeper.abort();
    delivery.abort();
    connections.close();
    let drained = tokio::time::timeout(DRAIN_TIMEOUT, connections.wait())
        .await
        .is_ok();
    if !drained {
        tracing::warn!("connections still open after {DRAIN_TIMEOUT:?}; exiting anyway");
    }
    // Hubs left by a drain that timed out go with their threads, and their hold on the engine.
    app.fanout.shutdown();
    if let Err(e) = engine.checkpoint() {
        tracing::error!(error = %e, "final checkpoint failed; the WAL will be replayed at start-up");
    } else if drained {
        // Nothing can read or write after the checkpoint: its last accesses are the last.
        if let Err(e) = engine.mark_stopped() {
            tracing::warn!(error = %e, "cannot mark the data directory as stopped; idle TTL clocks will restart at the next start");
        }
    }
    drop(storage);
    tracing::info!("stopped");
    Ok(())
}

/// Serve one accepted connection (after a TLS handshake, with TLS) on the connection tracker,
/// so shutdown can wait for in-flight requests to finish.
fn spawn_conn(
    connections: &TaskTracker,
    stream: tokio::net::TcpStream,
    peer: std::net::SocketAddr,
    app: Arc<App>,
    tls: Option<&TlsAcceptor>,
) {
    let _ = stream.set_nodelay(true);
    // A bounded send buffer: what a large catch-up read queues stays small enough to be sent
    // from cache (with the kernel's autotuning, up to 4 MiB per connection, reads on loopback
    // ran at half the speed at twice the CPU per MiB); see `server.send_buffer_bytes`.
    let sndbuf = app.config.send_buffer_bytes;
    if sndbuf > 0 {
        let _ = rustix::net::sockopt::set_socket_send_buffer_size(&stream, sndbuf);
    }
    match tls {
        None => {
            connections.spawn(conn::serve(stream, app));
        }
        Some(acceptor) => {
            let acceptor = acceptor.clone();
            connections.spawn(async move {
                let accept = acceptor.accept(stream);
                let stream = tokio::select! {
                    accepted = accept => match accepted {
                        Ok(s) => s,
                        Err(e) => {
                            tracing::debug!(%peer, error = %e, "TLS handshake failed");
                            return;
                        }
                    },
                    () = app.shutdown.cancelled() => return,
                };
                conn::serve(stream, app).await;
            });
        }
    }
}

fn tls_acceptor(cert: &std::path::Path, key: &std::path::Path) -> Result<TlsAcceptor, ServeError> {
    use rustls_pemfile::Item;
    let read = |p: &std::path::Path, key: &str| {
        std::fs::read(p)
            .map_err(|e| ServeError::Tls(format!("{key}: cannot read {}: {e}", p.display())))
    };
    let cert_pem = read(cert, "tls.cert_path (DS_TLS__CERT_PATH)")?;
    let certs: Vec<_> = rustls_pemfile::certs(&mut cert_pem.as_slice())
        .collect::<Result<_, _>>()
        .map_err(|e| ServeError::Tls(format!("tls.cert_path: {}: {e}", cert.display())))?;
    if certs.is_empty() {
        return Err(ServeError::Tls(format!(
            "{} (tls.cert_path) holds no PEM certificate",
            cert.display()
        )));
    }
    let key_pem = read(key, "tls.key_path (DS_TLS__KEY_PATH)")?;
    let key_der = rustls_pemfile::read_all(&mut key_pem.as_slice())
        .filter_map(Result::ok)
        .find_map(|item| match item {
            Item::Pkcs1Key(k) => Some(k.into()),
            Item::Pkcs8Key(k) => Some(k.into()),
            Item::Sec1Key(k) => Some(k.into()),
            _ => None,
        })
        .ok_or_else(|| {
            ServeError::Tls(format!(
                "{} (tls.key_path) holds no PEM private key",
                key.display()
            ))
        })?;
    let mut cfg = tokio_rustls::rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(certs, key_der)
        .map_err(|e| {
            ServeError::Tls(format!(
                "tls.cert_path and tls.key_path do not make a usable pair ({} and {}): {e}",
                cert.display(),
                key.display()
            ))
        })?;
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(cfg)))
}

#[cfg(test)]
mod tests {
    use super::memory_budget;

    #[test]
    fn the_memory_budget_is_sized_from_the_machine_unless_configured() {
        assert_eq!(memory_budget(12_345), 12_345);
        let auto = memory_budget(0);
        // A quarter of any machine that runs the tests, or the 1 GiB fallback.
        assert!(auto >= 64 << 20, "auto budget {auto}");
        if let Ok(info) = std::fs::read_to_string("/proc/meminfo") {
            let kib: u64 = info
                .lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.split_whitespace().next()?.parse().ok())
                .expect("MemTotal in /proc/meminfo");
            assert_eq!(auto, kib * 1024 / 4);
        }
    }
}
