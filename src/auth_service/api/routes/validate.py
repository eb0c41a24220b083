"""Backend-service endpoints: validate one token or a batch (HTTP Basic client auth)."""

from __future__ import annotations

from fastapi import APIRouter

from auth_service.api.deps import ClientIdDep, ContainerDep
from auth_service.api.schemas.common import error_responses
from auth_service.api.schemas.validation import (
    BatchRequest,
    BatchResult,
    ValidateRequest,
    ValidateResult,
)
from auth_service.errors import ErrorCode as E
from auth_service.services.validation import Verdict

router = APIRouter(prefix="/validate", tags=["validation"])

_ERRORS = error_responses(401, 422, 503, s401=(E.INVALID_CLIENT,))


def _result(verdict: Verdict) -> ValidateResult:
    if verdict.valid:
        return ValidateResult(valid=True, claims=verdict.claims)
    return ValidateResult(valid=False, error=verdict.error)


@router.post("", response_model=ValidateResult, response_model_exclude_none=True, responses=_ERRORS)
async def validate(
    body: ValidateRequest, _client: ClientIdDep, container: ContainerDep
) -> ValidateResult:
    return _result(await container.validator.validate(body.token))


@router.post(
    "/batch", response_model=BatchResult, response_model_exclude_none=True, responses=_ERRORS
)
async def validate_batch(
    body: BatchRequest, _client: ClientIdDep, container: ContainerDep
) -> BatchResult:
    verdicts = await container.validator.validate_many(body.tokens)
    return BatchResult(results=[_result(verdict) for verdict in verdicts])
