from __future__ import annotations

import asyncio
import contextlib
import hashlib
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import argon2
import pytest

from auth_service.crypto.passwords import (
    KNOWN_NICENESS,
    STRANGER_NICENESS,
    PasswordHasher,
    constant_time_equals,
    hash_opaque,
    usable_cores,
)
from auth_service.settings import Settings

PASSWORD = "correct horse battery staple"


@pytest.fixture
def hasher() -> Iterator[PasswordHasher]:
    cheap = PasswordHasher(memory_kib=8, time_cost=1, parallelism=1)
    yield cheap
    cheap.close()


async def test_hash_is_argon2id_with_the_given_parameters(hasher: PasswordHasher) -> None:
    hashed = await hasher.hash(PASSWORD)
    assert hashed.startswith("$argon2id$")
    parameters = argon2.extract_parameters(hashed)
    assert (parameters.memory_cost, parameters.time_cost, parameters.parallelism) == (8, 1, 1)
    assert parameters.type is argon2.Type.ID


async def test_hash_is_salted(hasher: PasswordHasher) -> None:
    assert await hasher.hash(PASSWORD) != await hasher.hash(PASSWORD)


async def test_verify_accepts_the_right_password(hasher: PasswordHasher) -> None:
    assert await hasher.verify(await hasher.hash(PASSWORD), PASSWORD) is True


async def test_verify_refuses_a_wrong_password(hasher: PasswordHasher) -> None:
    hashed = await hasher.hash(PASSWORD)
    assert await hasher.verify(hashed, PASSWORD + "!") is False
    assert await hasher.verify(hashed, PASSWORD.upper()) is False


@pytest.mark.parametrize(
    "garbage",
    [
        "",
        "not a hash",
        "$argon2id$v=19$m=8,t=1,p=1$",
        "$argon2id$v=19$m=8,t=1,p=1$c2FsdHNhbHQ$!!!!",
        "$2b$12$abcdefghijklmnopqrstuuIoJ0tNRPGSpvPszyGE0TxNsN5gwyVxK",
        "$argon2id$v=19$m=8,t=1,p=1$ñññ$ñññ",
    ],
)
async def test_verify_is_false_for_garbage_hashes(hasher: PasswordHasher, garbage: str) -> None:
    assert await hasher.verify(garbage, PASSWORD) is False


async def test_verify_is_false_for_a_password_that_is_not_valid_unicode(
    hasher: PasswordHasher,
) -> None:
    hashed = await hasher.hash(PASSWORD)
    assert await hasher.verify(hashed, "lone surrogate \ud800 password") is False


async def test_needs_rehash_when_parameters_change(hasher: PasswordHasher) -> None:
    hashed = await hasher.hash(PASSWORD)
    assert hasher.needs_rehash(hashed) is False
    stronger = PasswordHasher(memory_kib=16, time_cost=2, parallelism=1)
    try:
        assert stronger.needs_rehash(hashed) is True
        assert stronger.needs_rehash(await stronger.hash(PASSWORD)) is False
        assert await stronger.verify(hashed, PASSWORD) is True  # old hashes still verify
    finally:
        stronger.close()


def test_needs_rehash_for_an_unreadable_hash(hasher: PasswordHasher) -> None:
    assert hasher.needs_rehash("not a hash") is True


async def test_verify_dummy_returns_nothing_and_reuses_one_hash(hasher: PasswordHasher) -> None:
    for password in (PASSWORD, "another password", "surrogate \udfff"):
        await hasher.verify_dummy(password)  # never raises, whatever the password
    assert hasher._dummy_hash is not None
    first = hasher._dummy_hash
    await hasher.verify_dummy(PASSWORD)
    assert hasher._dummy_hash is first
    assert not hasher.needs_rehash(first)  # made with this hasher's parameters


def test_from_settings_uses_the_production_defaults() -> None:
    settings = Settings(_env_file=None)
    production = PasswordHasher.from_settings(settings)
    try:
        assert (production.memory_kib, production.time_cost, production.parallelism) == (
            19_456,
            2,
            1,
        )
    finally:
        production.close()


class _GatedExecutor(ThreadPoolExecutor):
    """Worker threads wait for ``release`` before they start any work."""

    def __init__(self) -> None:
        super().__init__(max_workers=4)
        self.release = threading.Event()
        self.submitted = 0

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        self.submitted += 1

        def gated() -> Any:
            if not self.release.wait(timeout=30):
                raise TimeoutError("the test never released the executor")
            return fn(*args, **kwargs)

        return super().submit(gated)


@pytest.fixture
async def gated() -> AsyncIterator[_GatedExecutor]:
    executor = _GatedExecutor()
    yield executor
    executor.release.set()
    executor.shutdown(wait=True)


async def test_hashes_run_in_the_executor_while_the_loop_stays_responsive(
    gated: _GatedExecutor,
) -> None:
    hasher = PasswordHasher(memory_kib=8, time_cost=1, parallelism=1, executor=gated)
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0)

    ticking = asyncio.create_task(ticker())
    hashing = asyncio.gather(*(hasher.hash(f"{PASSWORD} {n}") for n in range(4)))
    try:
        while ticks < 50:
            await asyncio.sleep(0)
        # The ticker advanced 50 times while no hash could finish: the work waits in the pool
        # (one hash per core at a time is admitted to it; the rest wait in the hash queue).
        assert gated.submitted == min(4, usable_cores())
        assert hasher.queue.waiting == 4 - gated.submitted
        assert not hashing.done()
        gated.release.set()
        results = await hashing
    finally:
        ticking.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await ticking
    assert all(result.startswith("$argon2id$") for result in results)
    checks = [await hasher.verify(h, f"{PASSWORD} {n}") for n, h in enumerate(results)]
    assert checks == [True] * 4


async def test_a_given_executor_is_not_shut_down_by_close(gated: _GatedExecutor) -> None:
    gated.release.set()
    hasher = PasswordHasher(memory_kib=8, time_cost=1, parallelism=1, executor=gated)
    hasher.close()
    assert await hasher.verify(await hasher.hash(PASSWORD), PASSWORD)


async def test_close_shuts_down_the_owned_executor() -> None:
    hasher = PasswordHasher(memory_kib=8, time_cost=1, parallelism=1)
    hasher.close()
    with pytest.raises(RuntimeError):
        await hasher.hash(PASSWORD)


def test_hash_opaque_is_sha256_hex() -> None:
    token = "dGhpcyBpcyBhIHJhbmRvbSB0b2tlbg"
    digest = hash_opaque(token)
    assert digest == hashlib.sha256(token.encode()).hexdigest()
    assert len(digest) == 64 and digest == digest.lower()
    assert hash_opaque(token) == digest
    assert hash_opaque(token + "x") != digest


def test_constant_time_equals() -> None:
    assert constant_time_equals("secret-value", "secret-value") is True
    assert constant_time_equals("secret-value", "secret-valuE") is False
    assert constant_time_equals("secret", "secret-value") is False
    assert constant_time_equals("", "") is True
    assert constant_time_equals("clé", "clé") is True  # non-ASCII does not raise
    assert constant_time_equals("clé", "cle") is False


async def test_hashing_threads_run_below_the_event_loop(monkeypatch: pytest.MonkeyPatch) -> None:
    """Both lanes' threads are niced below the loop's (0), strangers' below known users':
    argon2 on the loop's core cannot hold up the validations waiting there."""
    import os
    import threading

    owned = PasswordHasher(memory_kib=8, time_cost=1, parallelism=1)  # its own pools
    base = os.getpriority(os.PRIO_PROCESS, 0)

    def niceness(_hash: str, _password: str) -> int:
        return os.getpriority(os.PRIO_PROCESS, threading.get_native_id())

    monkeypatch.setattr(owned, "_verify_sync", niceness)
    try:
        known = await owned.verify("h", "p", urgent=True)
        stranger = await owned.verify("h", "p")
    finally:
        owned.close()
    if base == 0:  # the usual case: exactly these
        assert (known, stranger) == (KNOWN_NICENESS, STRANGER_NICENESS)
    else:  # a process started niced: never raised above it without the privilege
        assert known in {KNOWN_NICENESS, base} and stranger in {STRANGER_NICENESS, base}
