"""Liveness (the process answers) and readiness (it can do its job)."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from auth_service.api.deps import HealthDep
from auth_service.api.schemas.health import Liveness, Readiness, ReadinessChecks, ReadinessFailure

router = APIRouter(prefix="/health", tags=["operations"])


@router.get("/live", response_model=Liveness)
async def live() -> Liveness:
    return Liveness(status="ok")


@router.get(
    "/ready",
    response_model=Readiness,
    responses={503: {"model": ReadinessFailure, "description": "A check is failing."}},
)
async def ready(health: HealthDep) -> JSONResponse:
    report = await health.readiness()
    checks = ReadinessChecks(**report.checks)
    if not report.failing:
        return JSONResponse(Readiness(status="ok", checks=checks).model_dump())
    body = ReadinessFailure(
        status="unavailable",
        checks=checks,
        error="service_unavailable",
        error_description="failing: " + ", ".join(report.failing),
    )
    return JSONResponse(body.model_dump(), status_code=503)
