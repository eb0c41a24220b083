"""Attacks: a slow step holding a resource. A login flood exhausted the PostgreSQL pool (each
login held a connection through argon2) and, on SQLite, held the write lock through it; the
SQLite file was created readable by everyone."""

from __future__ import annotations

import asyncio
import stat
from collections.abc import Callable
from pathlib import Path

import pytest

from auth_service.container import Container
from auth_service.crypto.passwords import PasswordHasher
from auth_service.db.session import ensure_private_file
from auth_service.settings import Settings
from tests.support.backends import is_postgres
from tests.support.hashing import divert_hashing
from tests.support.http import PASSWORD
from tests.support.service import started


class HeldHasher(PasswordHasher):
    """Verifications wait until ``go`` is set: a login parked in the middle of argon2."""

    def __init__(self) -> None:
        super().__init__(memory_kib=8, time_cost=1, parallelism=1)
        self.go = asyncio.Event()
        self.waiting = 0

    async def verify(self, hash: str, password: str, *, urgent: bool = False) -> bool:
        self.waiting += 1
        await self.go.wait()
        return await super().verify(hash, password, urgent=urgent)

    async def verify_dummy(self, password: str, *, urgent: bool = False) -> None:
        self.waiting += 1
        await self.go.wait()
        await super().verify_dummy(password, urgent=urgent)


async def test_logins_in_argon2_hold_no_connection_and_no_write_lock(
    make_container: Callable[..., Container], make_settings: Callable[..., Settings]
) -> None:
    # One connection in the pool, a short wait for it: a login that held its connection
    # through the hash would make every other request fail with a pool timeout.
    settings = make_settings(db_pool_size=1, db_max_overflow=0, db_pool_timeout_seconds=1)
    container = make_container(settings)
    held = HeldHasher()
    async with started(container) as service:
        body = {"email": "alice@example.com", "password": PASSWORD}
        assert (await service.client.post("/auth/register", json=body)).status_code == 201
        divert_hashing(container, held)
        logins = [
            asyncio.ensure_future(service.client.post("/auth/login", json=body)),
            asyncio.ensure_future(
                service.client.post(
                    "/auth/login", json={"email": "nobody@example.com", "password": PASSWORD}
                )
            ),
        ]
        while held.waiting < 2:
            await asyncio.sleep(0.01)
        # Both logins are parked inside the hash: a write (a registration takes the SQLite
        # write lock) and reads go through at once.
        other = {"email": "bob@example.com", "password": PASSWORD}
        registered = await asyncio.wait_for(
            service.client.post("/auth/register", json=other), timeout=3
        )
        assert registered.status_code == 201, registered.text
        held.go.set()
        answers = await asyncio.gather(*logins)
        assert [answer.status_code for answer in answers] == [200, 401]
    held.close()


@pytest.mark.skipif(is_postgres(), reason="the SQLite file of the embedded backend")
def test_the_sqlite_file_is_private(tmp_path: Path) -> None:
    fresh = tmp_path / "var" / "auth.db"
    ensure_private_file(fresh)
    assert stat.S_IMODE(fresh.stat().st_mode) == 0o600
    loose = tmp_path / "loose.db"
    loose.write_text("")
    loose.chmod(0o644)
    wal = tmp_path / "loose.db-wal"
    wal.write_text("")
    wal.chmod(0o644)
    ensure_private_file(loose)
    assert stat.S_IMODE(loose.stat().st_mode) == 0o600
    assert stat.S_IMODE(wal.stat().st_mode) == 0o600


@pytest.mark.skipif(is_postgres(), reason="the SQLite file of the embedded backend")
def test_migrate_creates_the_database_file_0600(tmp_path: Path) -> None:
    from auth_service.db.migrate import upgrade_to_head

    path = tmp_path / "new" / "auth.db"
    upgrade_to_head(f"sqlite+aiosqlite:///{path}")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


class RecordingHasher(HeldHasher):
    """Parks every verification and records whether it was admitted as urgent."""

    def __init__(self) -> None:
        super().__init__()
        self.urgent: list[bool] = []

    async def verify(self, hash: str, password: str, *, urgent: bool = False) -> bool:
        self.urgent.append(urgent)
        return await super().verify(hash, password, urgent=urgent)


async def test_one_ip_with_many_known_accounts_cannot_fill_the_urgent_queue(
    make_container: Callable[..., Container], make_settings: Callable[..., Settings]
) -> None:
    """Attack (review of issue 10): an attacker makes many accounts "known" on one IP, then
    sends their logins at once to fill the urgent lane and starve real users' known
    devices. At most two urgent hashes per IP group are in flight; the rest are normal."""
    container = make_container(make_settings(trusted_proxies="127.0.0.1"))
    held = RecordingHasher()
    async with started(container) as service:
        xff = {"X-Forwarded-For": "192.0.2.44"}
        accounts = [{"email": f"sock{n}@example.com", "password": PASSWORD} for n in range(6)]
        for body in accounts:
            assert (await service.client.post("/auth/register", json=body)).status_code == 201
            login = await service.client.post("/auth/login", json=body, headers=xff)
            assert login.status_code == 200  # each account is now "known" on this IP
        divert_hashing(container, held)
        flood = [
            asyncio.ensure_future(service.client.post("/auth/login", json=body, headers=xff))
            for body in accounts
        ]
        while held.waiting < len(accounts):
            await asyncio.sleep(0.01)
        assert held.urgent.count(True) == 2
        held.go.set()
        assert [r.status_code for r in await asyncio.gather(*flood)] == [200] * len(accounts)
        assert container.logins.urgent_in_flight == {}
    held.close()


async def test_an_accounts_urgent_logins_have_a_budget(
    make_container: Callable[..., Container], make_settings: Callable[..., Settings]
) -> None:
    """Attack (second review): accounts an attacker made known keep the urgent lane full
    with their own right-password logins. Each account gets URGENT_LOGINS_PER_ACCOUNT urgent
    logins a window; the rest queue as normal work."""
    from auth_service.services.login import URGENT_LOGINS_PER_ACCOUNT

    container = make_container(make_settings(trusted_proxies="127.0.0.1"))
    recording = RecordingHasher()
    recording.go.set()
    async with started(container) as service:
        xff = {"X-Forwarded-For": "192.0.2.45"}
        body = {"email": "sock@example.com", "password": PASSWORD}
        assert (await service.client.post("/auth/register", json=body)).status_code == 201
        assert (await service.client.post("/auth/login", json=body, headers=xff)).status_code == 200
        divert_hashing(container, recording)
        for _ in range(URGENT_LOGINS_PER_ACCOUNT + 2):
            login = await service.client.post("/auth/login", json=body, headers=xff)
            assert login.status_code == 200
        assert recording.urgent == [True] * URGENT_LOGINS_PER_ACCOUNT + [False, False]
    recording.close()


@pytest.mark.skipif(is_postgres(), reason="SQLite's write lock")
async def test_reads_on_sqlite_do_not_wait_for_the_write_lock(
    make_container: Callable[..., Container], make_settings: Callable[..., Settings]
) -> None:
    """While a writer holds SQLite's write lock, a read through the reader sessionmaker goes
    through at once (a deferred BEGIN in WAL mode); every transaction used to be BEGIN
    IMMEDIATE, so reads queued behind writers (and, with a 1 s busy wait, failed)."""
    from sqlalchemy import func, select

    from auth_service.db.models import User

    container = make_container(make_settings(db_connect_timeout_seconds=1))
    async with container.db.transaction() as writer:
        await writer.execute(select(func.count()).select_from(User))  # BEGIN IMMEDIATE: locked
        async with container.db.read() as reader:
            count = await asyncio.wait_for(
                reader.scalar(select(func.count()).select_from(User)), timeout=0.5
            )
        assert count == 0
    await container.engine.dispose()
    container.hasher.close()
