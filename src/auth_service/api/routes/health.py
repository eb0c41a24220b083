"""Liveness (the process answers) and readiness (it can do its job)."""

from __future__ import annotations

from datetime import timedelta

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from auth_service.api.deps import ContainerDep
from auth_service.api.schemas.health import Liveness, Readiness, ReadinessChecks, ReadinessFailure
from auth_service.services.health import check_readiness

router = APIRouter(prefix="/health", tags=["operations"])


@router.get("/live", response_model=Liveness)
async def live() -> Liveness:
    return Liveness(status="ok")


@router.get(
    "/ready",
    response_model=Readiness,
    responses={503: {"model": ReadinessFailure, "description": "A check is failing."}},
)
async def ready(container: ContainerDep) -> JSONResponse:
    checks = ReadinessChecks(
        **await check_readiness(
            container.engine,
            container.store,
            container.keyring,
            container.clock,
            stale_after=timedelta(seconds=3 * container.settings.key_cache_refresh_seconds),
        )
    )
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
