"""A Redis restart under load (a private redis-server, no persistence: it comes back empty).
Throughout, a revoked token is never accepted and /validate keeps answering (from the
revocation mirror while Redis is down); after it, the index is rebuilt from the database, so
the revocation is still enforced and a new one is too."""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
import redis

from auth_service.container import Container
from auth_service.settings import Settings
from tests.support.cluster import free_port
from tests.support.http import client_headers, register_and_login
from tests.support.service import Service, started
from tests.support.validation_load import validating

SERVER = "/usr/bin/redis-server"


def _start(port: int, work: Path) -> subprocess.Popen[bytes]:
    process = subprocess.Popen(
        [SERVER, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        cwd=work,
        stdout=subprocess.DEVNULL,
    )
    with redis.Redis(port=port) as client:
        for _ in range(100):
            with contextlib.suppress(redis.RedisError):
                if client.ping():
                    return process
            time.sleep(0.05)
    raise AssertionError("redis-server did not start")


@pytest.fixture
async def restartable(
    make_container: Callable[..., Container],
    make_settings: Callable[..., Settings],
    tmp_path: Path,
) -> AsyncIterator[tuple[Service, int, list[subprocess.Popen[bytes]]]]:
    port = free_port()
    processes = [_start(port, tmp_path)]
    try:
        settings = make_settings(
            redis_url=f"redis://127.0.0.1:{port}/0", redis_socket_timeout_seconds=0.5
        )
        async with started(make_container(settings, store=None)) as service:
            yield service, port, processes
    finally:
        for process in processes:
            process.kill()
            process.wait(timeout=10)


async def test_a_restart_under_load_accepts_no_revoked_token(
    restartable: tuple[Service, int, list[subprocess.Popen[bytes]]], tmp_path: Path
) -> None:
    service, port, processes = restartable
    headers = await client_headers(service)
    live = (await register_and_login(service, "live@example.com")).pair["access_token"]
    revoked = (await register_and_login(service, "gone@example.com")).pair["access_token"]
    out = await service.client.post("/auth/logout", headers={"Authorization": f"Bearer {revoked}"})
    assert out.status_code == 204
    async with validating(service, headers, {"live": live, "gone": revoked}) as seen:
        await asyncio.sleep(0.5)
        processes[0].kill()
        processes[0].wait(timeout=10)
        await asyncio.sleep(1.5)  # down: answered from the mirror
        processes.append(await asyncio.to_thread(_start, port, tmp_path))  # back, and empty
        await asyncio.sleep(3.0)  # reconnect, rebuild the index from the database, resync
    assert seen["gone:valid"] == 0, seen
    assert seen["live:valid"] > 50 and seen["gone:refused"] > 50, seen
    assert not [key for key in seen if key.endswith(":503")], seen
    # The empty store was rebuilt: the old revocation is in it again; a new one works.
    with redis.Redis(port=port) as client:
        assert client.keys("*revoked:sid:*"), "the index was not rebuilt"
    bye = await service.client.post("/auth/logout", headers={"Authorization": f"Bearer {live}"})
    assert bye.status_code == 204, bye.text
    verdict = await service.client.post("/validate", json={"token": live}, headers=headers)
    assert verdict.json()["valid"] is False
