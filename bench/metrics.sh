#!/usr/bin/env bash
# The cost of the metrics on the hot path: unauthenticated 256-byte appends over 64 streams from
# 64 connections in memory mode, two riffle binaries alternating round by round (A first in odd
# rounds), server pinned to CPU 1 and load generator to CPU 0 (bench/append_run.sh). Closed
# loop (throughput) and a fixed 40,000 appends/s (server CPU per append at equal load).
#
#   bench/metrics.sh BASE_BINARY NEW_BINARY [ROUNDS] [SECONDS]   # defaults: 5 rounds of 6 s
#
# Prints one markdown row per run, then the medians per binary and mode.
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
base="$1"; new="$2"; rounds="${3:-5}"; secs="${4:-6}"
bench="${RIFFLE_BENCH:-$("$here/scripts/bin-dir")/riffle-bench}"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

# shellcheck source=bench/append_run.sh
. "$here/bench/append_run.sh"
run() { # BINARY RATE: prints "appends/s cpu_us_per_append p99_us"
  append_run metrics memory "$2" -- DS_SERVER__PORT=@PORT@ DS_STORAGE__MODE=memory \
    DS_LIMITS__MAX_MEMORY_BYTES=16000000000 "$1"
}

echo "| mode | round | binary | appends/s | server CPU µs/append | p99 µs |"
echo "|---|---|---|---|---|---|"
for r in $(seq 1 "$rounds"); do
  for mode in "closed -" "40k 40000"; do
    read -r label rate <<<"$mode"
    order=(base new)
    ((r % 2)) || order=(new base)
    for who in "${order[@]}"; do
      bin=$base; [[ $who == new ]] && bin=$new
      read -r a c p <<<"$(run "$bin" "$rate")"
      echo "| $label | $r | $who | $a | $c | $p |" | tee -a "$work/rows"
    done
  done
done
echo
python3 - "$work/rows" <<'PY'
import sys, statistics as st
rows = {}
for line in open(sys.argv[1]):
    c = [x.strip() for x in line.strip().strip('|').split('|')]
    rows.setdefault((c[0], c[2]), []).append(c)
for (mode, who), rs in sorted(rows.items()):
    m = lambda i: st.median(float(r[i]) for r in rs)
    print(f"{mode} {who}: appends/s {m(3):,.0f}, CPU µs/append {m(4):.2f}, p99 µs {m(5):,.0f} (n={len(rs)})")
PY
