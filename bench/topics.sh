#!/usr/bin/env bash
# The topics /v0 targets (issue 9), measured with the server pinned to one core (taskset -c 1,
# load generator on CPU 0) and unpinned (nobody pinned), every server fresh, file-durable:
#
#   1. one-record writes over 64 topics from 64 connections against Durable Streams appends of
#      the same bytes (256) over 64 streams in the same class, fsync and disk, closed loop and
#      both at 30,000 requests/s: server CPU per write / CPU per append (target: at most 1.3x).
#      The two alternate order round by round.
#   2. 100-record batches, same topics and connections, fsync and disk, closed loop, and fsync
#      at 5,000 writes/s (target, fsync on one core: at least 500,000 records/s, p99 under
#      20 ms).
#   3. watch fan-out: 1 topic (fsync), 1, 10, 100, 1000 watchers, 20 writes/s, delivery latency.
#   4. a 1M-record fsync topic (200-byte records, untagged): filled once, then the server is
#      stopped (SIGTERM) and started again on the same data dir, pinned and then unpinned; VmRSS
#      once /readyz answers 200 (target: at most 32 MiB), then deep diff reads, limit 1000 from
#      random cursors (target, one core: at least 1,000,000 records/s).
#   5. routers (issue 10): 1 source topic (disk), 0, 1, 10, 100 routers into as many dests, each
#      tailed by a diff long-poll, 200 writes/s: delivery latency, and WAL bytes per source
#      write (target: the same at any K; the ratio to K=0).
#
#   6. queues: one queue (disk, then fsync) pre-filled with QUEUE_JOBS jobs of 256 bytes,
#      drained by 100 workers claiming 8 at a time (lease 30 s) and acking them: jobs/s, claim
#      and ack latency, server CPU per job, every job acked exactly once (target, disk on one
#      core: at least 100,000 jobs/s). The issue's test has 20,000 jobs (QUEUE_JOBS=20000), a
#      quarter-second run; the default 100,000 gives steadier figures. ROUNDS runs each, every
#      one on a fresh server.
#   7. WebSocket fan-out: section 3 over /v0/ws (1 topic, fsync, 1, 10, 100, 1000 clients, 20
#      writes/s), then a table of it against the SSE watch numbers of section 3.
#
#   bench/topics.sh [ROUNDS] [SECONDS]     # defaults: 2 rounds of 5 s measured per run
#
# OUT=dir keeps the JSON of every run there (default: a temporary directory, removed). About
# 8 minutes with the defaults on 2 cores (10 with 3 rounds). Prints markdown rows as it goes,
# then the medians of the CPU ratios.
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
rounds="${1:-2}"
secs="${2:-5}"
queue_jobs="${QUEUE_JOBS:-100000}"
(cd "$here" && cargo build --release --quiet -p riffle-server -p riffle-bench)
bindir="$("$here/scripts/bin-dir")"
riffle="$bindir/riffle"
bench="$bindir/riffle-bench"
work="$(mktemp -d)"
out="${OUT:-$work/json}"
mkdir -p "$out"
# 1000 watchers open a thousand connections on each side of loopback.
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

pid=""
stop_server() {
  if [[ -n "$pid" ]]; then
    kill -TERM "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    pid=""
  fi
}
trap 'stop_server; rm -rf "$work"' EXIT

# start_server PIN DIR: Riffle on a free port (pinned to CPU 1 when PIN is "pinned"), data in
# DIR; returns once /readyz answers 200. Sets pid, port and ready_s (seconds to ready).
start_server() {
  local pin=$1 dir=$2
  local -a pre=()
  [[ "$pin" == pinned ]] && pre=(taskset -c 1)
  port="$("$bench" free-port)"
  mkdir -p "$dir"
  local t0
  t0=$(date +%s%N)
  DS_SERVER__PORT="$port" DS_STORAGE__DATA_DIR="$dir" DS_STORAGE__MODE=file-durable \
    DS_LIMITS__MAX_MEMORY_BYTES=16000000000 DS_LIMITS__MAX_STREAM_BYTES=8000000000 \
    "${pre[@]}" "$riffle" >>"$dir.log" 2>&1 &
  pid=$!
  for _ in $(seq 1200); do
    if [[ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$port/readyz")" == 200 ]]; then
      ready_s=$(python3 -c "print(round(($(date +%s%N) - $t0) / 1e9, 2))")
      return 0
    fi
    if ! kill -0 "$pid" 2>/dev/null; then
      echo "riffle did not start:" >&2
      tail -20 "$dir.log" >&2
      exit 1
    fi
    sleep 0.05
  done
  echo "riffle not ready after 60 s" >&2
  exit 1
}

rss_kib() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status"; }

# bench_run PIN NAME ARGS...: riffle-bench against the running server, JSON to $out/NAME.json.
# A failed verification or a failed scenario is reported and the script goes on.
bench_run() {
  local pin=$1 name=$2
  shift 2
  local -a pinarg=()
  [[ "$pin" == pinned ]] && pinarg=(--pin 0)
  if ! "$bench" --url "http://127.0.0.1:$port/v1/stream" --server-pid "$pid" --json \
    --progress 0 --duration "$secs" "${pinarg[@]}" "$@" >"$out/$name.json" 2>"$out/$name.err"; then
    echo "  !! $name: riffle-bench failed: $(tail -3 "$out/$name.err" | tr '\n' ' ')" >&2
  fi
}

# fresh PIN NAME ARGS...: a fresh server with an empty data dir for one bench_run.
fresh() {
  local pin=$1 name=$2
  shift 2
  start_server "$pin" "$work/$name"
  bench_run "$pin" "$name" "$@"
  stop_server
  rm -rf "${work:?}/$name"
}

py() { python3 - "$out" "$@"; }

echo "JSON of every run: $out" >&2
echo
echo "| pin | class | load | round | DS appends/s | DS CPU µs/append | /v0 writes/s | /v0 CPU µs/write | CPU ratio | DS p99 ms | /v0 p99 ms |"
echo "|---|---|---|---|---|---|---|---|---|---|---|"
for pin in pinned unpinned; do
  for r in $(seq 1 "$rounds"); do
    for class in fsync disk; do
      # Closed loop (each server as fast as it goes), then both at the same fixed load.
      for load in closed 30000; do
        ds=(append --streams 64 -c 64 --size 256 --durability "$class")
        v0=(topics-write --topics 64 -c 64 --batch 1 --size 256 --durability "$class")
        if [[ "$load" != closed ]]; then
          ds+=(--rate "$load")
          v0+=(--rate "$load")
        fi
        tag="$pin-$class-$load-$r"
        if ((r % 2)); then
          fresh "$pin" "ds-$tag" "${ds[@]}"
          fresh "$pin" "one-$tag" "${v0[@]}"
        else
          fresh "$pin" "one-$tag" "${v0[@]}"
          fresh "$pin" "ds-$tag" "${ds[@]}"
        fi
        py "$pin" "$class" "$load" "$r" <<'EOF'
import json, sys
out, pin, cls, load, r = sys.argv[1:]
def get(n):
    try:
        x = json.load(open(f"{out}/{n}-{pin}-{cls}-{load}-{r}.json"))[0]
        return x["ops_per_s"], x["server"]["cpu_us_per_op"], x["latency"][0]["p99_us"] / 1000, x["verify"]["ok"] and not x["errors"]
    except Exception:
        return 0, float("nan"), float("nan"), False
d, dc, dp, dok = get("ds")
o, oc, op, ook = get("one")
flag = "" if dok and ook else " (errors or verify FAILED: see JSON)"
print(f"| {pin} | {cls} | {load} | {r} | {d:,.0f} | {dc:.2f} | {o:,.0f} | {oc:.2f} | {oc / dc:.2f}x{flag} | {dp:.2f} | {op:.2f} |")
EOF
      done
    done
  done
done

echo
echo "| pin | class | load | records/s | writes/s | CPU µs/record | p50 ms | p99 ms | p99.9 ms | max ms | verify |"
echo "|---|---|---|---|---|---|---|---|---|---|---|"
for pin in pinned unpinned; do
  # Closed loop in both classes, then fsync at the target's 500,000 records/s (open loop).
  for spec in "fsync closed" "disk closed" "fsync 5000"; do
    read -r class load <<<"$spec"
    args=(topics-write --topics 64 -c 64 --batch 100 --size 256 --durability "$class")
    [[ "$load" != closed ]] && args+=(--rate "$load")
    fresh "$pin" "batch-$pin-$class-$load" "${args[@]}"
    py "$pin" "$class" "$load" <<'EOF'
import json, sys
out, pin, cls, load = sys.argv[1:]
label = "closed" if load == "closed" else f"{int(load) * 100:,} records/s"
try:
    x = json.load(open(f"{out}/batch-{pin}-{cls}-{load}.json"))[0]
except Exception as e:
    print(f"| {pin} | {cls} | {label} | failed: {e} |"); sys.exit()
l = x["latency"][0]
ok = "ok" if x["verify"]["ok"] and not x["errors"] else f"FAILED {x['errors']}"
print(f"| {pin} | {cls} | {label} | {x['ops_per_s']:,.0f} | {x['params']['requests_per_s']:,.0f} | {x['server']['cpu_us_per_op']:.2f} | "
      f"{l['p50_us']/1000:.2f} | {l['p99_us']/1000:.2f} | {l['p999_us']/1000:.2f} | {l['max_us']/1000:.2f} | {ok} |")
EOF
  done
done

# A tail fan-out (topics-watch or topics-ws) to 1..1000 subscribers, a fresh server per
# pinning, one table row per K. Arguments: the subscribers' column title, the scenario, a tag.
tail_fanout() {
  local title=$1 scenario=$2 tag=$3
  echo
  echo "| pin | $title | deliveries/s | p50 ms | p90 ms | p99 ms | p99.9 ms | max ms | write p99 ms | server CPU % | RSS MiB | verify |"
  echo "|---|---|---|---|---|---|---|---|---|---|---|---|"
  for pin in pinned unpinned; do
    fresh "$pin" "$tag-$pin" "$scenario" -k 1,10,100,1000 --rate 20 --size 64 \
      --step-secs "$secs" --durability fsync
    TAG=$tag py "$pin" <<'EOF'
import json, os, sys
out, pin = sys.argv[1:]
tag = os.environ["TAG"]
try:
    xs = json.load(open(f"{out}/{tag}-{pin}.json"))
except Exception as e:
    print(f"| {pin} | failed: {e} |"); sys.exit()
for x in xs:
    d = x["latency"][0]; w = x["latency"][1]; s = x["server"] or {}
    print(f"| {pin} | {x['params']['k']} | {x['ops_per_s']:,.0f} | {d['p50_us']/1000:.2f} | {d['p90_us']/1000:.2f} | "
          f"{d['p99_us']/1000:.2f} | {d['p999_us']/1000:.2f} | {d['max_us']/1000:.2f} | {w['p99_us']/1000:.2f} | "
          f"{s.get('cpu_pct', 0):.1f} | {s.get('rss_peak_mib', 0):.1f} | {'ok' if x['verify']['ok'] and not x['errors'] else 'FAILED'} |")
EOF
  done
}

tail_fanout watchers topics-watch watch

# The 1M-record topic: filled once (unpinned), then each pinning reads it after a restart.
big="$work/big"
start_server unpinned "$big"
bench_run unpinned fill topics-diff --topic big --records 1000000 --size 200 --durability fsync \
  --fill-only
stop_server
echo
echo "| pin | restart to ready s | VmRSS at ready MiB | VmRSS 1 s later MiB | diff records/s | diffs/s | CPU µs/record | server CPU % | p50 ms | p99 ms | RSS peak while reading MiB | verify |"
echo "|---|---|---|---|---|---|---|---|---|---|---|---|"
for pin in pinned unpinned; do
  start_server "$pin" "$big"
  rss0=$(rss_kib "$pid")
  sleep 1
  rss1=$(rss_kib "$pid")
  bench_run "$pin" "diff-$pin" topics-diff --topic big --records 1000000 --limit 1000 -c 4
  stop_server
  py "$pin" "$ready_s" "$rss0" "$rss1" <<'EOF'
import json, sys
out, pin, ready, rss0, rss1 = sys.argv[1:]
head = f"| {pin} | {ready} | {int(rss0)/1024:.1f} | {int(rss1)/1024:.1f} |"
try:
    x = json.load(open(f"{out}/diff-{pin}.json"))[-1]
except Exception as e:
    print(f"{head} failed: {e} |"); sys.exit()
l = x["latency"][0]
s = x["server"]
print(f"{head} {x['ops_per_s']:,.0f} | {x['params']['requests_per_s']:,.0f} | {s['cpu_us_per_op']:.3f} | {s['cpu_pct']:.0f} | "
      f"{l['p50_us']/1000:.2f} | {l['p99_us']/1000:.2f} | {s['rss_peak_mib']:.1f} | {'ok' if x['verify']['ok'] and not x['errors'] else 'FAILED'} |")
EOF
done
py <<'EOF'
import json, sys
out = sys.argv[1]
try:
    f = json.load(open(f"{out}/fill.json"))[0]
    print(f"\nfill: {f['ops']:,} records in {f['elapsed_s']:.1f} s ({f['ops_per_s']:,.0f} records/s, 1000-record writes on one connection, "
          f"server CPU {f['server']['cpu_us_per_op']:.2f} µs/record); {'ok' if f['verify']['ok'] else 'FAILED'}")
except Exception as e:
    print(f"\nfill: no result ({e})")
EOF

echo
echo "| pin | routers | writes/s | ack p99 ms | delivery p50 ms | delivery p99 ms | delivery max ms | WAL bytes/write | ratio to K=0 | server CPU % | CPU µs/write | verify |"
echo "|---|---|---|---|---|---|---|---|---|---|---|---|"
for pin in pinned unpinned; do
  fresh "$pin" "routers-$pin" topics-routers -k 0,1,10,100 --rate 200 --size 256 \
    --step-secs "$secs" --durability disk
  py "$pin" <<'EOF'
import json, sys
out, pin = sys.argv[1:]
try:
    xs = json.load(open(f"{out}/routers-{pin}.json"))
except Exception as e:
    print(f"| {pin} | failed: {e} |"); sys.exit()
ms = lambda us: f"{us / 1000:.2f}"
for x in xs:
    p, s = x["params"], x["server"] or {}
    lat = {l["name"]: l for l in x["latency"]}
    d = lat["delivery"]
    dl = " | ".join([ms(d["p50_us"]), ms(d["p99_us"]), ms(d["max_us"])] if p["k"] else ["-"] * 3)
    wal, ratio = p.get("wal_bytes_per_write"), p.get("wal_ratio_to_k0")
    wal = "-" if wal is None else f"{wal:.1f}"
    ratio = "-" if ratio is None else f"{ratio:.3f}x"
    ok = "ok" if x["verify"]["ok"] and not x["errors"] else f"FAILED {x['errors']}"
    print(f"| {pin} | {p['k']} | {p['writes_per_s']:,.0f} | {ms(lat['write']['p99_us'])} | {dl} | {wal} | {ratio} | "
          f"{s.get('cpu_pct', 0):.1f} | {p.get('cpu_us_per_write', 0):.0f} | {ok} |")
EOF
done

echo
echo "| pin | class | round | jobs | jobs/s | claim p50 ms | claim p99 ms | claim max ms | ack p50 ms | ack p99 ms | ack max ms | CPU µs/job | server CPU % | bench CPU % | verify |"
echo "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"
for pin in pinned unpinned; do
  for class in disk fsync; do
    for r in $(seq 1 "$rounds"); do
      fresh "$pin" "queue-$pin-$class-$r" topics-queue --jobs "$queue_jobs" --workers 100 \
        --claim-max 8 --size 256 --durability "$class"
      py "$pin" "$class" "$r" <<'EOF'
import json, sys
out, pin, cls, r = sys.argv[1:]
try:
    x = json.load(open(f"{out}/queue-{pin}-{cls}-{r}.json"))[0]
except Exception as e:
    print(f"| {pin} | {cls} | {r} | failed: {e} |"); sys.exit()
p, s = x["params"], x["server"] or {}
lat = {l["name"]: l for l in x["latency"]}
ms = lambda l: " | ".join(f"{l[k] / 1000:.2f}" for k in ["p50_us", "p99_us", "max_us"])
ok = "ok" if x["verify"]["ok"] and not x["errors"] else f"FAILED {x['errors']}"
print(f"| {pin} | {cls} | {r} | {x['ops']:,} | {x['ops_per_s']:,.0f} | {ms(lat['claim'])} | {ms(lat['ack'])} | "
      f"{s.get('cpu_us_per_op', 0):.2f} | {s.get('cpu_pct', 0):.0f} | {p.get('bench_cpu_pct') or 0:.0f} | {ok} |")
EOF
    done
  done
done

tail_fanout "ws clients" topics-ws ws
echo
echo "WebSocket (/v0/ws) against the SSE watch (/v0/watch) of section 3: same class, rate and size"
echo
echo "| pin | K | SSE p50 ms | WS p50 ms | SSE p99 ms | WS p99 ms | SSE max ms | WS max ms | SSE CPU % | WS CPU % | SSE RSS MiB | WS RSS MiB |"
echo "|---|---|---|---|---|---|---|---|---|---|---|---|"
py <<'EOF'
import json, sys
out = sys.argv[1]
for pin in ["pinned", "unpinned"]:
    try:
        sse = {x["params"]["k"]: x for x in json.load(open(f"{out}/watch-{pin}.json"))}
        ws = {x["params"]["k"]: x for x in json.load(open(f"{out}/ws-{pin}.json"))}
    except Exception as e:
        print(f"| {pin} | failed: {e} |"); continue
    for k in sorted(set(sse) & set(ws)):
        a, b = sse[k], ws[k]
        lat = lambda x, q: f"{x['latency'][0][q] / 1000:.2f}"
        srv = lambda x, f: f"{(x['server'] or {}).get(f, 0):.1f}"
        cells = [lat(a, "p50_us"), lat(b, "p50_us"), lat(a, "p99_us"), lat(b, "p99_us"), lat(a, "max_us"),
                 lat(b, "max_us"), srv(a, "cpu_pct"), srv(b, "cpu_pct"), srv(a, "rss_peak_mib"), srv(b, "rss_peak_mib")]
        print(f"| {pin} | {k} | " + " | ".join(cells) + " |")
EOF

echo
echo "medians per pinning, class and load: server CPU of a /v0 one-record write / a DS append (target <= 1.3x)"
py "$rounds" <<'EOF'
import json, sys, statistics as st
out, rounds = sys.argv[1], int(sys.argv[2])
for pin in ["pinned", "unpinned"]:
    for cls in ["fsync", "disk"]:
        for load in ["closed", "30000"]:
            rs = []
            for r in range(1, rounds + 1):
                try:
                    d = json.load(open(f"{out}/ds-{pin}-{cls}-{load}-{r}.json"))[0]["server"]["cpu_us_per_op"]
                    o = json.load(open(f"{out}/one-{pin}-{cls}-{load}-{r}.json"))[0]["server"]["cpu_us_per_op"]
                    rs.append((d, o, o / d))
                except Exception:
                    pass
            if rs:
                print(f"{pin} {cls} {load}: DS {st.median(x[0] for x in rs):.2f} µs/append, /v0 {st.median(x[1] for x in rs):.2f} µs/write, "
                      f"ratio median {st.median(x[2] for x in rs):.2f}x (per round: {', '.join(f'{x[2]:.2f}' for x in rs)})")
EOF
