"""Liveness (the process answers) and readiness (it can do its job)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from datetime import timedelta
from typing import Any, Literal

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from sqlalchemy import text

from auth_service.api.deps import ContainerDep
from auth_service.api.schemas.health import Liveness, Readiness, ReadinessChecks, ReadinessFailure

router = APIRouter(prefix="/health", tags=["operations"])
log = logging.getLogger(__name__)

_CHECK_TIMEOUT_SECONDS = 2.0

Check = Literal["ok", "failing"]


@router.get("/live", response_model=Liveness)
async def live() -> Liveness:
    return Liveness(status="ok")


@router.get(
    "/ready",
    response_model=Readiness,
    responses={503: {"model": ReadinessFailure, "description": "A check is failing."}},
)
async def ready(container: ContainerDep) -> JSONResponse:
    async def database() -> None:
        async with container.engine.connect() as connection:
            await connection.execute(text("SELECT 1"))

    db_state, store_state = await asyncio.gather(
        _probe("database", database()), _probe("store", container.store.ping())
    )
    snapshot = container.keyring.snapshot
    stale_after = timedelta(seconds=3 * container.settings.key_cache_refresh_seconds)
    fresh = snapshot.loaded_at is not None and (
        container.clock.now() - snapshot.loaded_at < stale_after
    )
    key_state: Check = "ok" if snapshot.signing is not None and fresh else "failing"
    checks = ReadinessChecks(database=db_state, store=store_state, signing_key=key_state)
    failing = [name for name, state in checks.model_dump().items() if state != "ok"]
    if not failing:
        return JSONResponse(Readiness(status="ok", checks=checks).model_dump())
    body = ReadinessFailure(
        status="unavailable",
        checks=checks,
        error="service_unavailable",
        error_description="failing: " + ", ".join(failing),
    )
    return JSONResponse(body.model_dump(), status_code=503)


async def _probe(name: str, probe: Coroutine[Any, Any, None]) -> Check:
    try:
        await asyncio.wait_for(probe, _CHECK_TIMEOUT_SECONDS)
    except Exception as exc:
        log.warning("readiness check %s failing: %s", name, type(exc).__name__)
        return "failing"
    return "ok"
