"""``JsonRoute``: a route that takes a JSON body answers 415 for a body of another media type.

FastAPI would hand a ``text/plain`` body to pydantic, whose complaint ("Input should be a valid
dictionary") says nothing about the cause. The check runs before the body is read, and only
when a body is present: a route whose body is optional still takes a bare POST.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import Request, Response
from fastapi.routing import APIRoute
from starlette.datastructures import Headers

from auth_service.errors import NotFoundError, UnsupportedMediaTypeError

Handler = Callable[[Request], Coroutine[Any, Any, Response]]


def is_json_media_type(content_type: str) -> bool:
    media = content_type.partition(";")[0].strip().lower()
    kind, _, subtype = media.partition("/")
    if "/" in subtype:  # not a media type (FastAPI's parser reads it as text/plain)
        return False
    return kind == "application" and (subtype == "json" or subtype.endswith("+json"))


def has_body(headers: Headers) -> bool:
    length = headers.get("content-length")
    if length is not None:
        return length.strip() not in ("", "0")
    return "transfer-encoding" in headers


def require_json(headers: Headers) -> None:
    """``UnsupportedMediaTypeError`` for a body that is not declared JSON."""
    if has_body(headers) and not is_json_media_type(headers.get("content-type", "")):
        raise UnsupportedMediaTypeError()


class JsonRoute(APIRoute):
    def get_route_handler(self) -> Handler:
        handler: Handler = super().get_route_handler()
        if self.body_field is None:
            return handler

        async def handle(request: Request) -> Response:
            require_json(request.headers)
            return await handler(request)

        return handle


def uuid_or_404(value: str, message: str) -> uuid.UUID:
    """A path id that must be a UUID: anything else names nothing (404, not 422)."""
    try:
        return uuid.UUID(value)
    except ValueError:
        raise NotFoundError(message) from None
