#!/usr/bin/env bash
# Installs the benchmark peers into a cache directory, once:
#   $CACHE/durable-streams-0.1.5/bin/durable-streams-server         (crates.io durable-streams 0.1.5)
#   $CACHE/durable-streams-server-0.3.0/bin/durable-streams-server  (crates.io durable-streams-server 0.3.0)
#   $CACHE/node-server-0.3.7/node_modules/@durable-streams/server   (npm, pinned by package-lock.json)
# CACHE is $RIFFLE_BENCH_CACHE, default ~/.cache/riffle-bench. Both crates install a binary
# named durable-streams-server, hence one --root per crate. Compiling takes minutes.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
CACHE="${RIFFLE_BENCH_CACHE:-$HOME/.cache/riffle-bench}"
mkdir -p "$CACHE"

install_crate() { # crate version
  local root="$CACHE/$1-$2"
  if [[ -x "$root/bin/durable-streams-server" ]]; then return 0; fi
  echo "installing crates.io $1 $2 into $root (compiles; takes minutes)" >&2
  cargo install --quiet --locked --root "$root" "$1" --version "$2" \
    || cargo install --quiet --root "$root" "$1" --version "$2"
}

install_node() {
  local dir="$CACHE/node-server-0.3.7"
  if [[ -f "$dir/node_modules/@durable-streams/server/package.json" ]] \
     && cmp -s "$here/package-lock.json" "$dir/package-lock.json"; then
    cp "$here/node-server.mjs" "$dir/" # the launcher may have changed; the packages have not
    return 0
  fi
  echo "installing npm @durable-streams/server 0.3.7 into $dir" >&2
  mkdir -p "$dir"
  cp "$here/package.json" "$here/package-lock.json" "$here/node-server.mjs" "$dir/"
  # npm install, not npm ci: npm 11 rejects this lockfile in ci mode over msgpackr's optional
  # per-platform packages; install still honours every pinned version in package-lock.json.
  (cd "$dir" && npm install --no-save --no-audit --no-fund --loglevel=error >/dev/null)
}

what="${1:-all}"
case "$what" in
  all) install_node; install_crate durable-streams 0.1.5; install_crate durable-streams-server 0.3.0 ;;
  node) install_node ;;
  ds015) install_crate durable-streams 0.1.5 ;;
  dss030) install_crate durable-streams-server 0.3.0 ;;
  *) echo "usage: $0 [all|node|ds015|dss030]" >&2; exit 2 ;;
esac
