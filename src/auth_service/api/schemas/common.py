"""The error body every failure shares, and ``error_responses`` to declare it on routes."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

from auth_service.errors import ErrorCode


class ErrorBody(BaseModel):
    error: str = Field(description="A stable lower_snake_case code.", examples=["invalid_request"])
    error_description: str = Field(description="Text for humans; never a secret or a trace.")


_DEFAULT_CODES: dict[int, tuple[ErrorCode, ...]] = {
    400: (ErrorCode.INVALID_REQUEST,),
    401: (ErrorCode.INVALID_TOKEN,),
    403: (ErrorCode.FORBIDDEN,),
    404: (ErrorCode.NOT_FOUND,),
    405: (ErrorCode.METHOD_NOT_ALLOWED,),
    409: (ErrorCode.ROTATION_IN_PROGRESS,),
    413: (ErrorCode.REQUEST_TOO_LARGE,),
    415: (ErrorCode.UNSUPPORTED_MEDIA_TYPE,),
    422: (ErrorCode.INVALID_REQUEST,),
    429: (ErrorCode.RATE_LIMITED,),
    500: (ErrorCode.SERVER_ERROR,),
    503: (ErrorCode.SERVICE_UNAVAILABLE,),
}


# Routes that hash a password or a client secret may also answer 503 server_busy (a full
# hashing queue, crypto/hash_queue.py); they declare ``s503=HASHING_503``.
HASHING_503: tuple[ErrorCode, ...] = (ErrorCode.SERVICE_UNAVAILABLE, ErrorCode.SERVER_BUSY)


def error_responses(
    *statuses: int, **codes: tuple[ErrorCode, ...]
) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` for the given statuses, each with the error body and its codes.

    ``codes`` overrides the default codes of a status: ``error_responses(401, s401=(...))``.
    """
    declared: dict[int | str, dict[str, Any]] = {}
    for status in statuses:
        names = codes.get(f"s{status}", _DEFAULT_CODES.get(status, ()))
        declared[status] = {
            "model": ErrorBody,
            "description": "Error codes: " + ", ".join(f"`{name.value}`" for name in names),
        }
    return declared
