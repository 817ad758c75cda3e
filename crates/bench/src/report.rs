//! Human-readable output of scenario results.

use std::fmt::Write;

use crate::stats::ScenarioResult;

pub fn ms(us: u64) -> String {
    format!("{:.3}", us as f64 / 1000.0)
}

/// Thousands separators for big counts.
pub fn thousands(x: f64) -> String {
    let n = x.round() as u64;
    let s = n.to_string();
    let mut out = String::new();
    for (i, ch) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(ch);
    }
    out
}

fn errors(r: &ScenarioResult) -> String {
    if r.errors.is_empty() {
        return "0".into();
    }
    r.errors
        .iter()
        .map(|(k, v)| format!("{k}:{v}"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// A table with one row per (result, latency distribution), then the verification lines.
pub fn table(results: &[ScenarioResult]) -> String {
    let mut rows: Vec<Vec<String>> = vec![
        [
            "scenario",
            "latency",
            "ops/s",
            "MiB/s",
            "p50 ms",
            "p90 ms",
            "p99 ms",
            "p99.9 ms",
            "max ms",
            "errors",
            "cpu µs/op",
            "peak RSS MiB",
            "verify",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect(),
    ];
    for r in results {
        for (i, l) in r.latency.iter().enumerate() {
            let first = i == 0;
            let s = &l.summary;
            let cell = |x: String| if first { x } else { String::new() };
            rows.push(vec![
                cell(r.name()),
                format!("{} (n={})", l.name, s.count),
                cell(thousands(r.ops_per_s)),
                cell(format!("{:.2}", r.mib_per_s)),
                ms(s.p50_us),
                ms(s.p90_us),
                ms(s.p99_us),
                ms(s.p999_us),
                ms(s.max_us),
                cell(errors(r)),
                cell(
                    r.server
                        .as_ref()
                        .map_or("-".into(), |u| format!("{:.1}", u.cpu_us_per_op)),
                ),
                cell(
                    r.server
                        .as_ref()
                        .map_or("-".into(), |u| format!("{:.1}", u.rss_peak_mib)),
                ),
                cell(if r.verify.ok { "ok" } else { "FAIL" }.into()),
            ]);
        }
    }
    let mut out = render(&rows);
    out.push('\n');
    for r in results {
        let _ = writeln!(out, "{} verification:", r.name());
        for c in &r.verify.checks {
            let _ = writeln!(out, "  {c}");
        }
    }
    out
}

/// Aligns columns: the first two left, the rest right.
pub fn render(rows: &[Vec<String>]) -> String {
    let cols = rows.iter().map(Vec::len).max().unwrap_or(0);
    let width: Vec<usize> = (0..cols)
        .map(|c| {
            rows.iter()
                .map(|r| r.get(c).map_or(0, |s| s.chars().count()))
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for (ri, r) in rows.iter().enumerate() {
        let mut line = String::new();
        for (c, cell) in r.iter().enumerate() {
            let pad = width[c] - cell.chars().count();
            if c < 2 {
                line.push_str(cell);
                line.push_str(&" ".repeat(pad));
            } else {
                line.push_str(&" ".repeat(pad));
                line.push_str(cell);
            }
            line.push_str("  ");
        }
        out.push_str(line.trim_end());
        out.push('\n');
        if ri == 0 {
            let total: usize = width.iter().map(|w| w + 2).sum();
            out.push_str(&"-".repeat(total.saturating_sub(2)));
            out.push('\n');
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thousands_separators() {
        assert_eq!(thousands(1234567.4), "1,234,567");
        assert_eq!(thousands(999.0), "999");
    }
}
