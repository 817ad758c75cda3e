//! Starting and stopping the servers under comparison, each fresh for every run.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use bytes::Bytes;
use http::Method;
use tokio::process::{Child, Command};

use crate::client::{Conn, Target};

/// Long-poll timeout given to every server (seconds); data flows continuously in the live
/// scenarios, so it only matters for idle tails.
const LONG_POLL_SECS: u64 = 10;
/// Memory and stream-size limits raised so no server cuts a benchmark short.
const BIG_LIMIT: &str = "17179869184"; // 16 GiB

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// No fsync: each server's in-memory (or page-cache) mode.
    Memory,
    /// Every acknowledged append fsynced.
    Durable,
}

impl Mode {
    pub fn parse(s: &str) -> Result<Self> {
        match s {
            "memory" => Ok(Mode::Memory),
            "durable" | "fsync" => Ok(Mode::Durable),
            _ => bail!("unknown mode {s} (memory|durable)"),
        }
    }
    pub fn name(self) -> &'static str {
        match self {
            Mode::Memory => "memory",
            Mode::Durable => "durable",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Riffle,
    /// crates.io `durable-streams` 0.1.5 (Electric's Rust server).
    Ds015,
    /// crates.io `durable-streams-server` 0.3.0.
    Dss030,
    /// npm `@durable-streams/server` 0.3.7 (the Node reference server).
    Node,
}

impl Kind {
    pub fn parse(s: &str) -> Result<Self> {
        match s {
            "riffle" => Ok(Kind::Riffle),
            "ds-0.1.5" | "durable-streams" => Ok(Kind::Ds015),
            "dss-0.3.0" | "durable-streams-server" => Ok(Kind::Dss030),
            "node-0.3.7" | "node" => Ok(Kind::Node),
            _ => bail!("unknown server {s} (riffle|ds-0.1.5|dss-0.3.0|node-0.3.7)"),
        }
    }
    pub fn name(self) -> &'static str {
        match self {
            Kind::Riffle => "riffle",
            Kind::Ds015 => "ds-0.1.5",
            Kind::Dss030 => "dss-0.3.0",
            Kind::Node => "node-0.3.7",
        }
    }

    /// How this server is configured in `mode`, for the report.
    pub fn describe(self, mode: Mode) -> &'static str {
        match (self, mode) {
            (Kind::Riffle, Mode::Memory) => "riffle DS_STORAGE__MODE=memory",
            (Kind::Riffle, Mode::Durable) => "riffle DS_STORAGE__MODE=file-durable",
            (Kind::Ds015, Mode::Memory) => {
                "durable-streams 0.1.5 --durability memory (no WAL, no fsync; data in page cache)"
            }
            (Kind::Ds015, Mode::Durable) => {
                "durable-streams 0.1.5 --durability wal (group-commit fdatasync)"
            }
            (Kind::Dss030, Mode::Memory) => "durable-streams-server 0.3.0 DS_STORAGE__MODE=memory",
            (Kind::Dss030, Mode::Durable) => {
                "durable-streams-server 0.3.0 DS_STORAGE__MODE=file-durable"
            }
            (Kind::Node, Mode::Memory) => "@durable-streams/server 0.3.7, in memory",
            (Kind::Node, Mode::Durable) => {
                "@durable-streams/server 0.3.7 with dataDir (fdatasync per append, LMDB)"
            }
        }
    }
}

/// Where things are.
#[derive(Clone, Debug)]
pub struct Env {
    pub riffle: PathBuf,
    pub cache: PathBuf,
    /// Parent of the per-run server directories (data, logs).
    pub runs: PathBuf,
    /// `taskset -c` list for the servers, when pinning.
    pub server_cpus: Option<String>,
}

impl Env {
    /// The program of a server kind, if installed.
    pub fn program(&self, kind: Kind) -> PathBuf {
        match kind {
            Kind::Riffle => self.riffle.clone(),
            Kind::Ds015 => self
                .cache
                .join("durable-streams-0.1.5/bin/durable-streams-server"),
            Kind::Dss030 => self
                .cache
                .join("durable-streams-server-0.3.0/bin/durable-streams-server"),
            Kind::Node => self.cache.join("node-server-0.3.7/node-server.mjs"),
        }
    }

    pub fn installed(&self, kind: Kind) -> bool {
        self.program(kind).is_file()
    }
}

pub struct Running {
    pub pid: u32,
    pub target: Target,
    child: Child,
    dir: PathBuf,
    log: PathBuf,
}

fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

fn tail(path: &Path) -> String {
    let s = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(5)..].join(" | ")
}

/// Starts a fresh instance (new port, empty data directory) and waits until it answers HTTP.
pub async fn start(env: &Env, kind: Kind, mode: Mode, tag: &str) -> Result<Running> {
    let port = free_port()?;
    let dir = env
        .runs
        .join(format!("{}-{}-{tag}", kind.name(), mode.name()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("config"))?;
    let data = dir.join("data");
    let log = dir.join("server.log");
    let prog = env.program(kind);
    let p = port.to_string();
    let durable = mode == Mode::Durable;
    let (program, args, envs): (PathBuf, Vec<String>, Vec<(&str, String)>) = match kind {
        Kind::Riffle => (
            prog,
            vec![
                "serve".into(),
                "--port".into(),
                p,
                "--config-dir".into(),
                "config".into(),
            ],
            vec![
                (
                    "DS_STORAGE__MODE",
                    if durable { "file-durable" } else { "memory" }.into(),
                ),
                ("DS_STORAGE__DATA_DIR", data.display().to_string()),
                ("DS_LIMITS__MAX_MEMORY_BYTES", BIG_LIMIT.into()),
                ("DS_LIMITS__MAX_STREAM_BYTES", BIG_LIMIT.into()),
                (
                    "DS_SERVER__LONG_POLL_TIMEOUT_SECS",
                    LONG_POLL_SECS.to_string(),
                ),
                ("DS_LOG__RUST_LOG", "warn".into()),
            ],
        ),
        Kind::Ds015 => (
            prog,
            vec![
                "--port".into(),
                p,
                "--data-dir".into(),
                data.display().to_string(),
                "--durability".into(),
                if durable { "wal" } else { "memory" }.into(),
                "--long-poll-timeout-ms".into(),
                (LONG_POLL_SECS * 1000).to_string(),
            ],
            vec![],
        ),
        Kind::Dss030 => (
            prog,
            vec![],
            vec![
                ("DS_SERVER__BIND_ADDRESS", format!("127.0.0.1:{port}")),
                (
                    "DS_STORAGE__MODE",
                    if durable { "file-durable" } else { "memory" }.into(),
                ),
                ("DS_STORAGE__DATA_DIR", data.display().to_string()),
                ("DS_LIMITS__MAX_MEMORY_BYTES", BIG_LIMIT.into()),
                ("DS_LIMITS__MAX_STREAM_BYTES", BIG_LIMIT.into()),
                (
                    "DS_SERVER__LONG_POLL_TIMEOUT_SECS",
                    LONG_POLL_SECS.to_string(),
                ),
                ("DS_OBSERVABILITY__RUST_LOG", "warn".into()),
            ],
        ),
        Kind::Node => {
            let mut args = vec![prog.display().to_string(), p];
            if durable {
                args.push(data.display().to_string());
            }
            (
                "node".into(),
                args,
                vec![("LONG_POLL_TIMEOUT_MS", (LONG_POLL_SECS * 1000).to_string())],
            )
        }
    };
    let mut cmd = match &env.server_cpus {
        Some(cpus) => {
            let mut c = Command::new("taskset");
            c.arg("-c").arg(cpus).arg(&program);
            c
        }
        None => Command::new(&program),
    };
    let logf = std::fs::File::create(&log)?;
    cmd.args(&args)
        .envs(envs)
        .env_remove("RUST_LOG")
        .current_dir(&dir)
        .stdin(Stdio::null())
        .stdout(logf.try_clone()?)
        .stderr(logf)
        .kill_on_drop(true);
    let mut child = cmd
        .spawn()
        .with_context(|| format!("start {}", program.display()))?;
    let pid = child.id().context("no pid")?;
    let target = Target::parse(&format!("http://127.0.0.1:{port}/v1/stream"))?;
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut conn = Conn::new(&target);
    loop {
        if let Some(st) = child.try_wait()? {
            bail!("{} exited at start ({st}): {}", kind.name(), tail(&log));
        }
        let probe = conn
            .send(
                Method::HEAD,
                "/v1/stream/__riffle_bench_probe__",
                &[],
                Bytes::new(),
                Duration::from_secs(1),
            )
            .await;
        // Any answer but 503: Riffle answers 503 while it recovers its data directory.
        if probe.is_ok_and(|r| r.status() != http::StatusCode::SERVICE_UNAVAILABLE) {
            break;
        }
        if Instant::now() > deadline {
            let _ = child.kill().await;
            bail!("{} did not answer within 30 s: {}", kind.name(), tail(&log));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(Running {
        pid,
        target,
        child,
        dir,
        log,
    })
}

impl Running {
    /// Stops the server (SIGTERM, then SIGKILL after 5 s) and removes its directory.
    pub async fn stop(mut self) {
        let _ = std::process::Command::new("kill")
            .args(["-TERM", &self.pid.to_string()])
            .status();
        if tokio::time::timeout(Duration::from_secs(5), self.child.wait())
            .await
            .is_err()
        {
            let _ = self.child.kill().await;
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }

    /// The last lines of the server's log.
    pub fn log_tail(&self) -> String {
        tail(&self.log)
    }
}
