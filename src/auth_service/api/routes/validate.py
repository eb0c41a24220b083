"""Backend-service endpoints: validate one token or a batch (HTTP Basic client auth).

Both are the service's hot path, so they run on ``DirectRoute`` (api/direct.py): the endpoint
reads the body with the pydantic model itself and writes the JSON answer once.
"""

from __future__ import annotations

from typing import Any, TypeVar

from fastapi import APIRouter, Request, Response
from fastapi.routing import APIRoute
from pydantic import BaseModel, ValidationError

from auth_service.api.deps import container_of, get_client_id
from auth_service.api.direct import (
    DirectRoute,
    Endpoint,
    json_response,
    request_body_schema,
    validation_error,
)
from auth_service.api.routing import is_json_media_type
from auth_service.api.schemas.common import HASHING_503, error_responses
from auth_service.api.schemas.validation import (
    BatchRequest,
    BatchResult,
    ValidateRequest,
    ValidateResult,
)
from auth_service.errors import ErrorCode as E
from auth_service.errors import UnsupportedMediaTypeError
from auth_service.metrics import count_verdict
from auth_service.services.validation import TokenValidator, Verdict

router = APIRouter(prefix="/validate", tags=["validation"])

_ERRORS = error_responses(401, 415, 422, 429, 503, s401=(E.INVALID_CLIENT,), s503=HASHING_503)

Body = TypeVar("Body", bound=BaseModel)


async def _authenticated_body(request: Request, model: type[Body]) -> tuple[TokenValidator, Body]:
    """The client is authenticated before the body is looked at (401 before 422)."""
    container = container_of(request)
    await get_client_id(request, container)
    # ``application/json`` or ``application/*+json`` only: a body of another or no type is
    # refused (415), as a browser may send one cross-site.
    if not is_json_media_type(request.headers.get("content-type", "")):
        raise UnsupportedMediaTypeError()
    try:
        return container.validator, model.model_validate_json(await request.body())
    except ValidationError as exc:
        raise validation_error(exc) from exc


def _result(verdict: Verdict) -> dict[str, Any]:
    count_verdict(verdict.valid, verdict.error)
    if verdict.valid:
        return {"valid": True, "claims": verdict.claims}
    return {"valid": False, "error": verdict.error}


async def validate(request: Request) -> Response:
    """Check one access token: `valid: true` with its claims, or `valid: false` and why."""
    validator, body = await _authenticated_body(request, ValidateRequest)
    return json_response(_result(await validator.validate(body.token)))


async def validate_batch(request: Request) -> Response:
    """Check 1 to 100 access tokens at once; the results are in the order asked."""
    validator, body = await _authenticated_body(request, BatchRequest)
    verdicts = await validator.validate_many(body.tokens)
    return json_response({"results": [_result(verdict) for verdict in verdicts]})


def _add(
    path: str, endpoint: Endpoint, request_model: type[BaseModel], answer: type[BaseModel]
) -> None:
    router.add_api_route(
        path,
        endpoint,
        methods=["POST"],
        route_class_override=DirectRoute,
        response_model=answer,
        response_model_exclude_none=True,
        responses=_ERRORS,
        openapi_extra=request_body_schema(request_model, required=True),
    )


_add("", validate, ValidateRequest, ValidateResult)
_add("/batch", validate_batch, BatchRequest, BatchResult)


def hot_routes() -> list[APIRoute]:
    """This router's routes, for the hot-path dispatch (api/fast_lane.py)."""
    return [route for route in router.routes if isinstance(route, APIRoute)]
