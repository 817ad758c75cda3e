#!/usr/bin/env bash
# Durable Streams subscriptions (`__ds`) at scale: N streams linked to one pull-wake
# subscription, appends spread over them at a fixed rate, workers claiming and acking through
# the wake stream (`riffle-bench subs`). Wake latency (append to the claim that covers it) and
# server CPU per wake, in memory and file-durable mode, pinned (server on CPU 1, load on CPU 0)
# and unpinned.
#
#   bench/subs.sh [ROUNDS] [extra riffle-bench subs args...]   # default: 1 round, 10,000 streams
#
# Prints "mode pinning round wakes/s appends/wake p50_ms p99_ms cpu_us/wake cpu_us/append errors".
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
rounds="${1:-1}"
shift || true
(cd "$here" && cargo build --release --quiet -p riffle-server -p riffle-bench)
bindir="$("$here/scripts/bin-dir")"
riffle="$bindir/riffle"
bench="$bindir/riffle-bench"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
pinnable=no
if command -v taskset >/dev/null && [ "$(nproc)" -ge 2 ]; then pinnable=yes; fi

run() { # mode pin round
  local mode=$1 pin=$2 round=$3 port dir pid spre=() bpre=()
  port="$("$bench" free-port)"
  dir="$work/$mode-$pin-$round"
  mkdir -p "$dir"
  if [ "$pin" = pinned ]; then spre=(taskset -c 1); bpre=(taskset -c 0); fi
  DS_STORAGE__MODE=$mode DS_STORAGE__DATA_DIR="$dir/data" DS_LOG__RUST_LOG=warn \
    "${spre[@]}" "$riffle" --port "$port" --config-dir "$dir" >"$dir/log" 2>&1 &
  pid=$!
  for _ in $(seq 100); do
    curl -sf -o /dev/null "http://127.0.0.1:$port/readyz" && break
    sleep 0.1
  done
  "${bpre[@]}" "$bench" --json --progress 0 subs --url "http://127.0.0.1:$port/v1/stream" \
    --server-pid "$pid" "${@:4}" 2>>"$dir/log" |
    python3 -c '
import json, sys
r = json.load(sys.stdin)[0]
p, w = r["params"], r["latency"][0]
print(round(p["wakes_per_s"]), round(p["appends_per_wake"], 2), w["p50_us"] / 1000,
      w["p99_us"] / 1000, round(p["cpu_us_per_wake"]), round(p["cpu_us_per_append"]),
      sum(r["errors"].values()) if isinstance(r["errors"], dict) else r["errors"])' | sed "s/^/$mode $pin $round /"
  kill "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
}

for round in $(seq "$rounds"); do
  for mode in memory file-durable; do
    pins=(unpinned)
    [ "$pinnable" = yes ] && pins=(pinned unpinned)
    for pin in "${pins[@]}"; do run "$mode" "$pin" "$round" "$@"; done
  done
done
