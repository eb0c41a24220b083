"""``AUTH_LOG_FORMAT=json`` on a served process: every line on stderr, uvicorn's start-up
lines and the access lines included, is one JSON object; a request's lines carry its id."""

from __future__ import annotations

import json
import time
from pathlib import Path

import httpx
import pytest


@pytest.fixture
def environment(environment: dict[str, str]) -> dict[str, str]:
    return {**environment, "AUTH_LOG_FORMAT": "json"}


def test_every_line_is_json_and_a_request_s_lines_carry_its_id(
    served: tuple[str, Path],
) -> None:
    base, log = served
    echoed = httpx.get(f"{base}/health/live", headers={"X-Request-ID": "trace-42.a_b"})
    assert echoed.headers["x-request-id"] == "trace-42.a_b"
    # An id of another charset, or too long, is replaced by a generated one.
    for unsafe in ("bad id with spaces", "x" * 65, "a/b<script>"):
        replaced = httpx.get(f"{base}/health/live", headers={"X-Request-ID": unsafe})
        assert replaced.headers["x-request-id"] not in {unsafe, ""}
    generated = httpx.get(f"{base}/admin/users?email=alice%40example.com")
    assert generated.status_code == 401
    rid = generated.headers["x-request-id"]
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and rid not in log.read_text():
        time.sleep(0.05)
    lines = [line for line in log.read_text().splitlines() if line.strip()]
    entries = [json.loads(line) for line in lines]  # raises on any line that is not JSON
    loggers = {entry["logger"] for entry in entries}
    assert {"uvicorn.error", "auth_service.access"} <= loggers, loggers
    assert "uvicorn.access" not in loggers  # the service's own access line replaces uvicorn's
    assert any("Application startup complete" in entry["message"] for entry in entries)
    access = [entry for entry in entries if entry["logger"] == "auth_service.access"]
    traced = [entry for entry in access if entry.get("request_id") == "trace-42.a_b"]
    assert traced and traced[0]["route"] == "/health/live" and traced[0]["status"] == 200
    mine = [entry for entry in access if entry.get("request_id") == rid]
    assert mine and mine[0]["route"] == "/admin/users" and mine[0]["status"] == 401
    assert "alice" not in log.read_text()  # the query string is never logged
