#!/usr/bin/env bash
# The whole suite twice: on the embedded default, then on PostgreSQL + Redis.
# Branch coverage is combined over both passes and must reach 85%.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
# Each pass on this many processes (pytest-xdist): every test has its own database file or
# PostgreSQL database, store prefix and ports, so the passes split cleanly.
WORKERS=(-n "${AUTH_TEST_WORKERS:-2}")
rm -f .coverage .coverage.*

# tests/browser drives Debian's chromium, the load-balancer test nginx. In CI they must be
# there (the tests fail without them); elsewhere an install that cannot run (no root, no sudo)
# leaves them to skip, saying why.
if [[ "${CI:-}" == "true" ]]; then
    scripts/system_setup.sh
else
    scripts/system_setup.sh || echo "== chromium or nginx is not installed: their tests will skip"
fi

echo "== pass 1/2: embedded default (SQLite file + in-process store)"
AUTH_TEST_BACKEND=embedded "$PY" -m pytest "${WORKERS[@]}" --cov --cov-report= "$@"

echo "== pass 2/2: PostgreSQL + Redis (${AUTH_TEST_DATABASE_URL:-postgresql+asyncpg://postgres@127.0.0.1:5432/postgres}, ${AUTH_TEST_REDIS_URL:-redis://127.0.0.1:6379/0})"
AUTH_TEST_BACKEND=postgres "$PY" -m pytest "${WORKERS[@]}" --cov --cov-append --cov-report= "$@"

echo "== branch coverage (both passes)"
"$PY" -m coverage report --fail-under=85

echo "== the client library (client/): its own tests, against served instances"
(cd client && AUTH_SERVICE_COMMAND="$PWD/../.venv/bin/auth-service" ../.venv-client/bin/python -m pytest -q "${WORKERS[@]}")

echo "== the single source of truth: no token handled outside the client library in examples/"
.venv/bin/auth-service-client ssot-check examples
