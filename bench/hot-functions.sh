#!/usr/bin/env bash
# Records which functions a running Riffle executes and writes them, in the order they first
# ran, to crates/server/link/hot-functions.txt, the list the linker places first in the
# executable (see crates/server/build.rs: it keeps the code a server runs on few pages, which
# is most of its idle memory).
#
#   bench/hot-functions.sh          # record again (needs gdb and nm; about 8 minutes)
#   bench/hot-functions.sh --check  # how much of the list the current build still has
#
# Symbol names carry hashes that change when a dependency, a feature or the compiler changes;
# editing code changes only a few (some of the edited module's, and the numbered local copies
# LTO makes): run it again after such a change, after editing code a benchmark runs, and when
# `--check` reports names missing. The server runs under gdb in memory and file-durable mode,
# on one CPU (a single-threaded runtime) and on all, through the benchmark client's Durable
# Streams scenarios, SSE fan-out to 1,000 subscribers and the /v0 topics scenarios.
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
list="$here/crates/server/link/hot-functions.txt"
bindir="$("$here/scripts/bin-dir")"
bin="$bindir/riffle"
bench="$bindir/riffle-bench"

present() { # how many names of the list the executable defines
  nm --defined-only "$bin" | awk -v bin="$bin" 'NR == FNR { have[$3] = 1; next } { n++; if ($1 in have) p++ }
    END { printf "%d of the %d functions listed are in %s\n", p, n, bin }' - "$list"
}

(cd "$here" && cargo build --release --quiet -p riffle-server -p riffle-bench)
if [[ "${1:-}" == "--check" ]]; then
  present
  exit 0
fi
command -v gdb >/dev/null || { echo "hot-functions: needs gdb" >&2; exit 1; }

work="$(mktemp -d)"
trap 'pkill -TERM -f "^$work/riffle" 2>/dev/null || true; rm -rf "$work"' EXIT
cp "$bin" "$work/riffle"
ulimit -n 20000 2>/dev/null || true
cpus="$(nproc)"

record() { # name mode pin(yes/no) workloads...
  local name=$1 mode=$2 pin=$3
  shift 3
  runs+=("$name")
  local port pfx=() lpfx=() gdbpid
  port="$("$bench" free-port)"
  if [[ $pin == yes && $cpus -ge 2 ]]; then pfx=(taskset -c 1); lpfx=(taskset -c 0); fi
  HOT_BIN="$work/riffle" HOT_OUT="$work/$name.hits" DS_SERVER__PORT="$port" \
    DS_STORAGE__MODE="$mode" DS_STORAGE__DATA_DIR="$work/data-$name" \
    "${pfx[@]}" gdb -q -batch -x "$here/bench/hot_functions.py" "$work/riffle" \
    >"$work/$name.gdb.log" 2>&1 &
  gdbpid=$!
  for _ in $(seq 1 180); do
    # Ready, not just listening: the listener answers 503 while the data directory recovers.
    [[ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$port/readyz")" == 200 ]] && break
    sleep 1
  done
  local url="http://127.0.0.1:$port/v1/stream"
  for w in "$@"; do
    case $w in
      ds) "${lpfx[@]}" "$bench" --url "$url" --progress 0 --quick all ;;
      fanout) "${lpfx[@]}" "$bench" --url "$url" --progress 0 fanout -k 1,100,1000 --duration 2 ;;
      topics) "${lpfx[@]}" "$bench" --url "$url" --progress 0 --quick topics ;;
    esac >"$work/$name.$w.log" 2>&1 || echo "hot-functions: $name $w exited $? (slowed by gdb; its functions still count)"
  done
  pkill -TERM -f "^$work/riffle" || true
  wait "$gdbpid" || true
  [[ -s "$work/$name.hits" ]] || { echo "hot-functions: $name recorded nothing" >&2; cat "$work/$name.gdb.log" >&2; exit 1; }
  # Without the boundary the list would lead with start-up's functions (and say nothing about
  # what a ready server runs): the symbol must exist (resident.rs keeps it out of line).
  [[ -s "$work/$name.hits.startup" ]] || {
    echo "hot-functions: $name never reached release_startup_pages (inlined?)" >&2; exit 1; }
  echo "hot-functions: $name: $(wc -l <"$work/$name.hits") functions ran"
}

# Order matters as much as the names: the kernel maps code in 64 KiB windows. What a ready
# server on one core runs to serve live subscribers leads, in both modes (the fan-out
# benchmark, where resident memory is measured), then catch-up reads and the other Durable
# Streams paths, /v0 topics and the multi-threaded runtime; what only start-up ran comes last
# (the server gives those pages back once it is ready).
runs=() # as recorded, in order
record memory-fanout memory yes fanout
record durable-fanout file-durable yes fanout
record memory-1cpu memory yes ds
record durable-1cpu file-durable yes ds topics
record memory memory no fanout ds
record durable file-durable no fanout ds topics

# First run first; each later run adds what the earlier ones did not run.
files=()
for run in "${runs[@]}"; do files+=("$work/$run.hits"); done
awk '!seen[$0]++' "${files[@]}" "${files[@]/%/.startup}" >"$list"
echo "hot-functions: wrote $(wc -l <"$list") names to $list; rebuild to lay them out"
