//! `compare`: Riffle against the peer servers on loopback, like with like (memory against
//! memory, fsync-durable against Riffle's file-durable), interleaved rounds (A B C D, A B C D,
//! ...), each run on a freshly started server, then medians and Riffle/peer ratios.

mod servers;
mod table;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use clap::Args;
use serde::Serialize;

use crate::scenarios::{self, Common};
use crate::stats::ScenarioResult;
use crate::{Global, defaults, quick_args, run_id};
use servers::{Env, Kind, Mode};

#[derive(Args, Clone, Debug)]
pub struct CompareArgs {
    /// The riffle binary [default: the `riffle` beside this riffle-bench, as cargo builds
    /// them].
    #[arg(long)]
    pub riffle: Option<PathBuf>,
    /// Where bench/peers/install.sh put the peers [default: $RIFFLE_BENCH_CACHE or ~/.cache/riffle-bench].
    #[arg(long)]
    pub cache: Option<PathBuf>,
    /// Interleaved rounds; the table shows the median of each.
    #[arg(long, default_value_t = 3)]
    pub rounds: usize,
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "riffle,ds-0.1.5,dss-0.3.0,node-0.3.7"
    )]
    pub servers: Vec<String>,
    /// memory (no fsync) and/or durable (fsync before acknowledging).
    #[arg(long, value_delimiter = ',', default_value = "memory,durable")]
    pub modes: Vec<String>,
    /// Scenarios to run, with their default parameters (see each scenario's --help).
    #[arg(long, value_delimiter = ',', default_value = "append,read,rtt,fanout")]
    pub scenarios: Vec<String>,
    /// Subscriber counts of the fanout scenario.
    #[arg(long, value_delimiter = ',', default_value = "1,10,100,1000")]
    pub fanout_k: Vec<usize>,
    /// Stream counts of the cardinality scenario (256-byte appends from 64 connections spread
    /// over this many streams, created first).
    #[arg(long, value_delimiter = ',', default_value = "100000,1000000")]
    pub cardinality_streams: Vec<usize>,
    /// Measured seconds per fanout step.
    #[arg(long, default_value_t = 3.0)]
    pub fanout_secs: f64,
    /// Appends per second of the fanout scenario's writer (default: the scenario's, 20). At
    /// K = 10,000 the default makes 200,000 deliveries a second, which saturates one core of
    /// the load generator as well as the server's.
    #[arg(long)]
    pub fanout_rate: Option<f64>,
    /// CPU pinning: auto (load generator on CPU 0, servers on the others, when taskset exists
    /// and there are 2+ CPUs), off, or LOADGEN_CPUS:SERVER_CPUS (taskset lists, e.g. 0:1).
    #[arg(long = "pinning", default_value = "auto")]
    pub pinning: String,
    /// Write every run's results as JSON to this file.
    #[arg(long)]
    pub out: Option<PathBuf>,
}

fn cpus() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

fn has_taskset() -> bool {
    std::process::Command::new("taskset")
        .arg("-V")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// `(load generator, servers)` CPU lists, or `None` when not pinning. Called before the
/// runtime starts (and before this process is pinned, which would change the CPU count), so
/// every thread inherits the pinning.
pub fn cpu_plan(c: &CompareArgs) -> Option<(String, String)> {
    match c.pinning.as_str() {
        "off" => None,
        "auto" => {
            let n = cpus();
            (n >= 2 && has_taskset()).then(|| {
                let servers = if n == 2 {
                    "1".to_string()
                } else {
                    format!("1-{}", n - 1)
                };
                ("0".to_string(), servers)
            })
        }
        s => s
            .split_once(':')
            .map(|(a, b)| (a.to_string(), b.to_string())),
    }
}

/// One scenario on one server in one round.
#[derive(Serialize)]
pub struct Run {
    pub mode: String,
    pub server: String,
    pub round: usize,
    pub scenario: String,
    pub results: Vec<ScenarioResult>,
    pub failure: Option<String>,
}

fn sh(cmd: &str, args: &[&str]) -> String {
    std::process::Command::new(cmd)
        .args(args)
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split_once(':'))
        .map_or("unknown".into(), |(_, m)| m.trim().to_string())
}

/// `--riffle`, or the `riffle` in this executable's directory.
fn riffle_program(given: Option<PathBuf>) -> PathBuf {
    let path = given.unwrap_or_else(|| {
        std::env::current_exe()
            .ok()
            .and_then(|exe| exe.parent().map(|dir| dir.join("riffle")))
            .unwrap_or_else(|| PathBuf::from("riffle"))
    });
    std::fs::canonicalize(&path).unwrap_or(path)
}

pub async fn run(g: &Global, c: CompareArgs, pins: Option<(String, String)>) -> Result<i32> {
    let t0 = Instant::now();
    let cache = c.cache.clone().unwrap_or_else(|| {
        std::env::var_os("RIFFLE_BENCH_CACHE").map_or_else(
            || PathBuf::from(std::env::var("HOME").unwrap_or_default()).join(".cache/riffle-bench"),
            PathBuf::from,
        )
    });
    let env = Env {
        riffle: riffle_program(c.riffle.clone()),
        runs: cache.join("runs"),
        cache,
        server_cpus: pins.as_ref().map(|p| p.1.clone()),
    };
    let mut kinds = Vec::new();
    for s in &c.servers {
        kinds.push(Kind::parse(s)?);
    }
    let mut modes = Vec::new();
    for m in &c.modes {
        modes.push(Mode::parse(m)?);
    }
    let (mut rounds, mut fanout_secs) = (c.rounds.max(1), c.fanout_secs);
    let (a, r, t, mut f) = if g.quick {
        kinds = vec![Kind::Riffle];
        modes = vec![Mode::Memory];
        rounds = 1;
        fanout_secs = 1.0;
        quick_args()
    } else {
        let mut f: scenarios::fanout::FanoutArgs = defaults();
        f.subscribers = c.fanout_k.clone();
        (defaults(), defaults(), defaults(), f)
    };
    f.step_secs = Some(fanout_secs);
    if let Some(rate) = c.fanout_rate {
        f.rate = rate;
    }
    if !env.installed(Kind::Riffle) {
        bail!(
            "no riffle binary at {} (cargo build --release)",
            env.riffle.display()
        );
    }

    let mut notes = Vec::new();
    match &pins {
        Some((lg, srv)) => notes.push(format!(
            "pinning: load generator on CPU {lg}, servers on CPU {srv} (taskset)"
        )),
        _ => notes.push("pinning: none (taskset missing, fewer than 2 CPUs, or --pinning off); load generator and server share the CPUs".into()),
    }
    kinds.retain(|&k| {
        let ok = env.installed(k);
        if !ok {
            notes.push(format!(
                "{} skipped: not installed at {} (run bench/peers/install.sh)",
                k.name(),
                env.program(k).display()
            ));
        }
        ok
    });
    let mut plan: Vec<(Mode, Vec<Kind>)> = Vec::new();
    for &mode in &modes {
        if mode == Mode::Durable && kinds.contains(&Kind::Riffle) {
            // Probe: does this Riffle build accept DS_STORAGE__MODE=file-durable?
            match servers::start(&env, Kind::Riffle, mode, "probe").await {
                Ok(s) => s.stop().await,
                Err(e) => {
                    notes.push(format!(
                        "durable pairing skipped: this riffle does not start with DS_STORAGE__MODE=file-durable ({e:#})"
                    ));
                    continue;
                }
            }
        }
        plan.push((mode, kinds.clone()));
    }
    for n in &notes {
        eprintln!("{n}");
    }

    let mut runs: Vec<Run> = Vec::new();
    let total = plan.iter().map(|p| p.1.len()).sum::<usize>() * rounds * c.scenarios.len();
    let mut done = 0;
    for (mode, kinds) in &plan {
        for round in 1..=rounds {
            for scenario in &c.scenarios {
                for &kind in kinds {
                    done += 1;
                    eprintln!(
                        "[{done}/{total} {:.0}s] {} round {round}/{rounds}: {scenario} on {}",
                        t0.elapsed().as_secs_f64(),
                        mode.name(),
                        kind.describe(*mode)
                    );
                    let mut run = Run {
                        mode: mode.name().into(),
                        server: kind.name().into(),
                        round,
                        scenario: scenario.clone(),
                        results: Vec::new(),
                        failure: None,
                    };
                    match servers::start(&env, kind, *mode, &format!("r{round}")).await {
                        Err(e) => run.failure = Some(format!("{e:#}")),
                        Ok(server) => {
                            let common =
                                Common {
                                    target: server.target.clone(),
                                    server_pid: Some(server.pid),
                                    duration: Duration::from_secs_f64(
                                        g.duration.unwrap_or(if g.quick { 2.0 } else { 10.0 }),
                                    ),
                                    warmup: Duration::from_secs_f64(
                                        g.warmup.unwrap_or(if g.quick { 0.5 } else { 1.0 }),
                                    ),
                                    progress: Duration::ZERO,
                                    run_id: run_id(),
                                    strict_offsets: kind == Kind::Riffle,
                                    readback: !g.no_readback,
                                    keep: true,
                                };
                            let res = match scenario.as_str() {
                                "append" => scenarios::append::run(&common, &a).await,
                                "read" => scenarios::read::run(&common, &r).await,
                                "rtt" => scenarios::rtt::run(&common, &t).await,
                                "fanout" => scenarios::fanout::run(&common, &f).await,
                                "cardinality" => {
                                    cardinality(&common, &a, &c.cardinality_streams, g.quick).await
                                }
                                other => Err(anyhow::anyhow!("unknown scenario {other}")),
                            };
                            match res {
                                Ok(results) => run.results = results,
                                Err(e) => {
                                    run.failure =
                                        Some(format!("{e:#} (server log: {})", server.log_tail()))
                                }
                            }
                            server.stop().await;
                        }
                    }
                    eprintln!("    {}", table::one_line(&run));
                    runs.push(run);
                }
            }
        }
    }

    let header = vec![
        format!("date: {}", sh("date", &["-u", "+%Y-%m-%d %H:%M UTC"])),
        format!(
            "machine: {} CPUs ({}), {}",
            cpus_total(),
            cpu_model(),
            sh("uname", &["-sr"])
        ),
        format!(
            "parameters: {rounds} rounds, {}s measured + {}s warm-up per scenario, fanout K={:?} {}s each at {} appends/s",
            g.duration.unwrap_or(if g.quick { 2.0 } else { 10.0 }),
            g.warmup.unwrap_or(if g.quick { 0.5 } else { 1.0 }),
            f.subscribers,
            fanout_secs,
            f.rate
        ),
        format!("total time: {:.0}s", t0.elapsed().as_secs_f64()),
    ];
    let text = table::render(&header, &notes, &plan, &runs);
    if g.json {
        println!("{}", serde_json::to_string_pretty(&runs)?);
    } else {
        print!("{text}");
    }
    if let Some(out) = &c.out {
        std::fs::write(out, serde_json::to_string_pretty(&runs)?)?;
    }
    let bad = runs.iter().any(|r| {
        r.failure.is_some()
            || r.results
                .iter()
                .any(|x| !x.verify.ok || (g.quick && x.error_total() > 0))
    });
    Ok(i32::from(bad))
}

/// `cardinality`: the append scenario spread over many streams, one step per stream count
/// (each on the same server, the streams of earlier steps kept). No read-back: reading a
/// million streams back would take longer than the run.
async fn cardinality(
    common: &Common,
    base: &scenarios::append::AppendArgs,
    counts: &[usize],
    quick: bool,
) -> Result<Vec<ScenarioResult>> {
    let mut out = Vec::new();
    for &n in counts {
        let mut a = base.clone();
        a.streams = if quick { n.min(5000) } else { n };
        if !quick {
            (a.connections, a.size) = (64, 256);
        }
        let common = Common {
            readback: false,
            ..common.clone()
        };
        for mut r in scenarios::append::run(&common, &a).await? {
            r.scenario = "cardinality".into();
            r.label = format!("N={}", a.streams);
            out.push(r);
        }
    }
    Ok(out)
}

/// CPUs of the machine (not of this pinned process).
fn cpus_total() -> String {
    sh("nproc", &["--all"])
}
