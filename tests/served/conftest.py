"""Fixtures for the tests that run ``auth-service migrate`` and ``serve`` as processes."""

from __future__ import annotations

import contextlib
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.processes import BIN, free_port, served_environment


@pytest.fixture
def environment(database_url: str, redis_prefix: str, tmp_path: Path) -> dict[str, str]:
    env = served_environment(database_url, redis_prefix, tmp_path)
    env["AUTH_ISSUER"] = "http://127.0.0.1"
    return env


@contextlib.contextmanager
def serving(
    environment: dict[str, str], cwd: Path, *extra: str, ready_seconds: float = 30
) -> Iterator[tuple[str, Path]]:
    """``auth-service serve`` (with ``extra`` arguments) on a free port until ready; yields
    (base URL, log file) and stops it afterwards."""
    port = free_port()
    log = cwd / "serve.log"
    with log.open("w") as sink:
        process = subprocess.Popen(
            [BIN, "serve", "--port", str(port), *extra],
            env=environment,
            stdout=sink,
            stderr=sink,
            cwd=cwd,
        )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + ready_seconds
        while time.monotonic() < deadline:
            assert process.poll() is None, log.read_text()
            try:
                if httpx.get(f"{base}/health/ready", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.1)
        else:
            pytest.fail("the service did not become ready:\n" + log.read_text())
        yield base, log
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture
def served(environment: dict[str, str], tmp_path: Path) -> Iterator[tuple[str, Path]]:
    subprocess.run([BIN, "migrate"], env=environment, check=True, capture_output=True, cwd=tmp_path)
    with serving(environment, tmp_path) as running:
        yield running
