"""Load shedding at the edge: while the strangers' hashing lane is full, a login or a
registration that would be refused anyway (``services/login.py:sheds_login``) is answered
``503 server_busy`` before FastAPI parses it.

Why here: under a flood of made-up logins almost every request is refused, and a refusal
that went through routing, body parsing and dependency solving cost the event loop about
half a millisecond; 128 flooding connections then took tens of milliseconds of every loop
turn, so each await of a real user's login waited that long (``make bench`` scenario (f)).

A shed request is answered after ``SHED_DELAY_SECONDS`` (a tarpit): a flooding client that
waits for each answer, as credential-stuffing tools do, then sends a few requests a second per
connection instead of thousands, and the loop stays free for everyone else. The wait costs no
CPU; at most ``MAX_TARPITTED`` requests wait at once (beyond that they are answered at once),
so an open-loop flood cannot pile up waiting requests without bound.
"""

from __future__ import annotations

import asyncio
import json
from typing import TYPE_CHECKING

from starlette.types import ASGIApp, Receive, Scope, Send

from auth_service.api.deps import resolve_client_ip
from auth_service.errors import ServerBusyError
from auth_service.services.login import sheds_login

if TYPE_CHECKING:
    from auth_service.container import Container

SHED_DELAY_SECONDS = 0.5
MAX_TARPITTED = 10_000
_LOGIN = "/auth/login"
_REGISTER = "/auth/register"
_BUSY = ServerBusyError()
_BODY = json.dumps({"error": _BUSY.code.value, "error_description": _BUSY.description}).encode()
_HEADERS = [
    (b"content-type", b"application/json"),
    (b"content-length", str(len(_BODY)).encode()),
    *[(name.lower().encode(), value.encode()) for name, value in _BUSY.headers.items()],
]


class LoadSheddingMiddleware:
    def __init__(self, app: ASGIApp, *, delay_seconds: float = SHED_DELAY_SECONDS) -> None:
        self.app = app
        self.delay_seconds = delay_seconds
        self.tarpitted = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST" and self._sheds(scope):
            if self.delay_seconds > 0 and self.tarpitted < MAX_TARPITTED:
                self.tarpitted += 1
                try:
                    await asyncio.sleep(self.delay_seconds)
                finally:
                    self.tarpitted -= 1
            await send({"type": "http.response.start", "status": 503, "headers": _HEADERS})
            await send({"type": "http.response.body", "body": _BODY})
            return
        await self.app(scope, receive, send)

    @staticmethod
    def _sheds(scope: Scope) -> bool:
        path = scope["path"]
        if path not in (_LOGIN, _REGISTER):
            return False
        container: Container | None = getattr(scope["app"].state, "container", None)
        if container is None:
            return False
        ctx = container.sessions
        if path == _REGISTER:
            return ctx.hasher.queue.full(urgent=False)
        forwarded = ""
        for name, value in scope.get("headers", []):
            if name == b"x-forwarded-for":
                forwarded = value.decode("latin-1")
        client = scope.get("client")
        peer = client[0] if client else None
        return sheds_login(ctx, resolve_client_ip(peer, forwarded, ctx.settings))
