"""CORS with an explicit origin allow-list: Starlette's middleware, with two answers changed.

- A preflight it refuses is ``400 invalid_request`` in the contract's shape, carrying no
  ``Access-Control-Allow-*`` header (Starlette answers plain text and still lists what it allows).
- ``Access-Control-Allow-Credentials`` and ``-Expose-Headers`` go only with a listed origin
  (Starlette adds them to the answer to any request that has an ``Origin``).

Credentials are never allowed with ``*`` (development only: production refuses it at start).
"""

from __future__ import annotations

import json

from starlette.datastructures import Headers, MutableHeaders
from starlette.middleware.cors import CORSMiddleware
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Send

from auth_service.settings import Settings

ALLOWED_METHODS = ("GET", "POST", "PUT", "DELETE")
ALLOWED_HEADERS = ("Authorization", "Content-Type", "X-CSRF-Token", "X-Request-ID")
EXPOSED_HEADERS = ("X-Request-ID", "Retry-After")


class AllowListCORSMiddleware(CORSMiddleware):
    def __init__(self, app: ASGIApp, *, settings: Settings) -> None:
        origins = [origin.strip() for origin in settings.cors_origins if origin.strip()]
        super().__init__(
            app,
            allow_origins=origins,
            allow_methods=ALLOWED_METHODS,
            allow_headers=ALLOWED_HEADERS,
            allow_credentials="*" not in origins,
            expose_headers=EXPOSED_HEADERS,
            max_age=settings.cors_max_age_seconds,
        )

    def preflight_response(self, request_headers: Headers) -> Response:
        granted = super().preflight_response(request_headers)
        if granted.status_code == 200:
            return granted
        refused = bytes(granted.body).decode("utf-8", "replace").removeprefix("Disallowed CORS ")
        body = {
            "error": "invalid_request",
            "error_description": f"CORS preflight refused ({refused}).",
        }
        return Response(
            json.dumps(body),
            status_code=400,
            media_type="application/json",
            headers={"Vary": self.preflight_headers["Vary"]},
        )

    async def send(self, message: Message, send: Send, request_headers: Headers) -> None:
        origin = request_headers.get("origin")
        if (
            message["type"] != "http.response.start"
            or origin is None
            or self.is_allowed_origin(origin=origin)
        ):
            await super().send(message, send, request_headers)
            return
        headers = MutableHeaders(scope=message)
        headers["Vary"] = ", ".join([*headers.getlist("Vary"), "Origin"])
        await send(message)
