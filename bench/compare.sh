#!/usr/bin/env bash
# The side-by-side comparison, in one command from a fresh clone:
#   bench/compare.sh                      # 3 rounds x 10 s per scenario, memory and durable modes
#   bench/compare.sh --rounds 3 --duration 8 --fanout-secs 3 --out results.json
# Installs the peers into $RIFFLE_BENCH_CACHE (default ~/.cache/riffle-bench) on first use
# (compiling the two Rust peers takes minutes), builds Riffle and riffle-bench in release mode,
# then runs `riffle-bench compare`, which starts every server fresh for every run, pins the
# load generator and the servers to different CPUs with taskset when it can, and prints
# medians and Riffle/peer ratios. Extra arguments go to `riffle-bench compare`
# (see `"$(scripts/bin-dir)/riffle-bench" compare --help`).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
export RIFFLE_BENCH_CACHE="${RIFFLE_BENCH_CACHE:-$HOME/.cache/riffle-bench}"

bench/peers/install.sh all
cargo build --release --locked -p riffle-server -p riffle-bench
# fanout opens a thousand connections on each side of loopback.
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
bin="$(scripts/bin-dir)"
exec "$bin/riffle-bench" compare --riffle "$bin/riffle" "$@"
