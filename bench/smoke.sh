#!/usr/bin/env bash
# CI smoke of riffle-bench: builds the (debug) binaries if needed, starts Riffle in memory mode
# on a free port, and runs every scenario briefly (`riffle-bench --quick all`) and the `__ds`
# pull-wake subscription scenario (`riffle-bench --quick subs`: 500 streams, 2 s), then starts a
# file-durable Riffle and runs the topics /v0 scenarios briefly (`riffle-bench --quick topics`).
# Fails on any request error or verification mismatch; asserts nothing about speed. About 40 s
# once built.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"

# Speed is not measured here, so the debug build that the test run already made will do.
cargo build --locked --quiet -p riffle-server -p riffle-bench
bin="$(scripts/bin-dir debug)"
bench="$bin/riffle-bench"
work=$(mktemp -d "${TMPDIR:-/tmp}/riffle-bench-smoke.XXXXXX")
pids=()
cleanup() {
  for p in "${pids[@]}"; do
    kill -TERM "$p" 2>/dev/null || true
    wait "$p" 2>/dev/null || true
  done
  rm -rf "$work"
}
trap cleanup EXIT

# start MODE NAME: Riffle in storage mode MODE on a free port; sets port and pid.
start() {
  port=$("$bench" free-port)
  DS_STORAGE__MODE=$1 DS_STORAGE__DATA_DIR="$work/$2" DS_LOG__RUST_LOG=warn \
    "$bin/riffle" serve --port "$port" --config-dir "$work" >"$work/$2.log" 2>&1 &
  pid=$!
  pids+=("$pid")
  for _ in $(seq 1 100); do
    # Ready once /readyz answers 200 (while it recovers, Riffle listens and answers 503).
    local status
    status=$( (exec 3<>"/dev/tcp/127.0.0.1/$port" && printf 'GET /readyz HTTP/1.0\r\n\r\n' >&3 &&
      read -r line <&3 && echo "$line") 2>/dev/null || true)
    [[ "$status" == *" 200 "* ]] && return
    if ! kill -0 "$pid" 2>/dev/null; then
      echo "riffle did not start:" >&2
      cat "$work/$2.log" >&2
      exit 1
    fi
    sleep 0.1
  done
}

start memory streams
"$bench" --quick all --url "http://127.0.0.1:$port/v1/stream" --server-pid "$pid"
"$bench" --quick subs --url "http://127.0.0.1:$port/v1/stream" --server-pid "$pid"
# The topics scenarios write fsync and disk topics: they need a data directory.
start file-durable topics
"$bench" --quick --duration 1 --warmup 0.2 topics --url "http://127.0.0.1:$port/v1/stream" --server-pid "$pid"
# The compare driver itself, with the scenarios only it runs (cardinality: appends spread over
# many streams), on Riffle alone (quick mode: small stream counts, memory mode).
"$bench" --quick compare --riffle "$bin/riffle" --pinning off --scenarios cardinality,fanout \
  --cardinality-streams 1000,3000
