"""Client authentication's refresh-ahead: in the last fifth of a remembered verification's
window the request answers at once and one background re-verification renews it; a client
deleted meanwhile, a late background check and a database outage cannot extend it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest
from sqlalchemy.exc import OperationalError

from auth_service.container import Container
from auth_service.crypto.passwords import PasswordHasher
from auth_service.errors import InvalidClientError
from auth_service.services.client_auth import ClientAuthenticator
from tests.support.clients import CountingHasher, DatabaseDown, authenticator
from tests.support.clocks import Ticks

IP = "192.0.2.10"


@dataclass
class Remembered:
    """An authenticator (30 s window, hand-moved time) that has just verified the client."""

    container: Container
    auth: ClientAuthenticator
    hasher: CountingHasher
    ticks: Ticks
    client_id: str
    secret: str

    async def ok(self, secret: str | None = None) -> bool:
        verdict = await self.auth.authenticate(self.client_id, secret or self.secret, IP)
        return verdict == self.client_id

    async def settled(self) -> None:
        if self.auth.refreshes:
            await asyncio.wait(self.auth.refreshes)


@pytest.fixture
async def remembered(registered_client: tuple[Container, str, str]) -> AsyncIterator[Remembered]:
    container, client_id, secret = registered_client
    hasher, ticks = CountingHasher(), Ticks()
    auth = authenticator(container, hasher, cache_seconds=30, time_source=ticks)
    state = Remembered(container, auth, hasher, ticks, client_id, secret)
    assert await state.ok() and hasher.verifications == 1
    yield state
    await auth.close()
    hasher.close()


async def test_the_last_fifth_of_the_window_re_verifies_in_the_background(
    remembered: Remembered,
) -> None:
    r = remembered
    r.ticks.now += 23  # 7 s left: not yet
    assert await r.ok()
    assert (r.hasher.verifications, r.auth.refreshes) == (1, set())
    r.ticks.now += 2  # 5 s left: this request answers at once and starts one re-verification
    assert all(await asyncio.gather(*(r.ok() for _ in range(5))))
    assert len(r.auth.refreshes) == 1 and not next(iter(r.auth.refreshes)).done()
    await r.settled()
    assert r.hasher.verifications == 2
    r.ticks.now += 20  # past the first window, inside the renewed one
    assert await r.ok()
    assert r.hasher.verifications == 2


async def test_a_client_deleted_meanwhile_is_dropped_by_the_background_check(
    remembered: Remembered,
) -> None:
    r = remembered
    await r.container.clients.delete(r.client_id)
    r.ticks.now += 26
    assert await r.ok()  # still inside its window
    await r.settled()
    with pytest.raises(InvalidClientError):  # 4 s before the window would have ended
        await r.ok()


async def test_a_wrong_secret_never_starts_a_re_verification(remembered: Remembered) -> None:
    r = remembered
    r.ticks.now += 29
    with pytest.raises(InvalidClientError):
        await r.ok(r.secret + "x")
    assert r.auth.refreshes == set()


async def test_close_stops_a_re_verification_in_flight(remembered: Remembered) -> None:
    r = remembered
    r.ticks.now += 28
    assert await r.ok()
    (task,) = r.auth.refreshes
    await r.auth.close()
    assert task.cancelled()
    assert await r.ok()  # the entry still holds
    assert r.auth.refreshes == set()  # and a closed authenticator starts no new ones


# -- a late background check, a database outage during one ------------------------------


def _authenticator(
    container: Container, hasher: PasswordHasher, ticks: Ticks
) -> ClientAuthenticator:
    return ClientAuthenticator(
        container.db.reader,
        hasher,
        store=container.store,
        failure_limit=20,
        cache_seconds=30,
        time_source=ticks,
    )


class GatedHasher(PasswordHasher):
    """Cheap argon2id; while ``gate`` is set, the next ``verify`` waits for it to be released."""

    def __init__(self) -> None:
        super().__init__(memory_kib=8, time_cost=1, parallelism=1)
        self.gate: asyncio.Event | None = None
        self.entered = asyncio.Event()

    async def verify(self, hash: str, password: str, *, urgent: bool = False) -> bool:
        gate, self.gate = self.gate, None
        if gate is not None:
            self.entered.set()
            await gate.wait()
        return await super().verify(hash, password, urgent=urgent)


async def test_a_late_background_check_cannot_readmit_a_client_refused_since(
    registered_client: tuple[Container, str, str],
) -> None:
    """A re-verification that read the client row before the deletion finishes after a
    foreground check already refused the deleted client: it must not re-arm a window."""
    container, client_id, secret = registered_client
    hasher, ticks = GatedHasher(), Ticks()
    auth = _authenticator(container, hasher, ticks)
    try:
        assert await auth.authenticate(client_id, secret, None) == client_id
        release = asyncio.Event()
        hasher.gate = release
        ticks.now += 26  # the last fifth: answered at once, one background re-verification
        assert await auth.authenticate(client_id, secret, None) == client_id
        await asyncio.wait_for(hasher.entered.wait(), 5)  # it has read the (live) row
        await container.clients.delete(client_id)  # the container's authenticator forgets
        ticks.now += 5  # the window is over: the next request checks the database itself
        with pytest.raises(InvalidClientError):
            await auth.authenticate(client_id, secret, None)
        release.set()
        await asyncio.wait(auth.refreshes, timeout=5)
        with pytest.raises(InvalidClientError):  # (was: accepted again for 30 s)
            await auth.authenticate(client_id, secret, None)
    finally:
        await auth.close()
        hasher.close()


async def test_a_database_outage_during_refresh_lets_the_entry_lapse_on_time(
    registered_client: tuple[Container, str, str],
) -> None:
    container, client_id, secret = registered_client
    hasher, ticks = GatedHasher(), Ticks()
    auth = _authenticator(container, hasher, ticks)
    try:
        assert await auth.authenticate(client_id, secret, None) == client_id
        auth._sessionmaker = DatabaseDown  # type: ignore[assignment]
        ticks.now += 27
        assert await auth.authenticate(client_id, secret, None) == client_id
        await asyncio.wait(auth.refreshes, timeout=5)
        assert auth.refreshes == set()
        ticks.now += 2.9  # still inside the original window, not beyond it
        assert await auth.authenticate(client_id, secret, None) == client_id
        await asyncio.wait(auth.refreshes, timeout=5)
        ticks.now += 0.2
        with pytest.raises(OperationalError):  # fails closed, never accepted past the window
            await auth.authenticate(client_id, secret, None)
        with pytest.raises(OperationalError):  # nor a wrong secret
            await auth.authenticate(client_id, secret + "x", None)
    finally:
        await auth.close()
        hasher.close()
    assert auth.refreshes == set()
