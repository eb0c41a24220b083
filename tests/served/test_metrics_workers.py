"""``serve --workers 2``: a scrape sums every worker's counters (prometheus-client's
multiprocess mode), whichever worker answers it."""

from __future__ import annotations

import subprocess
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.served.conftest import serving
from tests.support.backends import is_postgres
from tests.support.processes import BIN

pytestmark = pytest.mark.skipif(not is_postgres(), reason="two workers need Redis")
REQUESTS = 40


def _live_count(text: str) -> float:
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = sample.labels
            if (
                sample.name == "auth_http_requests_total"
                and labels.get("route") == "/health/live"
                and labels.get("status") == "200"
            ):
                return float(sample.value)
    return 0.0


def test_two_workers_report_one_sum(environment: dict[str, str], tmp_path: Path) -> None:
    subprocess.run([BIN, "migrate"], env=environment, check=True, capture_output=True, cwd=tmp_path)
    env = {k: v for k, v in environment.items() if k != "PROMETHEUS_MULTIPROC_DIR"}
    with serving(env, tmp_path, "--workers", "2", ready_seconds=40) as (base, _log):
        for _ in range(REQUESTS):
            # A new connection each time, so both workers answer some of them.
            with httpx.Client() as client:
                client.get(f"{base}/health/live")
        for _ in range(20):
            with httpx.Client() as client:
                answer = client.get(f"{base}/metrics")
            assert answer.status_code == 200, answer.text
            assert _live_count(answer.text) == REQUESTS
