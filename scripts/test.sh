#!/usr/bin/env bash
# Riffle's one test command: lint, unit and integration tests, the official conformance suite
# against the built binary, and the official TypeScript and Python clients.
# Needs Rust, Node 20 and npm; installs the npm/PyPI packages it uses (pinned by lockfiles).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
# A one-shot build: incremental caches would only double the disk the build takes.
export CARGO_INCREMENTAL=${CARGO_INCREMENTAL:-0}

step() { printf '\n==> %s\n' "$*"; }

step "format and lints"
cargo fmt --all --check
cargo clippy --workspace --all-targets --locked -- -D warnings

step "unit and integration tests"
cargo build --workspace --locked
cargo test --workspace --locked

# The run above drives the server in `memory` storage mode (the topics tests, which need a data
# directory for the default `disk` class, in `file-durable`). The HTTP integration tests whose
# outcome depends on the storage run again on each file-backed durability class: `file-fast`
# (`disk`) and `file-durable` (`fsync`; `acid` and `redb` are the same class). Tests that
# choose their own mode or touch only the connection layer (connections, lifecycle, crash,
# durability, keepalive_errors, whose 507 needs memory mode, ...) ran once above.
mode_dependent=(create_append_read forks_and_ttl live_reads producers_and_close robustness
  stream_names topics_config topics_records topics_watch topics_routers topics_ws topics_queues
  subscriptions subscriptions_delivery)
test_args=()
for t in "${mode_dependent[@]}"; do test_args+=(--test "$t"); done
for mode in file-fast file-durable; do
  step "server integration tests, storage mode $mode"
  RIFFLE_IT_STORAGE_MODE=$mode cargo test -p riffle-server --locked "${test_args[@]}"
done

bin="$("$root/scripts/bin-dir" debug)/riffle"

# Start the server on a free port; sets $url and $server_pid.
start_server() {
  local port
  port=$(node -e 'const s=require("net").createServer().listen(0,"127.0.0.1",()=>{console.log(s.address().port);s.close()})')
  log="$root/target/riffle-test-$port.log"
  data_dir=$(mktemp -d "${TMPDIR:-/tmp}/riffle-test-data.XXXXXX")
  DS_SERVER__LONG_POLL_TIMEOUT_SECS=1 DS_STORAGE__DATA_DIR="$data_dir" \
    "$bin" serve --config-dir "$root/target/no-config" --port "$port" "$@" >"$log" 2>&1 &
  server_pid=$!
  url="http://127.0.0.1:$port"
  for _ in $(seq 1 100); do
    if node -e 'fetch(process.argv[1]).then(r=>process.exit(r.ok?0:1),()=>process.exit(1))' "$url/readyz"; then
      return 0
    fi
    sleep 0.1
  done
  echo "server did not start; its log:" >&2
  cat "$log" >&2
  return 1
}
stop_server() {
  kill -TERM "$server_pid" 2>/dev/null || true
  wait "$server_pid" 2>/dev/null || true
  rm -rf "$data_dir"
}
trap 'stop_server' EXIT

(cd conformance && npm ci --no-audit --no-fund --loglevel=error)
for mode in memory file-fast file-durable acid; do
  step "conformance suite (@durable-streams/server-conformance-tests 0.3.6, with subscriptions), storage mode $mode"
  # The suite's webhook receiver is on 127.0.0.1: the development exception is on here only.
  DS_STORAGE__MODE=$mode DS_SUBSCRIPTIONS__ALLOW_LOCALHOST_WEBHOOKS=true start_server
  (cd conformance && CONFORMANCE_TEST_URL="$url" npx vitest run)
  stop_server
done

step "official clients (TypeScript and Python)"
start_server
RIFFLE_URL="$url" clients/run.sh
stop_server

step "benchmark tool smoke (riffle-bench --quick, every scenario against Riffle)"
bench/smoke.sh

step "all tests passed"
