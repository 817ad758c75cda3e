#!/usr/bin/env bash
# Appends with nobody pinned (users do not pin): Riffle with its default configuration against
# durable-streams 0.1.5 (Electric's server), both free to use every core, the load generator too.
# 256-byte appends over 64 streams from 64 connections, the servers taking turns.
#
#   bench/unpinned.sh [ROUNDS] [SECONDS]     # defaults: 3 rounds of 6 s per server and mode
#
# Modes: durable (Riffle `file-durable` vs `--durability wal`) and memory (Riffle `memory` vs
# `--durability memory`). Prints "mode round server appends/s cpu_us_per_append p99_us".
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
rounds="${1:-3}"
secs="${2:-6}"
CACHE="${RIFFLE_BENCH_CACHE:-$HOME/.cache/riffle-bench}"
"$here/bench/peers/install.sh" ds015
(cd "$here" && cargo build --release --quiet -p riffle-server -p riffle-bench)
bindir="$("$here/scripts/bin-dir")"
riffle="$bindir/riffle"
bench="$bindir/riffle-bench"
electric="$CACHE/durable-streams-0.1.5/bin/durable-streams-server"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

run() { # label -- server command with @PORT@ and @DIR@
  local label=$1; shift 2
  local port dir pid
  port="$("$bench" free-port)"
  dir="$work/$RANDOM$RANDOM"
  mkdir -p "$dir"
  local -a cmd=("$@")
  cmd=("${cmd[@]//@PORT@/$port}")
  cmd=("${cmd[@]//@DIR@/$dir}")
  env "${cmd[@]}" >"$dir.log" 2>&1 &
  pid=$!
  for _ in $(seq 100); do
    # Any HTTP answer but 503 (Riffle answers 503 while it recovers its data directory).
    code=$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$port/" || true)
    [[ "$code" != 000 && "$code" != 503 ]] && break
    sleep 0.1
  done
  "$bench" --url "http://127.0.0.1:$port/v1/stream" --server-pid "$pid" --json --progress 0 \
    --no-readback append --streams 64 -c 64 --size 256 --duration "$secs" 2>>"$dir.log" |
    python3 -c 'import json,sys; r=json.load(sys.stdin)[0]; s=r["server"]
print(round(r["ops_per_s"]), round(s["cpu_us_per_op"], 2), r["latency"][0]["p99_us"])' |
    sed "s/^/$label /"
  kill "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  rm -rf "$dir"
}

for round in $(seq "$rounds"); do
  for pair in "durable file-durable wal" "memory memory memory"; do
    read -r mode riffle_mode electric_mode <<<"$pair"
    riffle_run() {
      run "$mode $round riffle" -- DS_SERVER__PORT=@PORT@ DS_STORAGE__DATA_DIR=@DIR@ \
        DS_STORAGE__MODE="$riffle_mode" DS_LIMITS__MAX_MEMORY_BYTES=16000000000 \
        DS_LIMITS__MAX_STREAM_BYTES=8000000000 "$riffle"
    }
    electric_run() {
      run "$mode $round ds-0.1.5" -- "$electric" --port @PORT@ --data-dir @DIR@ \
        --durability "$electric_mode"
    }
    if (( round % 2 )); then riffle_run; electric_run; else electric_run; riffle_run; fi
  done
done
