"""Readiness: whether this instance can do its job (database, store, a fresh signing key)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Literal

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from auth_service.clock import Clock
from auth_service.services.keyring import KeyRing
from auth_service.store.base import Store

log = logging.getLogger(__name__)

CHECK_TIMEOUT_SECONDS = 2.0
Check = Literal["ok", "failing"]


@dataclass(frozen=True, slots=True)
class ReadinessReport:
    checks: dict[str, Check]

    @property
    def failing(self) -> list[str]:
        return [name for name, state in self.checks.items() if state != "ok"]


class Health:
    def __init__(
        self,
        engine: AsyncEngine,
        store: Store,
        keyring: KeyRing,
        clock: Clock,
        *,
        stale_after: timedelta,
    ) -> None:
        self._engine = engine
        self._store = store
        self._keyring = keyring
        self._clock = clock
        self._stale_after = stale_after

    async def readiness(self) -> ReadinessReport:
        """Each check's state: ``database`` and ``store`` answer within the timeout;
        ``signing_key``: a signing key is loaded and the key cache was refreshed lately."""

        async def database() -> None:
            async with self._engine.connect() as connection:
                await connection.execute(text("SELECT 1"))

        db_state, store_state = await asyncio.gather(
            _probe("database", database()), _probe("store", self._store.ping())
        )
        snapshot = self._keyring.snapshot
        fresh = (
            snapshot.loaded_at is not None
            and self._clock.now() - snapshot.loaded_at < self._stale_after
        )
        key_state: Check = "ok" if snapshot.signing is not None and fresh else "failing"
        return ReadinessReport(
            {"database": db_state, "store": store_state, "signing_key": key_state}
        )


async def _probe(name: str, probe: Coroutine[Any, Any, None]) -> Check:
    try:
        await asyncio.wait_for(probe, CHECK_TIMEOUT_SECONDS)
    except Exception as exc:
        log.warning("readiness check %s failing: %s", name, type(exc).__name__)
        return "failing"
    return "ok"
