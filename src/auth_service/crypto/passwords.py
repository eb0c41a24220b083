"""Password hashing (argon2id) off the event loop, opaque-token digests, constant-time compare.

Formats:

- password hash: argon2id PHC string ``$argon2id$v=19$m=<KiB>,t=<passes>,p=<lanes>$<salt>$<tag>``;
- opaque token digest (refresh, reset, recovery): lower-case hex SHA-256 of the token's UTF-8.

argon2 work is CPU-bound (tens of milliseconds at production cost), so every hash and
verification runs in a thread pool: the event loop keeps serving other requests meanwhile.
Admission to the pool goes through a ``HashQueue`` (one running hash per core, bounded
queues, urgent work first; a full queue is 503 ``server_busy`` at once).
No argon2 exception leaves this module: a wrong password or a damaged hash is ``False``.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import os
import secrets
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import TYPE_CHECKING, TypeVar

import argon2
from argon2.exceptions import InvalidHashError, VerificationError

from auth_service.crypto.hash_queue import HashQueue

if TYPE_CHECKING:
    from auth_service.settings import Settings

_T = TypeVar("_T")
KNOWN_NICENESS = 5  # known users' and clients' hashes: CFS weight 335 against the loop's 1024
STRANGER_NICENESS = 15  # strangers' (a flood's): weight 36


class PasswordHasher:
    """argon2id with the given cost; async methods run in thread pools.

    Two pools (normal and urgent work, see ``hash_queue.py``), each sized to the usable
    cores and owned by the hasher unless one is passed in (then it serves both lanes);
    ``close()`` shuts down owned pools (a pool passed in belongs to the caller).
    """

    def __init__(
        self,
        *,
        memory_kib: int,
        time_cost: int,
        parallelism: int,
        queue_limit: int = 32,
        executor: ThreadPoolExecutor | None = None,
    ) -> None:
        self.memory_kib = memory_kib
        self.time_cost = time_cost
        self.parallelism = parallelism
        self._argon2 = argon2.PasswordHasher(
            time_cost=time_cost,
            memory_cost=memory_kib,
            parallelism=parallelism,
            type=argon2.Type.ID,
        )
        self._owns_executor = executor is None
        workers = usable_cores()
        # Two pools, one a lane of the hash queue, both niced below the event loop: the loop
        # (validation, every other request) first, then known users' hashes, then strangers'.
        self._executors = {
            False: executor
            or ThreadPoolExecutor(
                max_workers=workers,
                thread_name_prefix="argon2",
                initializer=partial(_lower_thread_priority, STRANGER_NICENESS),
            ),
            True: executor
            or ThreadPoolExecutor(
                max_workers=workers,
                thread_name_prefix="argon2-urgent",
                initializer=partial(_lower_thread_priority, KNOWN_NICENESS),
            ),
        }
        self.queue = HashQueue(slots=workers, limit=queue_limit)
        self._dummy_hash: str | None = None
        self._dummy_lock = threading.Lock()

    @classmethod
    def from_settings(
        cls, settings: Settings, *, executor: ThreadPoolExecutor | None = None
    ) -> PasswordHasher:
        return cls(
            memory_kib=settings.password_hash_memory_kib,
            time_cost=settings.password_hash_time_cost,
            parallelism=settings.password_hash_parallelism,
            queue_limit=settings.password_hash_queue_limit,
            executor=executor,
        )

    async def hash(self, password: str) -> str:
        """A new argon2id hash of ``password`` with a fresh random salt."""
        return await self._run(self._argon2.hash, password)

    async def verify(self, hash: str, password: str, *, urgent: bool = False) -> bool:
        """Whether ``password`` matches ``hash``; a malformed hash is simply ``False``.

        ``urgent`` work (a known service client, an account's known device) is served before
        other queued work and has a queue of its own, so a flood cannot starve it."""
        return await self._run(self._verify_sync, hash, password, urgent=urgent)

    def needs_rehash(self, hash: str) -> bool:
        """Whether ``hash`` was made with other parameters than this hasher's (or is unreadable)."""
        try:
            return self._argon2.check_needs_rehash(hash)
        except (InvalidHashError, VerificationError, ValueError):
            return True

    async def verify_dummy(self, password: str, *, urgent: bool = False) -> None:
        """Spend the time of one verification, for a login whose user does not exist.

        The dummy hash has this hasher's parameters and is made once, on first use; making it
        costs one argon2 computation with the same parameters, like a verification does.
        """
        await self._run(self._verify_dummy_sync, password, urgent=urgent)

    def close(self) -> None:
        """Shut down the pool this hasher created (waiting for running work to finish)."""
        if self._owns_executor:
            for pool in self._executors.values():
                pool.shutdown(wait=True, cancel_futures=True)

    # Work done in the pool --------------------------------------------------------------
    async def _run(self, function: Callable[..., _T], *args: object, urgent: bool = False) -> _T:
        loop = asyncio.get_running_loop()
        await self.queue.acquire(urgent=urgent)
        try:
            running = self._executors[urgent].submit(function, *args)
        except BaseException:
            self.queue.release(urgent=urgent)
            raise
        # The slot is given back when the thread is done, not when the caller stops waiting
        # (a cancelled request's hash still occupies its core until it finishes).
        running.add_done_callback(
            partial(_release_on, loop, partial(self.queue.release, urgent=urgent))
        )
        return await asyncio.wrap_future(running)

    def _verify_sync(self, hash: str, password: str) -> bool:
        try:
            return self._argon2.verify(hash, password)
        except (VerificationError, InvalidHashError, UnicodeError, ValueError):
            # VerifyMismatchError is a VerificationError; UnicodeError: a non-ASCII hash or a
            # password with lone surrogates; ValueError: anything else argon2 cannot parse.
            return False

    def _verify_dummy_sync(self, password: str) -> None:
        with self._dummy_lock:
            if self._dummy_hash is None:
                self._dummy_hash = self._argon2.hash(secrets.token_urlsafe(32))
                return
            dummy = self._dummy_hash
        self._verify_sync(dummy, password)


def _release_on(
    loop: asyncio.AbstractEventLoop, release: Callable[[], None], _done: object
) -> None:
    with contextlib.suppress(RuntimeError):  # the loop is already closed: nothing waits
        loop.call_soon_threadsafe(release)


def usable_cores() -> int:
    """The cores this process may run on (its CPU affinity), not the machine's count."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # not Linux
        return os.cpu_count() or 1


def _lower_thread_priority(niceness: int) -> None:
    """A hashing thread yields to the event loop (Linux: the nice value is per thread): on a
    core shared with the loop, a login's 25 ms of argon2 no longer holds up the validations
    waiting on that core (``make bench`` (b-under-e)); strangers' yield to known users' too,
    so a login flood never starves validation."""
    with contextlib.suppress(AttributeError, OSError):
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), niceness)


def hash_opaque(token: str) -> str:
    """The stored form of an opaque token (refresh, password reset, recovery code).

    Lower-case hex SHA-256 of the token's UTF-8 bytes, 64 characters. No salt and no slow
    hash: these tokens are random with at least 128 bits of entropy, so a fast digest cannot
    be brute-forced, and a deterministic one lets the database look the token up by index.
    """
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


def constant_time_equals(a: str, b: str) -> bool:
    """Compare two secrets without leaking, through timing, where they first differ."""
    return hmac.compare_digest(
        a.encode("utf-8", "surrogatepass"), b.encode("utf-8", "surrogatepass")
    )


__all__ = ["PasswordHasher", "constant_time_equals", "hash_opaque"]
