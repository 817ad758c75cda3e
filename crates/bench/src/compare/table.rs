//! The comparison table: per mode, one row per metric, the median over rounds for each
//! server, then the ratios Riffle/peer.

use std::fmt::Write;

use super::Run;
use super::servers::{Kind, Mode};
use crate::report::{ms, render as align, thousands};
use crate::stats::ScenarioResult;

type Get = fn(&ScenarioResult) -> Option<f64>;

struct Metric {
    scenario: &'static str,
    /// The result label (fanout's `K=10`), or empty.
    label: String,
    name: String,
    /// Higher is better (throughput) or lower is better (latency, CPU, memory).
    higher: bool,
    get: Get,
}

fn lat(r: &ScenarioResult, name: &str, q: fn(&crate::stats::LatencySummary) -> u64) -> Option<f64> {
    r.latency(name)
        .filter(|l| l.count > 0)
        .map(|l| q(l) as f64 / 1000.0)
}

fn cpu_per_op(r: &ScenarioResult) -> Option<f64> {
    r.server.as_ref().map(|u| u.cpu_us_per_op)
}

fn rss(r: &ScenarioResult) -> Option<f64> {
    r.server.as_ref().map(|u| u.rss_peak_mib)
}

fn metrics(scenario: &'static str, label: &str) -> Vec<Metric> {
    let m = |name: &str, higher: bool, get: Get| Metric {
        scenario,
        label: label.to_string(),
        name: if label.is_empty() {
            format!("{scenario}: {name}")
        } else {
            format!("{scenario} {label}: {name}")
        },
        higher,
        get,
    };
    match scenario {
        "append" | "cardinality" => vec![
            m("appends/s", true, |r| Some(r.ops_per_s)),
            m("p50 ms", false, |r| lat(r, "append", |l| l.p50_us)),
            m("p99 ms", false, |r| lat(r, "append", |l| l.p99_us)),
            m("p99.9 ms", false, |r| lat(r, "append", |l| l.p999_us)),
            m("server CPU µs/append", false, cpu_per_op),
            m("server peak RSS MiB", false, rss),
        ],
        "read" => vec![
            m("MiB/s", true, |r| Some(r.mib_per_s)),
            m("GET p50 ms", false, |r| lat(r, "get", |l| l.p50_us)),
            m("GET p99 ms", false, |r| lat(r, "get", |l| l.p99_us)),
            m("server CPU ms/MiB", false, |r| {
                let mib = r.bytes as f64 / (1024.0 * 1024.0);
                r.server
                    .as_ref()
                    .filter(|_| mib > 0.0)
                    .map(|u| u.cpu_s * 1000.0 / mib)
            }),
        ],
        "rtt" => vec![
            m("long-poll p50 ms", false, |r| {
                lat(r, "long-poll", |l| l.p50_us)
            }),
            m("long-poll p99 ms", false, |r| {
                lat(r, "long-poll", |l| l.p99_us)
            }),
            m("SSE p50 ms", false, |r| lat(r, "sse", |l| l.p50_us)),
            m("SSE p99 ms", false, |r| lat(r, "sse", |l| l.p99_us)),
        ],
        _ => vec![
            m("delivery p50 ms", false, |r| {
                lat(r, "delivery", |l| l.p50_us)
            }),
            m("delivery p99 ms", false, |r| {
                lat(r, "delivery", |l| l.p99_us)
            }),
            m("server CPU %", false, |r| {
                r.server.as_ref().map(|u| u.cpu_pct)
            }),
            m("server peak RSS MiB", false, rss),
        ],
    }
}

fn median(mut v: Vec<f64>) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    Some(if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    })
}

fn num(x: f64) -> String {
    if x >= 1000.0 {
        thousands(x)
    } else if x >= 100.0 {
        format!("{x:.1}")
    } else if x >= 10.0 {
        format!("{x:.2}")
    } else {
        format!("{x:.3}")
    }
}

/// A one-line summary of a run, printed as the comparison goes.
pub fn one_line(run: &Run) -> String {
    if let Some(f) = &run.failure {
        return format!("FAILED: {f}");
    }
    run.results
        .iter()
        .map(|r| {
            let main = r.latency.first().map_or(String::new(), |l| {
                format!(
                    "{} p50 {} p99 {} ms",
                    l.name,
                    ms(l.summary.p50_us),
                    ms(l.summary.p99_us)
                )
            });
            format!(
                "{}: {}/s {:.1} MiB/s {main} errors {} verify {}",
                r.name(),
                thousands(r.ops_per_s),
                r.mib_per_s,
                r.error_total(),
                if r.verify.ok { "ok" } else { "FAIL" }
            )
        })
        .collect::<Vec<_>>()
        .join("; ")
}

pub fn render(
    header: &[String],
    notes: &[String],
    plan: &[(Mode, Vec<Kind>)],
    runs: &[Run],
) -> String {
    let mut out = String::new();
    for h in header.iter().chain(notes) {
        let _ = writeln!(out, "{h}");
    }
    let _ = writeln!(
        out,
        "cells: median over rounds; ratio = Riffle/peer (↑ rows: above 1 means Riffle is faster; ↓ rows: below 1 means Riffle is lower/better)"
    );
    for (mode, kinds) in plan {
        let _ = writeln!(out, "\n== {} ==", mode.name());
        for k in kinds {
            let _ = writeln!(out, "  {:<11} {}", k.name(), k.describe(*mode));
        }
        let peers: Vec<Kind> = kinds
            .iter()
            .copied()
            .filter(|&k| k != Kind::Riffle)
            .collect();
        let has_riffle = kinds.contains(&Kind::Riffle);
        let mut head = vec!["metric".to_string(), String::new()];
        head.extend(kinds.iter().map(|k| k.name().to_string()));
        if has_riffle {
            head.extend(peers.iter().map(|k| format!("R/{}", k.name())));
        }
        let mut rows = vec![head];
        let mode_runs: Vec<&Run> = runs.iter().filter(|r| r.mode == mode.name()).collect();
        for scenario in ["append", "cardinality", "read", "rtt", "fanout"] {
            let srun: Vec<&&Run> = mode_runs
                .iter()
                .filter(|r| r.scenario == scenario)
                .collect();
            if srun.is_empty() {
                continue;
            }
            let mut labels: Vec<String> = Vec::new();
            for r in &srun {
                for x in &r.results {
                    if !labels.contains(&x.label) {
                        labels.push(x.label.clone());
                    }
                }
            }
            for label in &labels {
                for m in metrics(scenario, label) {
                    let med = |k: Kind| {
                        median(
                            srun.iter()
                                .filter(|r| r.server == k.name())
                                .flat_map(|r| r.results.iter())
                                .filter(|x| x.label == m.label && x.scenario == m.scenario)
                                .filter_map(|x| (m.get)(x))
                                .collect(),
                        )
                    };
                    let mut row = vec![m.name.clone(), if m.higher { "↑" } else { "↓" }.into()];
                    row.extend(kinds.iter().map(|&k| med(k).map_or("-".into(), num)));
                    if has_riffle {
                        let rv = med(Kind::Riffle);
                        row.extend(peers.iter().map(|&k| match (rv, med(k)) {
                            (Some(a), Some(b)) if b > 0.0 && a / b < 0.1 => {
                                format!("{:.3}x", a / b)
                            }
                            (Some(a), Some(b)) if b > 0.0 => format!("{:.2}x", a / b),
                            _ => "-".into(),
                        }));
                    }
                    rows.push(row);
                }
            }
            // Health of the runs behind the numbers.
            let mut row = vec![
                format!("{scenario}: errors / failed verifications"),
                String::new(),
            ];
            row.extend(kinds.iter().map(|&k| {
                let mine: Vec<&&&Run> = srun.iter().filter(|r| r.server == k.name()).collect();
                let failed = mine.iter().filter(|r| r.failure.is_some()).count();
                let errs: u64 = mine
                    .iter()
                    .flat_map(|r| r.results.iter())
                    .map(ScenarioResult::error_total)
                    .sum();
                let bad = mine
                    .iter()
                    .flat_map(|r| r.results.iter())
                    .filter(|x| !x.verify.ok)
                    .count();
                if failed > 0 {
                    format!("{errs}/{bad} ({failed} runs failed)")
                } else {
                    format!("{errs}/{bad}")
                }
            }));
            rows.push(row);
        }
        out.push_str(&align(&rows));
    }
    let problems: Vec<String> = runs
        .iter()
        .flat_map(|r| {
            let mut v = Vec::new();
            if let Some(f) = &r.failure {
                v.push(format!(
                    "{} {} round {} {}: {f}",
                    r.mode, r.server, r.round, r.scenario
                ));
            }
            for x in &r.results {
                for c in x.verify.checks.iter().filter(|c| c.starts_with("FAIL")) {
                    v.push(format!(
                        "{} {} round {} {}: {c}",
                        r.mode,
                        r.server,
                        r.round,
                        x.name()
                    ));
                }
                if !x.errors.is_empty() {
                    v.push(format!(
                        "{} {} round {} {}: errors {:?}",
                        r.mode,
                        r.server,
                        r.round,
                        x.name(),
                        x.errors
                    ));
                }
            }
            v
        })
        .collect();
    if !problems.is_empty() {
        let _ = writeln!(out, "\nproblems:");
        for p in problems {
            let _ = writeln!(out, "  {p}");
        }
    }
    out
}
