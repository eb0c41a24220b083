"""Load shedding at the edge: while the strangers' hashing lane is full, a registration, and
a login that would be refused anyway (``Logins.sheds`` in ``services/login.py``: not from an
(account, IP group) that logged in before), are answered ``503 server_busy`` before FastAPI
parses them.

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

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from auth_service.api.deps import resolve_client_ip
from auth_service.errors import ServerBusyError

if TYPE_CHECKING:
    from auth_service.container import Container

SHED_DELAY_SECONDS = 0.5
MAX_TARPITTED = 10_000
MAX_LOGIN_BODY = 8192
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
        container = self._container(scope)
        if container is None or not container.logins.hashing_full():
            await self.app(scope, receive, send)
            return
        if scope["path"] == _REGISTER:
            await self._shed(send)
            return
        # A login: its email decides (a known device goes on). The body is read here (it is
        # small; RequestContextMiddleware caps it) and handed on unchanged.
        body = await _read_body(receive)
        email = _email_of(body)
        peer = scope.get("client")
        settings = container.settings
        ip = resolve_client_ip(peer[0] if peer else None, _forwarded_for(scope), settings)
        if email is None or await container.logins.sheds(email, ip):
            await self._shed(send)
            return
        await self.app(scope, _replay(body, receive), send)

    async def _shed(self, send: Send) -> None:
        if self.delay_seconds > 0 and self.tarpitted < MAX_TARPITTED:
            self.tarpitted += 1
            try:
                await asyncio.sleep(self.delay_seconds)
            finally:
                self.tarpitted -= 1
        await send({"type": "http.response.start", "status": 503, "headers": _HEADERS})
        await send({"type": "http.response.body", "body": _BODY})

    @staticmethod
    def _container(scope: Scope) -> Container | None:
        if scope["type"] != "http" or scope.get("method") != "POST":
            return None
        if scope.get("path") not in (_LOGIN, _REGISTER):
            return None
        app = scope.get("app")
        container: Container | None = getattr(getattr(app, "state", None), "container", None)
        return container


def _forwarded_for(scope: Scope) -> str:
    """The first X-Forwarded-For header, as ``Request.headers.get`` reads it."""
    for name, value in scope.get("headers", []):
        if name == b"x-forwarded-for":
            return str(value.decode("latin-1"))
    return ""


async def _read_body(receive: Receive) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            break
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > MAX_LOGIN_BODY:
            break  # no login body is this large: shed it
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)
    return b""


def _email_of(body: bytes) -> str | None:
    try:
        parsed = json.loads(body)
    except ValueError:
        return None
    email = parsed.get("email") if isinstance(parsed, dict) else None
    return email if isinstance(email, str) else None


def _replay(body: bytes, receive: Receive) -> Receive:
    sent = False

    async def replayed() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replayed
