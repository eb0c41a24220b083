#!/usr/bin/env bash
# `make bench`: see scripts/bench.py, then (n), the audit chain's append cost
# (scripts/bench/audit_cost.py). Needs PostgreSQL and Redis running, and wrk.
set -euo pipefail
cd "$(dirname "$0")/.."
.venv/bin/python scripts/bench.py "$@"
echo
.venv/bin/python scripts/bench/audit_cost.py
