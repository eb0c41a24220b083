"""Attack: a flood of hashing work queues without end and starves everyone behind it.

The admission queue in front of the argon2 pool is bounded (a full queue answers
``server_busy`` at once) and urgent work (a known client, a known device) is served first.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable

import pytest

from auth_service.crypto.hash_queue import HashQueue
from auth_service.crypto.passwords import PasswordHasher, usable_cores
from auth_service.errors import ServerBusyError


async def test_a_full_normal_lane_refuses_at_once_and_never_holds_up_urgent_work() -> None:
    queue = HashQueue(slots=1, limit=2)
    await queue.acquire(urgent=False)  # the normal lane's one slot is taken
    waiting = [asyncio.ensure_future(queue.acquire(urgent=False)) for _ in range(2)]
    await asyncio.sleep(0)
    assert queue.full(urgent=False) and not queue.full(urgent=True)
    with pytest.raises(ServerBusyError) as refused:
        await queue.acquire(urgent=False)
    assert refused.value.status_code == 503 and refused.value.code == "server_busy"
    assert refused.value.headers["Retry-After"] == "1"
    # Urgent work has its own slot: it runs now, not after the normal lane's waiters.
    await asyncio.wait_for(queue.acquire(urgent=True), 0.1)
    urgent_waiter = asyncio.ensure_future(queue.acquire(urgent=True))
    await asyncio.sleep(0)
    queue.release(urgent=True)  # an urgent slot goes to the urgent waiter only
    await asyncio.sleep(0)
    assert urgent_waiter.done() and not any(w.done() for w in waiting)
    for _ in waiting:
        queue.release(urgent=False)
        await asyncio.sleep(0)
    assert all(w.done() for w in waiting)


async def test_a_cancelled_waiter_gives_its_place_back() -> None:
    queue = HashQueue(slots=1, limit=1)
    await queue.acquire(urgent=False)
    waiter = asyncio.ensure_future(queue.acquire(urgent=False))
    await asyncio.sleep(0)
    waiter.cancel()
    await asyncio.gather(waiter, return_exceptions=True)
    second = asyncio.ensure_future(queue.acquire(urgent=False))  # the place is free again
    await asyncio.sleep(0)
    queue.release(urgent=False)
    await asyncio.wait_for(second, 1)
    queue.release(urgent=False)
    await queue.acquire(urgent=False)  # and the slot came back: nothing leaked


async def until_running(done: Callable[[], bool]) -> None:
    for _ in range(200):
        if done():
            break
        await asyncio.sleep(0.025)
    await asyncio.sleep(0.05)  # and a moment more, for one that should not start


async def test_the_hasher_runs_at_most_one_hash_per_slot_and_bounds_the_rest() -> None:
    hasher = PasswordHasher(memory_kib=8, time_cost=1, parallelism=1, queue_limit=3)
    gate = threading.Event()
    running = 0
    peak = 0
    lock = threading.Lock()
    original = hasher._verify_sync

    def blocked(hash: str, password: str) -> bool:
        nonlocal running, peak
        with lock:
            running += 1
            peak = max(peak, running)
        gate.wait(5)
        with lock:
            running -= 1
        return original(hash, password)

    hasher._verify_sync = blocked  # type: ignore[method-assign]
    try:
        stored = await hasher.hash("a password of some length")
        slots = usable_cores()
        calls = [
            asyncio.ensure_future(hasher.verify(stored, "a password of some length"))
            for _ in range(slots + 3)
        ]
        await until_running(lambda: running >= slots)  # niced threads: they start when they can
        with pytest.raises(ServerBusyError):  # slots running + 3 waiting: the next is refused
            await hasher.verify(stored, "a password of some length")
        assert peak == slots  # the normal lane: one hash per slot, the rest wait
        known = asyncio.ensure_future(hasher.verify(stored, "wrong", urgent=True))
        await until_running(lambda: running >= slots + 1)
        assert running == slots + 1  # urgent work runs beside it at once, in its own pool
        gate.set()
        assert all(await asyncio.gather(*calls))
        assert await known is False
        assert peak == slots + 1
    finally:
        gate.set()
        hasher.close()
