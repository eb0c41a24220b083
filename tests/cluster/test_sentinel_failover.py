"""Redis Sentinel: a master, a replica and a sentinel of our own (redis-server processes on
free ports). The service finds the master through the sentinel; the master is killed under
load; the sentinel promotes the replica. Throughout, a revoked token is never accepted and
/validate keeps answering (from the revocation mirror while no Redis answers); afterwards a
new revocation goes through the new master and is enforced."""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import time
from collections.abc import AsyncIterator, Callable, Iterator
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
SERVICE = "mymaster"


@contextlib.contextmanager
def redis_trio(work: Path) -> Iterator[tuple[subprocess.Popen[bytes], int, int, int]]:
    """(master process, master port, replica port, sentinel port), all stopped afterwards."""
    master_port, replica_port, sentinel_port = free_port(), free_port(), free_port()
    common = ["--save", "", "--appendonly", "no", "--bind", "127.0.0.1"]
    processes = [
        subprocess.Popen([SERVER, "--port", str(master_port), *common], cwd=work),
        subprocess.Popen(
            [
                SERVER,
                "--port",
                str(replica_port),
                "--replicaof",
                "127.0.0.1",
                str(master_port),
                *common,
            ],
            cwd=work,
        ),
    ]
    config = work / "sentinel.conf"
    config.write_text(
        f"port {sentinel_port}\nbind 127.0.0.1\n"
        f"sentinel monitor {SERVICE} 127.0.0.1 {master_port} 1\n"
        f"sentinel down-after-milliseconds {SERVICE} 800\n"
        f"sentinel failover-timeout {SERVICE} 4000\n"
    )
    try:
        _wait(lambda: _link(replica_port) == "up")
        processes.append(subprocess.Popen([SERVER, str(config), "--sentinel"], cwd=work))
        with redis.Redis(port=sentinel_port) as sentinel:
            _wait(lambda: len(sentinel.sentinel_slaves(SERVICE)) == 1)
        yield processes[0], master_port, replica_port, sentinel_port
    finally:
        for process in processes:
            process.kill()
            process.wait(timeout=10)


def _role(port: int) -> str:
    with redis.Redis(port=port) as client:
        return str(client.info("replication")["role"])


def _link(port: int) -> str:
    with redis.Redis(port=port) as client:
        return str(client.info("replication").get("master_link_status"))


def _wait(check: Callable[[], bool], seconds: float = 20) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        with contextlib.suppress(redis.RedisError, KeyError, IndexError):
            if check():
                return
        time.sleep(0.1)
    raise AssertionError("timed out")


@pytest.fixture
async def sentinel_service(
    make_container: Callable[..., Container],
    make_settings: Callable[..., Settings],
    tmp_path: Path,
) -> AsyncIterator[tuple[Service, subprocess.Popen[bytes], int, int]]:
    with redis_trio(tmp_path) as (master, master_port, replica_port, sentinel_port):
        settings = make_settings(
            redis_url="redis://127.0.0.1:1/0",  # the host is not used: the sentinel names it
            redis_sentinels=[f"127.0.0.1:{sentinel_port}"],
            redis_socket_timeout_seconds=0.5,
        )
        async with started(make_container(settings, store=None)) as service:
            yield service, master, master_port, replica_port


async def test_a_failover_under_load_accepts_no_revoked_token(
    sentinel_service: tuple[Service, subprocess.Popen[bytes], int, int],
) -> None:
    service, master, master_port, replica_port = sentinel_service
    headers = await client_headers(service)
    live = (await register_and_login(service, "live@example.com")).pair["access_token"]
    revoked = (await register_and_login(service, "gone@example.com")).pair["access_token"]
    out = await service.client.post("/auth/logout", headers={"Authorization": f"Bearer {revoked}"})
    assert out.status_code == 204
    with redis.Redis(port=master_port) as master_client:
        assert master_client.wait(1, 2000) == 1  # the replica has the revocation
    async with validating(service, headers, {"live": live, "gone": revoked}) as seen:
        await asyncio.sleep(0.5)
        master.kill()  # no goodbye: the sentinel notices after 800 ms and promotes the replica
        master.wait(timeout=10)
        await asyncio.to_thread(_wait, lambda: _role(replica_port) == "master")
        await asyncio.sleep(2.0)  # the service reconnects to the new master meanwhile
    assert seen["gone:valid"] == 0, seen
    assert seen["live:valid"] > 50 and seen["gone:refused"] > 50, seen
    assert not [key for key in seen if key.endswith(":503")], seen  # it kept answering
    # Writes go to the new master: a revocation made now is enforced.
    bye = await service.client.post("/auth/logout", headers={"Authorization": f"Bearer {live}"})
    assert bye.status_code == 204, bye.text
    verdict = await service.client.post("/validate", json={"token": live}, headers=headers)
    assert verdict.json()["valid"] is False
    with redis.Redis(port=replica_port) as replica:
        keys = replica.keys("*revoked:sid:*")
    assert len(keys) >= 2
