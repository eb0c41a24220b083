"""Client authentication and its short-lived cache: attacks and the single-flight guarantee."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest

from auth_service.container import Container
from auth_service.crypto.passwords import PasswordHasher
from auth_service.errors import InvalidClientError
from auth_service.services.clients import ClientAuthenticator, delete_client
from tests.conftest import Ticks


class CountingHasher(PasswordHasher):
    def __init__(self) -> None:
        super().__init__(memory_kib=8, time_cost=1, parallelism=1)
        self.verifications = 0

    async def verify(self, hash: str, password: str) -> bool:
        self.verifications += 1
        await asyncio.sleep(0.05)  # long enough for every concurrent caller to arrive
        return await super().verify(hash, password)


async def test_a_wrong_secret_is_refused_while_the_right_one_is_cached(
    registered_client: tuple[Container, str, str],
) -> None:
    container, client_id, secret = registered_client
    auth = ClientAuthenticator(container.sessionmaker, container.hasher, cache_seconds=30)
    assert await auth.authenticate(client_id, secret) == client_id
    for wrong in (secret[:-1] + ("A" if secret[-1] != "A" else "B"), "", secret + "x"):
        with pytest.raises(InvalidClientError):
            await auth.authenticate(client_id, wrong)
    with pytest.raises(InvalidClientError):
        await auth.authenticate("svc_unknown", secret)


async def test_concurrent_requests_verify_the_secret_once(
    registered_client: tuple[Container, str, str],
) -> None:
    container, client_id, secret = registered_client
    hasher = CountingHasher()
    auth = ClientAuthenticator(container.sessionmaker, hasher, cache_seconds=30)
    results = await asyncio.gather(*(auth.authenticate(client_id, secret) for _ in range(10)))
    assert results == [client_id] * 10
    assert hasher.verifications == 1
    hasher.close()


async def test_a_deleted_client_is_refused_once_its_cache_lapses(
    registered_client: tuple[Container, str, str],
) -> None:
    container, client_id, secret = registered_client
    auth = ClientAuthenticator(container.sessionmaker, container.hasher, cache_seconds=0)
    assert await auth.authenticate(client_id, secret) == client_id
    async with container.sessionmaker() as session, session.begin():
        await delete_client(session, container.clock, client_id)
    with pytest.raises(InvalidClientError):
        await auth.authenticate(client_id, secret)


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
        return await self.auth.authenticate(self.client_id, secret or self.secret) == self.client_id

    async def settled(self) -> None:
        if self.auth.refreshes:
            await asyncio.wait(self.auth.refreshes)


@pytest.fixture
async def remembered(registered_client: tuple[Container, str, str]) -> AsyncIterator[Remembered]:
    container, client_id, secret = registered_client
    hasher, ticks = CountingHasher(), Ticks()
    auth = ClientAuthenticator(container.sessionmaker, hasher, cache_seconds=30, time_source=ticks)
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
    async with r.container.sessionmaker() as session, session.begin():
        await delete_client(session, r.container.clock, r.client_id)
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
