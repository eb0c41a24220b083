"""Backend-service endpoints: validate one token or a batch (HTTP Basic client auth)."""

from __future__ import annotations

import json

from fastapi import APIRouter, Request, Response
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError

from auth_service.api.deps import ClientIdDep, ContainerDep, get_client_id
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


@router.post(
    "",
    response_model=ValidateResult,
    response_model_exclude_none=True,
    responses=_ERRORS,
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": ValidateRequest.model_json_schema()}},
        }
    },
)
async def validate(request: Request, container: ContainerDep) -> Response:
    """The hot path, kept lean: the body is parsed by the model directly and the answer is
    serialised once (FastAPI's body and response machinery cost more than the check)."""
    await get_client_id(request, container)
    try:
        body = ValidateRequest.model_validate_json(await request.body())
    except ValidationError as exc:
        raise RequestValidationError(exc.errors(include_url=False, include_input=False)) from exc
    verdict = await container.validator.validate(body.token)
    payload = (
        {"valid": True, "claims": verdict.claims}
        if verdict.valid
        else {
            "valid": False,
            "error": verdict.error,
        }
    )
    return Response(json.dumps(payload, separators=(",", ":")), media_type="application/json")


@router.post(
    "/batch", response_model=BatchResult, response_model_exclude_none=True, responses=_ERRORS
)
async def validate_batch(
    body: BatchRequest, _client: ClientIdDep, container: ContainerDep
) -> BatchResult:
    verdicts = await container.validator.validate_many(body.tokens)
    return BatchResult(results=[_result(verdict) for verdict in verdicts])
