"""The key-lifecycle job: an APScheduler ``AsyncIOScheduler`` started in the app's lifespan.

One interval job asks ``KeyRotation.run_due_work`` what is due (expire retired keys,
rotate when the active key is ``interval`` old) every ``AUTH_KEY_CHECK_INTERVAL_SECONDS``.
``max_instances=1`` and ``coalesce=True``: a slow run is never overlapped nor replayed in a
burst. Any number of instances may run it at once; the store lock and the re-check inside
it make one rotation. A failure (store or database down, lock busy) is logged and the next
tick tries again; nothing is half-written (the work is one transaction).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta

from apscheduler.schedulers.asyncio import AsyncIOScheduler

from auth_service.errors import RotationInProgressError
from auth_service.services.rotation import KeyRotation
from auth_service.store.base import StoreUnavailableError

log = logging.getLogger(__name__)

JOB_ID = "key-lifecycle"
_SHUTDOWN_SECONDS = 10


class KeyScheduler:
    def __init__(
        self,
        rotation: KeyRotation,
        *,
        every: timedelta,
        housekeeping: Callable[[], Awaitable[object]] | None = None,
        housekeeping_every: timedelta = timedelta(hours=1),
    ) -> None:
        self._rotation = rotation
        self._every = every
        self._housekeeping = housekeeping  # the audit log's retention (services/audit.py)
        self._housekeeping_every = housekeeping_every.total_seconds()
        self._housekept_at: float | None = None
        self._scheduler = AsyncIOScheduler(timezone=UTC)
        self._running: set[asyncio.Task[None]] = set()

    @property
    def running(self) -> bool:
        return bool(self._scheduler.running)

    def start(self) -> None:
        # The first check runs soon after start-up, spread a little so a fleet that starts
        # together does not contend for the lock on the same tick.
        first = datetime.now(UTC) + timedelta(seconds=random.uniform(0.5, 2.0))  # noqa: S311
        self._scheduler.add_job(
            self.tick,
            "interval",
            seconds=self._every.total_seconds(),
            id=JOB_ID,
            max_instances=1,
            coalesce=True,
            next_run_time=first,
            misfire_grace_time=None,
        )
        self._scheduler.start()

    async def tick(self) -> None:
        """One check; never raises (the scheduler must keep ticking)."""
        task = asyncio.current_task()
        if task is not None:
            self._running.add(task)
        try:
            await self._key_work()
            try:
                await self._housekeep()
            except Exception:
                log.exception("audit retention failed; it runs again within the hour")
        finally:
            if task is not None:
                self._running.discard(task)

    async def _key_work(self) -> None:
        try:
            report = await self._rotation.run_due_work()
            if report.rotation is not None and report.rotation.rotated:
                log.info("scheduled rotation: %s is active", report.rotation.active_kid)
        except StoreUnavailableError as exc:
            log.error("key lifecycle check skipped: the store is unavailable (%s)", exc)
        except RotationInProgressError as exc:
            log.info("key lifecycle check skipped: %s", exc)
        except Exception:
            log.exception("key lifecycle check failed; it runs again on the next tick")

    async def _housekeep(self) -> None:
        now = time.monotonic()
        due = self._housekept_at is None or now - self._housekept_at >= self._housekeeping_every
        if self._housekeeping is not None and due:
            self._housekept_at = now
            await self._housekeeping()

    async def shutdown(self) -> None:
        """Stop scheduling, let a check in flight finish (bounded; it is one transaction, so
        cancelling it after the bound rolls it back), then shut the scheduler down. Pausing
        first matters: APScheduler's shutdown cancels the job futures it still runs."""
        if not self._scheduler.running:
            return
        self._scheduler.pause()
        if self._running:
            _done, pending = await asyncio.wait(set(self._running), timeout=_SHUTDOWN_SECONDS)
            for task in pending:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        self._scheduler.shutdown(wait=False)
        await asyncio.sleep(0)  # AsyncIOScheduler applies shutdown on the loop's next turn
