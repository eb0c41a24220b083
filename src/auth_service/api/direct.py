"""``DirectRoute``: a route whose endpoint takes the ``Request`` and returns the ``Response``.

The hot paths (``/validate``, ``/validate/batch``, ``/auth/refresh``) run on it: FastAPI's
per-request machinery (dependency solving, body parsing, response validation and
re-serialisation) cost more than their own work (docs/benchmarks.md). The endpoint reads the
body with the same parser and pydantic model FastAPI would use, so a bad body gets the same
422, and the app's exception handlers still apply. OpenAPI still comes from the declaration
(``response_model``, ``responses``, the request body given in ``openapi_extra``).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

import orjson
from fastapi import Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from pydantic import BaseModel, TypeAdapter, ValidationError
from starlette.requests import ClientDisconnect

M = TypeVar("M", bound=BaseModel)
_NOT_JSON = {"type": "json_invalid", "loc": ("body",)}
Endpoint = Callable[[Request], Coroutine[Any, Any, Response]]


class DirectRoute(APIRoute):
    def get_route_handler(self) -> Endpoint:
        endpoint: Endpoint = self.endpoint
        return endpoint


def request_body_schema(model: type[BaseModel], *, required: bool) -> dict[str, Any]:
    """``openapi_extra`` for a DirectRoute's JSON body of ``model``."""
    return {
        "requestBody": {
            "required": required,
            "content": {"application/json": {"schema": model.model_json_schema()}},
        }
    }


def validation_error(exc: ValidationError) -> RequestValidationError:
    return RequestValidationError(exc.errors(include_url=False, include_input=False))


async def optional_json_body(request: Request, adapter: TypeAdapter[M | None]) -> M | None:
    """The body as FastAPI reads an optional body parameter: none (or JSON ``null``) is None;
    ``json.loads`` then the model in python mode, as FastAPI does, so every bad body gets the
    422 FastAPI's route gave (undecodable or not JSON: "the body is not valid JSON")."""
    try:
        raw = await request.body()
    except ClientDisconnect:  # FastAPI's answer to any body it could not read: our 422
        raise RequestValidationError([_NOT_JSON]) from None
    if not raw:
        return None
    try:
        value = json.loads(raw)
    except (ValueError, RecursionError):  # not JSON, not text, or nested beyond parsing
        raise RequestValidationError([_NOT_JSON]) from None
    try:
        return adapter.validate_python(value, from_attributes=True)  # as FastAPI validates
    except ValidationError as exc:
        raise validation_error(exc) from exc


_ENCODER = json.JSONEncoder(separators=(",", ":"))


def json_response(payload: dict[str, Any]) -> Response:
    """orjson (a tenth of json's time, which was a twentieth of a /validate); json for what
    orjson refuses (an integer claim beyond 64 bits in a token someone else could shape)."""
    try:
        body = orjson.dumps(payload)
    except TypeError:  # orjson.JSONEncodeError is a TypeError
        body = _ENCODER.encode(payload).encode()
    return Response(body, media_type="application/json")
