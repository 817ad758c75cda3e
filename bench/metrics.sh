#!/usr/bin/env bash
# The cost of the metrics on the hot path: unauthenticated 256-byte appends over 64 streams from
# 64 connections in memory mode, two riffle binaries alternating round by round (A first in odd
# rounds), server pinned to CPU 0 and load generator to CPU 1. Closed loop (throughput) and a
# fixed 40,000 appends/s (server CPU per append at equal load).
#
#   bench/metrics.sh BASE_BINARY NEW_BINARY [ROUNDS] [SECONDS]   # defaults: 5 rounds of 6 s
#
# Prints one markdown row per run, then the medians per binary and mode.
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
base="$1"; new="$2"; rounds="${3:-5}"; secs="${4:-6}"
bench="${RIFFLE_BENCH:-$here/target/release/riffle-bench}"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

run() { # BINARY RATE: prints "appends/s cpu_us_per_append p99_us"
  local bin=$1 rate=$2 port pid code
  port="$("$bench" free-port)"
  taskset -c 0 env DS_SERVER__PORT="$port" DS_STORAGE__MODE=memory \
    DS_LIMITS__MAX_MEMORY_BYTES=16000000000 "$bin" >"$work/server.log" 2>&1 &
  pid=$!
  for _ in $(seq 100); do
    code=$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$port/healthz" || true)
    [[ "$code" == 200 ]] && break
    sleep 0.1
  done
  local -a load=(append --streams 64 -c 64 --size 256 --duration "$secs")
  [[ "$rate" != "-" ]] && load+=(--rate "$rate")
  "$bench" --url "http://127.0.0.1:$port/v1/stream" --server-pid "$pid" --pin 1 --json \
    --progress 0 --no-readback "${load[@]}" 2>>"$work/server.log" |
    python3 -c 'import json,sys; r=json.load(sys.stdin)[0]; s=r["server"]
print(round(r["ops_per_s"]), round(s["cpu_us_per_op"], 2), r["latency"][0]["p99_us"])'
  kill "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
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
