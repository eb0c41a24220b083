"""``serve --workers 2``: a scrape sums every worker's counters (prometheus-client's
multiprocess mode), whichever worker answers it."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.support.backends import is_postgres
from tests.support.processes import BIN, free_port

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
    port = free_port()
    log = tmp_path / "serve.log"
    env = {k: v for k, v in environment.items() if k != "PROMETHEUS_MULTIPROC_DIR"}
    with log.open("w") as sink:
        process = subprocess.Popen(
            [BIN, "serve", "--port", str(port), "--workers", "2"],
            env=env,
            stdout=sink,
            stderr=sink,
            cwd=tmp_path,
        )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 40
        while time.monotonic() < deadline:
            assert process.poll() is None, log.read_text()
            try:
                if httpx.get(f"{base}/health/ready", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.2)
        else:
            pytest.fail("not ready:\n" + log.read_text())
        for _ in range(REQUESTS):
            # A new connection each time, so both workers answer some of them.
            with httpx.Client() as client:
                client.get(f"{base}/health/live")
        for _ in range(20):
            with httpx.Client() as client:
                answer = client.get(f"{base}/metrics")
            assert answer.status_code == 200, answer.text
            assert _live_count(answer.text) == REQUESTS
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
