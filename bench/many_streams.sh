#!/usr/bin/env bash
# Many streams, one server: fill N `file-durable` streams (then 5 s of 256-byte appends over
# them from 64 connections), stop gracefully, restart on the same data directory; prints the
# time and RSS of each step.
#
#   bench/many_streams.sh [N]        # default 1000000; needs about 2.2 GiB of disk per 1M
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
n="${1:-1000000}"
cargo build --release --locked --quiet -p riffle-server -p riffle-bench
bin="$(scripts/bin-dir)"
bench="$bin/riffle-bench"
port=$("$bench" free-port)
work=$(mktemp -d "${TMPDIR:-/tmp}/riffle-many.XXXXXX")
trap 'kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; rm -rf "$work"' EXIT
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

rss() { grep -E 'VmRSS|VmHWM' "/proc/$pid/status" | tr -s ' \n' ' '; }
start() {
  DS_STORAGE__MODE=file-durable DS_STORAGE__DATA_DIR="$work/data" \
    DS_LIMITS__MAX_MEMORY_BYTES=16000000000 "$bin/riffle" --port "$port" \
    >"$work/server-$1.log" 2>&1 &
  pid=$!
  local t0
  t0=$(date +%s.%N)
  until curl -sf -o /dev/null "http://127.0.0.1:$port/readyz"; do sleep 0.05; done
  echo "start $1: ready after $(echo "$(date +%s.%N) - $t0" | bc) s; $(rss)"
}

start 1
"$bench" --url "http://127.0.0.1:$port/v1/stream" --server-pid "$pid" --progress 0 \
  --no-readback --keep append --streams "$n" -c 64 --size 256 --duration 5 | grep '^append  '
echo "after the fill: $(rss)"
t0=$(date +%s.%N)
kill -TERM "$pid"
while kill -0 "$pid" 2>/dev/null; do sleep 0.05; done
echo "graceful stop: $(echo "$(date +%s.%N) - $t0" | bc) s; data dir $(du -sh "$work/data" | cut -f1)"
start 2
sleep 2
echo "2 s after the restart: $(rss)"
sleep 8
echo "10 s after the restart: $(rss)"
