# Sourced by bench/targets.sh and bench/metrics.sh: one append run against a fresh server.
# Needs $bench (riffle-bench), $work (a scratch dir) and $secs.
#
# append_run NAME MODE RATE -- server command...: starts the command (@PORT@ and @DIR@ in it
# become a free port and a fresh directory) pinned to CPU 1, waits for it to answer, runs
# 256-byte appends over 64 streams from 64 connections (riffle-bench pinned to CPU 0; RATE is
# `-` for a closed loop or appends/s), and prints "appends/s cpu_us_per_append p99_us".
append_run() {
  local name=$1 mode=$2 rate=$3; shift 4
  local port
  port="$("$bench" free-port)"
  local dir="$work/$name-$mode-$RANDOM"
  mkdir -p "$dir"
  local -a cmd=("$@")
  cmd=("${cmd[@]//@PORT@/$port}")
  cmd=("${cmd[@]//@DIR@/$dir}")
  taskset -c 1 env "${cmd[@]}" >"$dir.log" 2>&1 &
  local pid=$!
  for _ in $(seq 100); do
    # Any HTTP answer but 503 (Riffle answers 503 while it recovers its data directory).
    code=$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$port/" || true)
    [[ "$code" != 000 && "$code" != 503 ]] && break
    sleep 0.1
  done
  local -a load=(append --streams 64 -c 64 --size 256 --duration "$secs")
  [[ "$rate" != "-" ]] && load+=(--rate "$rate")
  "$bench" --url "http://127.0.0.1:$port/v1/stream" --server-pid "$pid" --pin 0 --json \
    --progress 0 --no-readback "${load[@]}" 2>>"$dir.log" |
    python3 -c 'import json,sys; r=json.load(sys.stdin)[0]; s=r["server"]
print(round(r["ops_per_s"]), round(s["cpu_us_per_op"], 2), r["latency"][0]["p99_us"])'
  kill "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  rm -rf "$dir"
}
