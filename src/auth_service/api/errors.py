"""The one place that turns failures into the contract's ``{"error", "error_description"}``."""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy import exc as sa_exc
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import Request as StarletteRequest
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from auth_service import metrics
from auth_service.errors import AuthError, ErrorCode, RateLimitedError, RefreshTokenReusedError
from auth_service.store.base import StoreUnavailableError

log = logging.getLogger("auth_service.api")

_HTTP_CODES: dict[int, ErrorCode] = {
    400: ErrorCode.INVALID_REQUEST,
    401: ErrorCode.INVALID_TOKEN,
    403: ErrorCode.FORBIDDEN,
    404: ErrorCode.NOT_FOUND,
    405: ErrorCode.METHOD_NOT_ALLOWED,
    413: ErrorCode.REQUEST_TOO_LARGE,
    422: ErrorCode.INVALID_REQUEST,
    429: ErrorCode.RATE_LIMITED,
}
_FASTAPI_BODY_PARSE_DETAIL = "There was an error parsing the body"
_HTTP_DESCRIPTIONS: dict[int, str] = {
    404: "No such resource.",
    405: "This method is not allowed on this resource.",
}


def error_body(code: str, description: str) -> dict[str, str]:
    return {"error": code, "error_description": description}


def _request_id(request: Request) -> str:
    return str(getattr(request.state, "request_id", "-"))


_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}|[0-9]{1,6}")


def _field_name(location: Sequence[Any]) -> str:
    """The field's path; a part that is not a plain name (attacker-chosen keys) shows as ``*``."""
    parts = [
        str(part) if _IDENTIFIER.fullmatch(str(part)) else "*"
        for part in location
        if part not in ("body", "query", "path", "header")
    ]
    return ".".join(parts) or "body"


def describe_validation_errors(errors: Sequence[Any]) -> str:
    """Name each offending field with pydantic's message; never echo the submitted value."""
    described = []
    for error in list(errors)[:5]:
        if error.get("type") == "json_invalid":
            described.append("body: the body is not valid JSON")
        else:
            described.append(f"{_field_name(error.get('loc', ()))}: {error.get('msg', 'invalid')}")
    return "; ".join(described) or "The request is invalid."


async def _auth_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, AuthError)
    if isinstance(exc, RateLimitedError):
        metrics.RATE_LIMITED.labels(exc.limiter).inc()
    elif isinstance(exc, RefreshTokenReusedError):
        metrics.REFRESH_REUSE.inc()
    return JSONResponse(
        error_body(exc.code.value, exc.description),
        status_code=exc.status_code,
        headers=exc.headers,
    )


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    description = describe_validation_errors(exc.errors())
    return JSONResponse(error_body(ErrorCode.INVALID_REQUEST.value, description), status_code=422)


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    if exc.status_code == 400 and exc.detail == _FASTAPI_BODY_PARSE_DETAIL:
        # FastAPI's answer to a body it cannot decode (e.g. not UTF-8): a validation error.
        description = "body: the body is not valid JSON"
        return JSONResponse(
            error_body(ErrorCode.INVALID_REQUEST.value, description), status_code=422
        )
    code = _HTTP_CODES.get(
        exc.status_code,
        ErrorCode.SERVER_ERROR if exc.status_code >= 500 else ErrorCode.INVALID_REQUEST,
    )
    description = _HTTP_DESCRIPTIONS.get(exc.status_code, "The request could not be processed.")
    return JSONResponse(
        error_body(code.value, description), status_code=exc.status_code, headers=exc.headers
    )


async def _unhandled(request: Request, exc: Exception) -> JSONResponse:
    request_id = _request_id(request)
    log.error(
        "unhandled error on %s %s (request id %s)",
        request.method,
        request.url.path,
        request_id,
        exc_info=exc,
    )
    return JSONResponse(
        error_body(
            ErrorCode.SERVER_ERROR.value,
            f"The server could not complete the request (request id {request_id}).",
        ),
        status_code=500,
        headers={"X-Request-ID": request_id},
    )


# The database cannot be reached or answer: asyncpg raises OSError when it cannot connect,
# SQLAlchemy OperationalError/InterfaceError for a lost connection or a locked SQLite file,
# its TimeoutError when the pool has no connection to give.
DATABASE_UNAVAILABLE: tuple[type[Exception], ...] = (
    sa_exc.OperationalError,
    sa_exc.InterfaceError,
    sa_exc.TimeoutError,
    OSError,
)


# PostgreSQL gave up on a statement it could have run later: a lock or statement timeout, a
# deadlock, a serialisation failure. Busy, not broken: 503 as well (attack review: a held
# session lock made waiting refreshes 500).
_TRANSIENT_SQLSTATES = frozenset({"55P03", "57014", "40P01", "40001"})


async def _database_error(request: Request, exc: Exception) -> JSONResponse:
    """503 for a transient PostgreSQL failure; any other driver error goes on to the 500
    boundary (which adds the request id once)."""
    orig = getattr(exc, "orig", None)
    cause = getattr(orig, "__cause__", None)
    codes = {getattr(orig, "sqlstate", None), getattr(cause, "sqlstate", None)}
    if codes & _TRANSIENT_SQLSTATES:
        return await _unavailable(request, exc)
    raise exc


async def _unavailable(request: Request, exc: Exception) -> JSONResponse:
    """A backing service failed: 503, never a trace. The store's errors carry no secrets; a
    database error's text may hold SQL, so only its type is logged."""
    metrics.BACKEND_ERRORS.labels(
        "store" if isinstance(exc, StoreUnavailableError) else "database"
    ).inc()
    if isinstance(exc, StoreUnavailableError):
        log.error("the store is unavailable on %s %s: %s", request.method, request.url.path, exc)
    else:
        log.error(
            "the database is unavailable on %s %s (%s)",
            request.method,
            request.url.path,
            type(exc).__name__,
        )
    return JSONResponse(
        error_body(
            ErrorCode.SERVICE_UNAVAILABLE.value,
            "A backing service is unavailable; nothing was changed. Retry shortly.",
        ),
        status_code=503,
        headers={"Retry-After": "1"},
    )


class ErrorBoundary:
    """The innermost middleware: an unexpected exception becomes the contract's 500 here,
    inside the middleware that adds the request id, CORS and the security headers (Starlette's
    own handler for ``Exception`` answers from outside all of them). An exception after the
    response started is re-raised: the server closes the connection."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def watching_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, watching_send)
        except Exception as exc:
            if started:
                raise
            response = await _unhandled(StarletteRequest(scope), exc)
            del response.headers["x-request-id"]  # the request-context middleware adds it
            await response(scope, receive, send)


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(AuthError, _auth_error)
    unavailable: tuple[type[Exception], ...] = (StoreUnavailableError, *DATABASE_UNAVAILABLE)
    for failure in unavailable:
        app.add_exception_handler(failure, _unavailable)
    app.add_exception_handler(sa_exc.DBAPIError, _database_error)  # the others: transient?
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(Exception, _unhandled)  # errors in the middleware itself
    app.add_middleware(ErrorBoundary)  # the first added is the innermost
