#!/usr/bin/env bash
# Smoke tests of the official clients (TypeScript @durable-streams/client, Python durable-streams)
# against a running server. Usage: RIFFLE_URL=http://127.0.0.1:4437 clients/run.sh
# Installs what is missing (npm ci from the lockfile; a venv at clients/py/.venv from the pinned
# requirements.txt), runs both smokes, and exits non-zero if either fails.
set -uo pipefail
cd "$(dirname "$0")"
: "${RIFFLE_URL:?set RIFFLE_URL to the server base URL, e.g. http://127.0.0.1:4437}"
export RIFFLE_URL

set -e
if [ ! -d ts/node_modules/@durable-streams/client ] || [ ts/package-lock.json -nt ts/node_modules/.package-lock.json ]; then
  (cd ts && npm ci --no-audit --no-fund --loglevel=error)
fi
stamp=py/.venv/.requirements-installed
if [ ! -x py/.venv/bin/python ] || [ ! -f "$stamp" ] || [ py/requirements.txt -nt "$stamp" ]; then
  python3 -m venv py/.venv
  py/.venv/bin/python -m pip install --quiet --disable-pip-version-check -r py/requirements.txt
  touch "$stamp"
fi
set +e

failed=0
echo "--- TypeScript client smoke (@durable-streams/client) against $RIFFLE_URL"
(cd ts && node smoke.mjs) || { echo "TypeScript client smoke FAILED"; failed=1; }
echo "--- Python client smoke (durable-streams) against $RIFFLE_URL"
(cd py && .venv/bin/python smoke.py) || { echo "Python client smoke FAILED"; failed=1; }

if [ "$failed" -ne 0 ]; then
  echo "client smokes: FAILED"
  exit 1
fi
echo "client smokes: all passed"
