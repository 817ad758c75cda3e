#!/usr/bin/env bash
# CI smoke of riffle-bench: builds the (debug) binaries if needed, starts Riffle in memory mode
# on a free port, and runs every scenario briefly (`riffle-bench --quick all`). Fails on any
# request error or verification mismatch; asserts nothing about speed. About 20 s once built.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"

# Speed is not measured here, so the debug build that the test run already made will do.
cargo build --locked --quiet -p riffle-server -p riffle-bench
bench=target/debug/riffle-bench
port=$("$bench" free-port)
work=$(mktemp -d "${TMPDIR:-/tmp}/riffle-bench-smoke.XXXXXX")
DS_STORAGE__MODE=memory DS_LOG__RUST_LOG=warn \
  target/debug/riffle serve --port "$port" --config-dir "$work" >"$work/riffle.log" 2>&1 &
pid=$!
cleanup() {
  kill -TERM "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

for _ in $(seq 1 100); do
  if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then break; fi
  if ! kill -0 "$pid" 2>/dev/null; then
    echo "riffle did not start:" >&2
    cat "$work/riffle.log" >&2
    exit 1
  fi
  sleep 0.1
done

"$bench" --quick all --url "http://127.0.0.1:$port/v1/stream" --server-pid "$pid"
