//! riffle-bench: a load generator for any Durable Streams server, and a side-by-side
//! comparison of Riffle with the peer servers. See docs/BENCHMARKS.md.

mod client;
mod compare;
mod procstat;
mod report;
mod scenarios;
mod stats;
mod verify;

use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::{Args, Parser, Subcommand};

use scenarios::Common;
use scenarios::append::AppendArgs;
use scenarios::fanout::FanoutArgs;
use scenarios::read::ReadArgs;
use scenarios::rtt::RttArgs;
use scenarios::subs::SubsArgs;
use scenarios::topics_diff::TopicsDiffArgs;
use scenarios::topics_queue::TopicsQueueArgs;
use scenarios::topics_routers::TopicsRoutersArgs;
use scenarios::topics_watch::TopicsWatchArgs;
use scenarios::topics_write::TopicsWriteArgs;
use scenarios::topics_ws::TopicsWsArgs;
use stats::ScenarioResult;

#[derive(Parser)]
#[command(
    name = "riffle-bench",
    version,
    about = "Load generator for Durable Streams servers (any server, by URL), and a side-by-side comparison of Riffle with its peers"
)]
struct Cli {
    #[command(flatten)]
    g: Global,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Args, Clone, Debug)]
pub struct Global {
    /// Stream prefix of the server under test.
    #[arg(long, global = true, default_value = "http://127.0.0.1:4437/v1/stream")]
    url: String,
    /// The server's pid: report its CPU time per operation and peak RSS (from /proc).
    #[arg(long, global = true)]
    server_pid: Option<u32>,
    /// Measured seconds per scenario (per step for fanout) [default: 10; 2 with --quick].
    #[arg(long, global = true)]
    duration: Option<f64>,
    /// Warm-up seconds before the measured window [default: 1; 0.5 with --quick].
    #[arg(long, global = true)]
    warmup: Option<f64>,
    /// Print results as JSON (one array) instead of a table.
    #[arg(long, global = true)]
    json: bool,
    /// Seconds between progress lines on stderr; 0 for none.
    #[arg(long, global = true, default_value_t = 5.0)]
    progress: f64,
    /// CI smoke: short runs and small parameters, strict offsets; fail on any error.
    #[arg(long, global = true)]
    quick: bool,
    /// Require Stream-Next-Offset to advance by exactly the payload bytes (Riffle does).
    #[arg(long, global = true)]
    strict_offsets: bool,
    /// Send `Authorization: Bearer TOKEN` with every request (a server with API keys).
    #[arg(long, global = true)]
    bearer: Option<String>,
    /// Skip reading the written streams back after append and rtt.
    #[arg(long, global = true)]
    no_readback: bool,
    /// Keep the benchmark's streams instead of deleting them afterwards.
    #[arg(long, global = true)]
    keep: bool,
    /// Pin this process to these CPUs (taskset list, e.g. 0 or 0-1) before starting.
    #[arg(long, global = true)]
    pin: Option<String>,
}

#[derive(Subcommand)]
enum Cmd {
    /// Append throughput and latency (closed loop, or open loop with --rate).
    Append(AppendArgs),
    /// Catch-up read throughput from offset -1.
    Read(ReadArgs),
    /// Append-to-delivery latency for a long-poll and an SSE reader.
    Rtt(RttArgs),
    /// One writer, K SSE subscribers: delivery latency and server memory per K.
    Fanout(FanoutArgs),
    /// `__ds` pull-wake subscription over N streams, appends at a fixed rate, W workers
    /// claiming and acking: wake latency (append to claim) and server CPU per wake.
    Subs(SubsArgs),
    /// The four scenarios with their default parameters (small ones with --quick).
    All,
    /// Topics /v0: one-record or batched writes over N topics from C connections.
    TopicsWrite(TopicsWriteArgs),
    /// Topics /v0: diff reads of `limit` records from random cursors of a big topic.
    TopicsDiff(TopicsDiffArgs),
    /// Topics /v0: one writer, K watch sessions on one topic: delivery latency per K.
    TopicsWatch(TopicsWatchArgs),
    /// Topics /v0: one writer on a source topic, K routers into K dests each tailed by a
    /// long-poll diff reader: delivery latency and WAL bytes per source write per K.
    TopicsRouters(TopicsRoutersArgs),
    /// Topics /v0: a queue filled with jobs, drained by W workers claiming and acking:
    /// jobs/s, claim and ack latency, server CPU per job; every job acked exactly once.
    TopicsQueue(TopicsQueueArgs),
    /// Topics /v0: one writer, K WebSocket clients (`/v0/ws`) tailing one topic: delivery
    /// latency per K (the WebSocket side of topics-watch).
    TopicsWs(TopicsWsArgs),
    /// Topics /v0: one-record writes, 100-record batches, diff and watch with their default
    /// parameters (small ones with --quick).
    Topics,
    /// Start Riffle and the peers on loopback, run the scenarios interleaved, print medians and ratios.
    Compare(compare::CompareArgs),
    /// Print a free TCP port on 127.0.0.1 (for scripts).
    FreePort,
}

/// Parses the defaults of a scenario's arguments.
#[derive(Parser)]
struct Defaults<T: Args> {
    #[command(flatten)]
    inner: T,
}

pub fn defaults<T: Args>() -> T {
    Defaults::<T>::parse_from(["riffle-bench"]).inner
}

/// Small parameters for `--quick`.
pub fn quick_args() -> (AppendArgs, ReadArgs, RttArgs, FanoutArgs) {
    let mut a: AppendArgs = defaults();
    (a.streams, a.connections) = (4, 4);
    let mut r: ReadArgs = defaults();
    (r.streams, r.stream_bytes, r.connections) = (2, 2 << 20, 2);
    let mut t: RttArgs = defaults();
    t.rate = 200.0;
    let mut f: FanoutArgs = defaults();
    f.subscribers = vec![1, 10, 100];
    f.rate = 50.0;
    f.step_secs = Some(1.0);
    (a, r, t, f)
}

/// The `topics` runs: one-record writes, 100-record batches, diff reads, watch fan-out.
pub fn topics_args(
    quick: bool,
) -> (
    TopicsWriteArgs,
    TopicsWriteArgs,
    TopicsDiffArgs,
    TopicsWatchArgs,
) {
    let mut one: TopicsWriteArgs = defaults();
    let mut batch = one.clone();
    batch.batch = 100;
    let mut d: TopicsDiffArgs = defaults();
    let mut w: TopicsWatchArgs = defaults();
    if quick {
        (one.topics, one.connections) = (4, 4);
        (batch.topics, batch.connections) = (4, 4);
        (d.records, d.connections) = (10_000, 2);
        w.fan.subscribers = vec![1, 100];
        w.fan.rate = 50.0;
        w.fan.step_secs = Some(1.0);
    }
    (one, batch, d, w)
}

fn common(g: &Global) -> Result<Common> {
    let secs = |x: Option<f64>, normal: f64, quick: f64| {
        Duration::from_secs_f64(x.unwrap_or(if g.quick { quick } else { normal }).max(0.0))
    };
    Ok(Common {
        target: client::Target {
            authorization: g.bearer.as_ref().map(|t| format!("Bearer {t}")),
            ..client::Target::parse(&g.url)?
        },
        server_pid: g.server_pid,
        duration: secs(g.duration, 10.0, 2.0),
        warmup: secs(g.warmup, 1.0, 0.5),
        progress: Duration::from_secs_f64(if g.quick { 0.0 } else { g.progress.max(0.0) }),
        run_id: run_id(),
        strict_offsets: g.strict_offsets || g.quick,
        readback: !g.no_readback,
        keep: g.keep,
    })
}

/// A stream-name prefix unique to this run.
pub fn run_id() -> String {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    format!("rb{}-{}", t.as_millis() % 100_000_000, std::process::id())
}

/// Pins the current process (before any other thread exists) with taskset.
pub fn pin_self(cpus: &str) -> Result<()> {
    let st = std::process::Command::new("taskset")
        .args(["-p", "-c", cpus, &std::process::id().to_string()])
        .stdout(std::process::Stdio::null())
        .status()
        .context("taskset")?;
    if !st.success() {
        bail!("taskset -p -c {cpus} failed");
    }
    Ok(())
}

/// Runs the scenario(s); `all` goes on past a scenario that fails and names it in the
/// returned failures.
async fn run_scenarios(g: &Global, cmd: Cmd) -> Result<(Vec<ScenarioResult>, Vec<String>)> {
    let c = common(g)?;
    let (qa, qr, qt, qf) = quick_args();
    let mut out = Vec::new();
    let mut failures = Vec::new();
    match cmd {
        Cmd::Append(a) => out.extend(scenarios::append::run(&c, &a).await?),
        Cmd::Read(a) => out.extend(scenarios::read::run(&c, &a).await?),
        Cmd::Rtt(a) => out.extend(scenarios::rtt::run(&c, &a).await?),
        Cmd::Fanout(a) => out.extend(scenarios::fanout::run(&c, &a).await?),
        Cmd::Subs(a) => out.extend(scenarios::subs::run(&c, &a, g.quick).await?),
        Cmd::TopicsWrite(a) => out.extend(scenarios::topics_write::run(&c, &a).await?),
        Cmd::TopicsDiff(a) => out.extend(scenarios::topics_diff::run(&c, &a).await?),
        Cmd::TopicsWatch(a) => out.extend(scenarios::topics_watch::run(&c, &a).await?),
        Cmd::TopicsRouters(a) => out.extend(scenarios::topics_routers::run(&c, &a).await?),
        Cmd::TopicsQueue(a) => out.extend(scenarios::topics_queue::run(&c, &a).await?),
        Cmd::TopicsWs(a) => out.extend(scenarios::topics_ws::run(&c, &a).await?),
        Cmd::Topics => {
            let (one, batch, d, w) = topics_args(g.quick);
            for name in [
                "topics-write",
                "topics-write-batch",
                "topics-diff",
                "topics-watch",
            ] {
                if !g.json {
                    eprintln!("running {name} against {}", c.target.addr);
                }
                let res = match name {
                    "topics-write" => scenarios::topics_write::run(&c, &one).await,
                    "topics-write-batch" => scenarios::topics_write::run(&c, &batch).await,
                    "topics-diff" => scenarios::topics_diff::run(&c, &d).await,
                    _ => scenarios::topics_watch::run(&c, &w).await,
                };
                match res {
                    Ok(r) => out.extend(r),
                    Err(e) => failures.push(format!("scenario {name}: {e:#}")),
                }
            }
        }
        Cmd::All => {
            let (a, r, t, f) = if g.quick {
                (qa, qr, qt, qf)
            } else {
                (defaults(), defaults(), defaults(), defaults())
            };
            for name in ["append", "read", "rtt", "fanout"] {
                if !g.json {
                    eprintln!("running {name} against {}", g.url);
                }
                let res = match name {
                    "append" => scenarios::append::run(&c, &a).await,
                    "read" => scenarios::read::run(&c, &r).await,
                    "rtt" => scenarios::rtt::run(&c, &t).await,
                    _ => scenarios::fanout::run(&c, &f).await,
                };
                match res {
                    Ok(r) => out.extend(r),
                    Err(e) => failures.push(format!("scenario {name}: {e:#}")),
                }
            }
        }
        Cmd::Compare(_) | Cmd::FreePort => unreachable!("handled in main"),
    }
    Ok((out, failures))
}

fn main() {
    let cli = Cli::parse();
    if let Cmd::FreePort = cli.cmd {
        match std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()) {
            Ok(a) => println!("{}", a.port()),
            Err(e) => {
                eprintln!("riffle-bench: {e}");
                std::process::exit(2);
            }
        }
        return;
    }
    let plan = match &cli.cmd {
        Cmd::Compare(c) => compare::cpu_plan(c),
        _ => None,
    };
    let mut pin = plan.as_ref().map(|p| p.0.clone()).or(cli.g.pin.clone());
    if let Some(cpus) = &pin
        && let Err(e) = pin_self(cpus)
    {
        eprintln!("riffle-bench: could not pin to CPUs {cpus}: {e:#}");
        pin = None;
    }
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .enable_all()
        .build()
        .expect("tokio runtime");
    let code = rt.block_on(async move {
        match cli.cmd {
            Cmd::Compare(c) => compare::run(&cli.g, c, plan.filter(|_| pin.is_some())).await,
            cmd => match run_scenarios(&cli.g, cmd).await {
                Ok((results, failures)) => finish(&cli.g, &results, &failures),
                Err(e) => Err(e),
            },
        }
    });
    match code {
        Ok(0) => {}
        Ok(n) => std::process::exit(n),
        Err(e) => {
            eprintln!("riffle-bench: {e:#}");
            std::process::exit(2);
        }
    }
}

/// Prints results; the exit code is 1 when a scenario failed or a verification failed (or,
/// with --quick, when any request failed).
fn finish(g: &Global, results: &[ScenarioResult], failures: &[String]) -> Result<i32> {
    if g.json {
        println!("{}", serde_json::to_string_pretty(results)?);
    } else {
        print!("{}", report::table(results));
    }
    let mut code = 0;
    for f in failures {
        eprintln!("riffle-bench: {f}");
        code = 1;
    }
    for r in results {
        if !r.verify.ok {
            eprintln!("riffle-bench: {}: verification FAILED", r.name());
            code = 1;
        }
        if g.quick && r.error_total() > 0 {
            eprintln!("riffle-bench: {}: {} errors", r.name(), r.error_total());
            code = 1;
        }
    }
    Ok(code)
}
