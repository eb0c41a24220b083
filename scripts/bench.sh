#!/usr/bin/env bash
# `make bench`: see scripts/bench.py. Needs PostgreSQL and Redis running, and wrk.
set -euo pipefail
cd "$(dirname "$0")/.."
exec .venv/bin/python scripts/bench.py "$@"
