"""Client authentication and its short-lived cache: attacks and the single-flight guarantee.

Waiting is shown with gates, not clocks: ``GatedHasher`` holds every wrong secret's
verification until the test lets it pass, so "the right secret does not wait behind them"
is "it completes while they are all still held".
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Coroutine
from dataclasses import dataclass
from typing import Any

import pytest

from auth_service.container import Container
from auth_service.crypto.passwords import PasswordHasher
from auth_service.errors import InvalidClientError, RateLimitedError
from auth_service.services import client_auth
from auth_service.services.client_auth import ClientAuthenticator
from tests.support.clients import CountingHasher, authenticator

IP = "192.0.2.10"
FLOOD = 150


async def until(predicate: Callable[[], bool], seconds: float = 10.0) -> None:
    """Wait for ``predicate`` (a deadline against hanging, not a measurement)."""
    async with asyncio.timeout(seconds):
        while not predicate():
            await asyncio.sleep(0.005)


async def test_a_wrong_secret_is_refused_while_the_right_one_is_cached(
    registered_client: tuple[Container, str, str],
) -> None:
    container, client_id, secret = registered_client
    auth = authenticator(container, container.hasher, cache_seconds=30)
    assert await auth.authenticate(client_id, secret, IP) == client_id
    for wrong in (secret[:-1] + ("A" if secret[-1] != "A" else "B"), "", secret + "x"):
        with pytest.raises(InvalidClientError):
            await auth.authenticate(client_id, wrong, IP)
    with pytest.raises(InvalidClientError):
        await auth.authenticate("svc_unknown", secret, IP)


async def test_concurrent_requests_verify_the_secret_once(
    registered_client: tuple[Container, str, str],
) -> None:
    container, client_id, secret = registered_client
    hasher = CountingHasher()
    auth = authenticator(container, hasher, cache_seconds=30)
    results = await asyncio.gather(*(auth.authenticate(client_id, secret, IP) for _ in range(10)))
    assert results == [client_id] * 10
    assert hasher.verifications == 1
    hasher.close()


async def test_a_deleted_client_is_refused_once_its_cache_lapses(
    registered_client: tuple[Container, str, str],
) -> None:
    container, client_id, secret = registered_client
    auth = authenticator(container, container.hasher, cache_seconds=0)
    assert await auth.authenticate(client_id, secret, IP) == client_id
    await container.clients.delete(client_id)  # the container's authenticator, not ``auth``
    with pytest.raises(InvalidClientError):
        await auth.authenticate(client_id, secret, IP)


# -- floods of wrong secrets -----------------------------------------------------------------

_BATCH = 25  # 150 store calls at one instant would exceed the Redis client's 100 connections


class GatedHasher(PasswordHasher):
    """Cheap argon2id that holds each verification of a secret other than ``right`` until
    the test lets it pass, and records every verification's password and ``urgent`` flag."""

    def __init__(self, right: str, *, open_gate: bool = False) -> None:
        # Room in the hash queue for every held request once they pass (a full queue would
        # answer 503 server_busy: hash_queue.py's business, not this test's).
        super().__init__(memory_kib=8, time_cost=1, parallelism=1, queue_limit=4 * FLOOD)
        self.right = right
        self.opened = open_gate
        self.permits = asyncio.Semaphore(0)
        self.held = 0
        self.calls: list[tuple[str, bool]] = []

    async def verify(self, hash: str, password: str, *, urgent: bool = False) -> bool:
        self.calls.append((password, urgent))
        if password != self.right and not self.opened:
            self.held += 1
            await self.permits.acquire()
        return await super().verify(hash, password, urgent=urgent)

    def rights(self) -> int:
        return sum(password == self.right for password, _ in self.calls)


async def launch(
    hasher: GatedHasher, start: Callable[[int], Coroutine[Any, Any, str]], count: int = FLOOD
) -> list[asyncio.Task[str]]:
    """``count`` wrong-secret requests, started a batch at a time, each batch held in its
    hash before the next starts."""
    base, tasks = hasher.held, list[asyncio.Task[str]]()
    for first in range(0, count, _BATCH):
        tasks += [asyncio.create_task(start(n)) for n in range(first, min(first + _BATCH, count))]
        want = base + len(tasks)
        await until(lambda want=want: hasher.held == want)
    return tasks


async def drain(hasher: GatedHasher, tasks: list[asyncio.Task[str]]) -> list[BaseException | str]:
    """Let held verifications pass a batch at a time; every outcome."""
    for first in range(0, len(tasks), _BATCH):
        for _ in range(min(_BATCH, len(tasks) - first)):
            hasher.permits.release()
        done = min(first + _BATCH, len(tasks))
        await until(lambda done=done: sum(task.done() for task in tasks) >= done)
    return await asyncio.gather(*tasks, return_exceptions=True)


def refused(results: list[BaseException | str]) -> bool:
    return all(isinstance(result, InvalidClientError) for result in results)


@dataclass
class Flooded:
    auth: ClientAuthenticator
    hasher: GatedHasher
    client_id: str
    secret: str
    wrong: list[asyncio.Task[str]]


@pytest.fixture
async def flood(registered_client: tuple[Container, str, str]) -> AsyncIterator[Flooded]:
    """150 distinct wrong secrets for a known client id, each held inside its hash."""
    container, client_id, secret = registered_client
    hasher = GatedHasher(secret)
    auth = authenticator(container, hasher, cache_seconds=30)
    state = Flooded(auth, hasher, client_id, secret, [])
    state.wrong = await launch(
        hasher, lambda n: auth.authenticate(client_id, f"wrong-{n}", f"198.51.100.{n % 250}")
    )
    yield state
    await drain(hasher, state.wrong)
    await auth.close()
    hasher.close()


async def test_a_remembered_secret_answers_while_wrong_ones_hash(
    flood: Flooded, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(client_auth, "_MAX_CACHED_CLIENTS", 1)  # no room for a second entry
    assert await flood.auth.authenticate(flood.client_id, flood.secret, IP) == flood.client_id
    assert refused(await drain(flood.hasher, flood.wrong))  # they replaced and evicted nothing
    flood.wrong = await launch(
        flood.hasher, lambda n: flood.auth.authenticate(flood.client_id, f"again-{n}", IP)
    )
    assert await flood.auth.authenticate(flood.client_id, flood.secret, IP) == flood.client_id
    assert flood.hasher.rights() == 1  # from memory, while the 150 are still held
    assert not any(task.done() for task in flood.wrong)


async def test_an_unremembered_right_secret_does_not_wait_behind_wrong_ones(
    flood: Flooded,
) -> None:
    right = asyncio.create_task(flood.auth.authenticate(flood.client_id, flood.secret, IP))
    await until(right.done)  # before the fix: never, while they are held
    assert right.result() == flood.client_id
    assert flood.hasher.rights() == 1 and flood.hasher.held == FLOOD
    assert not any(task.done() for task in flood.wrong)
    assert refused(await drain(flood.hasher, flood.wrong))
    assert flood.auth._in_flight == {}


async def test_distinct_wrong_secrets_cannot_grow_the_flight_map(
    registered_client: tuple[Container, str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(client_auth, "_MAX_FLIGHTS", 16)
    container, client_id, secret = registered_client
    hasher = GatedHasher(secret)
    auth = authenticator(container, hasher, cache_seconds=30)
    wrong = await launch(hasher, lambda n: auth.authenticate(client_id, f"wrong-{n}", IP))
    try:  # all 150 are held in their own hash, 16 of them in flights
        assert len(auth._in_flight) == 16
        assert await auth.authenticate(client_id, secret, IP) == client_id  # verified alone
    finally:
        results = await drain(hasher, wrong)
        hasher.close()
    assert refused(results)
    assert auth._in_flight == {}


async def test_copies_of_one_wrong_secret_share_one_hash(
    registered_client: tuple[Container, str, str],
) -> None:
    container, client_id, secret = registered_client
    hasher = GatedHasher(secret)
    auth = authenticator(container, hasher, cache_seconds=30)
    copies = [asyncio.create_task(auth.authenticate(client_id, "wrong", IP)) for _ in range(50)]
    try:
        await until(lambda: hasher.held == 1)
        await asyncio.sleep(0.05)  # the other 49 have joined (and would have hashed before)
    finally:
        results = await drain(hasher, copies)
        hasher.close()
    assert refused(results)
    assert len(hasher.calls) == 1
    (failures,) = await container.store.get_many([client_auth.ip_failure_key(IP)])
    assert failures == "50"  # each request counts as a failure


async def test_a_burst_from_one_ip_cannot_outrun_its_failure_limit(
    registered_client: tuple[Container, str, str],
) -> None:
    """Concurrent wrong secrets all read the counter before any failure is counted: the
    verifications under way count too, so only ``limit`` of them ever reach argon2."""
    container, client_id, secret = registered_client
    hasher = GatedHasher(secret)
    auth = authenticator(container, hasher, limit=5, cache_seconds=30)
    burst = [asyncio.create_task(auth.authenticate(client_id, f"w{n}", IP)) for n in range(40)]
    try:
        # 35 refused at once, 5 held in their hash: all 40 accounted for, none still coming
        await until(lambda: sum(task.done() for task in burst) == 35 and hasher.held == 5)
    finally:
        results = await drain(hasher, burst)
        hasher.close()
    limited = [result for result in results if isinstance(result, RateLimitedError)]
    assert len(limited) == 35 and all(result.retry_after_seconds >= 1 for result in limited)
    assert sum(isinstance(result, InvalidClientError) for result in results) == 5


async def test_once_a_client_id_is_over_its_limit_unfamiliar_ips_lose_priority(
    registered_client: tuple[Container, str, str],
) -> None:
    container, client_id, secret = registered_client
    hasher = GatedHasher(secret, open_gate=True)
    auth = authenticator(container, hasher, limit=2, cache_seconds=30)
    try:
        assert await auth.authenticate(client_id, secret, IP) == client_id  # IP: familiar
        for n in range(4):  # from four IPs: each under its own limit
            with pytest.raises(InvalidClientError):
                await auth.authenticate(client_id, f"wrong-{n}", f"198.51.100.{n}")
        assert [urgent for _, urgent in hasher.calls] == [True, True, True, False, False]
        auth.forget(client_id)
        assert await auth.authenticate(client_id, secret, "203.0.113.9") == client_id
        auth.forget(client_id)
        assert await auth.authenticate(client_id, secret, IP) == client_id
        assert hasher.calls[-2:] == [(secret, False), (secret, True)]
    finally:
        hasher.close()


class HeldRight(PasswordHasher):
    """Holds every verification until ``go`` is set: a right secret in the middle of argon2."""

    def __init__(self) -> None:
        super().__init__(memory_kib=8, time_cost=1, parallelism=1)
        self.entered = asyncio.Event()
        self.go = asyncio.Event()
        self.verifications = 0

    async def verify(self, hash: str, password: str, *, urgent: bool = False) -> bool:
        self.verifications += 1
        self.entered.set()
        await self.go.wait()
        return await super().verify(hash, password, urgent=urgent)


@pytest.mark.parametrize("forget", ["one", "all"])
async def test_a_change_announced_during_a_verification_is_not_undone_by_it(
    registered_client: tuple[Container, str, str], forget: str
) -> None:
    """Attack (third review): a delete or a rotation announced while another instance was
    verifying the client's secret was undone when that verification finished: it stored
    the secret it had read before the change, for the whole cache window."""
    container, client_id, secret = registered_client
    hasher = HeldRight()
    auth = authenticator(container, hasher, cache_seconds=30)
    first = asyncio.create_task(auth.authenticate(client_id, secret, IP))
    await asyncio.wait_for(hasher.entered.wait(), 5)
    if forget == "one":
        auth.forget(client_id)  # the "clients changed" event arrives now
    else:
        auth.forget_all()  # a resubscription
    hasher.go.set()
    assert await first == client_id  # right when it was read: this one answer stands
    assert auth.scopes(client_id) is None
    await auth.authenticate(client_id, secret, IP)
    assert hasher.verifications == 2, "the secret read before the change was remembered"
    await auth.authenticate(client_id, secret, IP)
    assert hasher.verifications == 2  # a verification after the change is remembered
    hasher.close()
