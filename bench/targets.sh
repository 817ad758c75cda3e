#!/usr/bin/env bash
# The storage issue's performance targets, measured: 256-byte appends over 64 streams from 64
# connections, Riffle against durable-streams 0.1.5 (Electric's server) on the same machine,
# alternating servers round by round. Server pinned to CPU 1, load generator to CPU 0.
#
#   bench/targets.sh [ROUNDS] [SECONDS]      # defaults: 5 rounds of 6 s per server and mode
#
# Modes: memory (Riffle `memory` vs `--durability memory`), closed loop and at a fixed
# 50,000 appends/s (equal load, so CPU per append compares like with like), and durable
# (Riffle `file-durable` vs `--durability wal`), closed loop. The order of the two servers
# alternates by round. Prints one markdown row per run, then the medians and the median of the
# per-round ratios.
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
rounds="${1:-5}"
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

# shellcheck source=bench/append_run.sh
. "$here/bench/append_run.sh"

riffle_cmd() { # storage mode
  echo DS_SERVER__PORT=@PORT@ DS_STORAGE__DATA_DIR=@DIR@ DS_STORAGE__MODE="$1" \
    DS_LIMITS__MAX_MEMORY_BYTES=16000000000 DS_LIMITS__MAX_STREAM_BYTES=8000000000 "$riffle"
}
electric_cmd() { # durability
  echo "$electric" --port @PORT@ --data-dir @DIR@ --durability "$1"
}

results="$work/results"
echo "| mode | round | riffle appends/s | ds-0.1.5 appends/s | throughput ratio | riffle CPU µs/append | ds-0.1.5 CPU µs/append | CPU ratio | riffle p99 µs | ds-0.1.5 p99 µs |"
echo "|---|---|---|---|---|---|---|---|---|---|"
for r in $(seq 1 "$rounds"); do
  for spec in "memory memory memory -" "memory@50k memory memory 50000" "durable file-durable wal -"; do
    read -r label rmode emode rate <<<"$spec"
    # Who goes first alternates round by round, so neither server always runs on the heels of
    # the other's work (page-cache writeback, a warm or cold CPU).
    order=(riffle electric)
    ((r % 2)) || order=(electric riffle)
    for who in "${order[@]}"; do
      # shellcheck disable=SC2046
      case $who in
        riffle) read -r ra rc rp <<<"$(append_run riffle "$label" "$rate" -- $(riffle_cmd "$rmode"))" ;;
        electric) read -r ea ec ep <<<"$(append_run electric "$label" "$rate" -- $(electric_cmd "$emode"))" ;;
      esac
    done
    python3 - "$label" "$r" "$ra" "$ea" "$rc" "$ec" "$rp" "$ep" <<'EOF' | tee -a "$results"
import sys
label, r, ra, ea, rc, ec, rp, ep = sys.argv[1:]
print(f"| {label} | {r} | {int(ra):,} | {int(ea):,} | {int(ra)/int(ea):.2f}x | {rc} | {ec} | {float(rc)/float(ec):.2f} | {rp} | {ep} |")
EOF
  done
done
echo
echo "medians (per mode): riffle and ds-0.1.5 appends/s and CPU µs/append; median of per-round ratios"
python3 - "$results" <<'EOF'
import sys, statistics as st
rows = {}
for line in open(sys.argv[1]):
    c = [x.strip() for x in line.strip().strip('|').split('|')]
    rows.setdefault(c[0], []).append(c)
num = lambda s: float(s.replace(',', '').rstrip('x'))
for mode, rs in rows.items():
    m = lambda i: st.median(num(r[i]) for r in rs)
    print(f"{mode}: appends/s {m(2):,.0f} vs {m(3):,.0f} (ratio {m(4):.2f}x); "
          f"CPU µs/append {m(5):.2f} vs {m(6):.2f} (ratio {m(7):.2f}); n={len(rs)}")
EOF
