"""WebSocket helpers (the ``[fastapi]`` extra): ``authenticate_websocket`` accepts a socket with
a valid token or closes it with 1008 (1013 when no verdict could be had), and
``close_when_revoked`` closes a live socket with 1008 once its token is revoked or expires.

Where the token comes from: the ``Authorization: Bearer`` header (non-browser clients), else
the subprotocol after ``bearer`` (browsers: ``new WebSocket(url, ["bearer", token])``; the
server answers the subprotocol ``bearer``, never the token), else, only if the app names one, a
query parameter: query strings end up in access logs, proxies and browser history."""

import asyncio
import contextlib
import time
from collections.abc import Callable
from types import TracebackType
from typing import Self

try:
    from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState
except ImportError as exc:  # pragma: no cover - only without the extra
    raise ImportError(
        "auth_service_client.web_ws needs Starlette: pip install 'auth-service-client[fastapi]'"
    ) from exc

from auth_service_client.errors import ServiceUnavailableError
from auth_service_client.types import Check, RevocationSource, Verdict
from auth_service_client.web import Claims, check_token, request_bearer

__all__ = [
    "BEARER_SUBPROTOCOL",
    "RevocationGuard",
    "authenticate_websocket",
    "close_when_revoked",
    "websocket_token",
]

WS_POLICY_VIOLATION = 1008
WS_TRY_AGAIN_LATER = 1013
BEARER_SUBPROTOCOL = "bearer"


def websocket_token(ws: WebSocket, *, query_param: str | None = None) -> str | None:
    """The token of a WebSocket handshake: ``Authorization: Bearer``, else the subprotocol
    after ``bearer`` (``new WebSocket(url, ["bearer", token])``), else ``query_param`` if given
    (off by default: query strings end up in access logs). Two ``Authorization`` headers are
    no token (which one counts would depend on the reader), as for HTTP requests."""
    token, ambiguous = request_bearer(ws.scope)
    if ambiguous:
        return None
    protocols = list(ws.scope.get("subprotocols") or [])
    if token is None and BEARER_SUBPROTOCOL in protocols:
        at = protocols.index(BEARER_SUBPROTOCOL)
        token = protocols[at + 1] if at + 1 < len(protocols) else None
    if token is None and query_param:
        token = ws.query_params.get(query_param) or None
    return token


async def _close(ws: WebSocket, code: int, reason: str) -> None:
    """Close unless already closed (by either side)."""
    if WebSocketState.DISCONNECTED in (ws.application_state, ws.client_state):
        return
    with contextlib.suppress(RuntimeError, OSError, WebSocketDisconnect):
        await ws.close(code, reason[:120])


async def authenticate_websocket(
    ws: WebSocket, check: Check, *, query_param: str | None = None, subprotocol: str | None = None
) -> Claims | None:
    """Accept the socket and return the claims of a valid token (see ``websocket_token``);
    else accept and close at once, so browsers see the code: 1008 (policy violation) for a
    missing or bad token, 1013 (try again later) when no verdict could be had; None then.
    Accepts with ``subprotocol``, else ``bearer`` when the client offered it."""
    token = websocket_token(ws, query_param=query_param)
    offered = BEARER_SUBPROTOCOL in (ws.scope.get("subprotocols") or [])
    code, reason = WS_POLICY_VIOLATION, "missing token"
    verdict: Verdict | None = None
    if token is not None:
        try:
            verdict = await check_token(check, token)
        except ServiceUnavailableError:
            code, reason = WS_TRY_AGAIN_LATER, "auth service unavailable"
        else:
            reason = f"invalid token: {verdict.error or 'malformed'}"
    if ws.application_state == WebSocketState.CONNECTING:
        await ws.accept(subprotocol=subprotocol or (BEARER_SUBPROTOCOL if offered else None))
    if verdict is not None and verdict.valid and verdict.claims is not None:
        return verdict.claims
    await _close(ws, code, reason)
    return None


class RevocationGuard:
    """``async with close_when_revoked(ws, claims, source):`` runs its body until the token is
    revoked (``source.revoked_reason(claims)`` after a revocation callback) or its ``exp``
    passes; then the body is cancelled (the cancellation is swallowed, as ``asyncio.timeout``
    does) and the socket is closed with 1008 and the reason. ``reason`` says why, or None."""

    def __init__(
        self, ws: WebSocket, claims: Claims, source: RevocationSource, *, expiry: bool = True
    ) -> None:
        self.ws, self.claims, self.source, self.expiry = ws, claims, source, expiry
        self.reason: str | None = None
        self._handles: list[asyncio.Handle] = []
        self._unregister: Callable[[], None] | None = None
        self._exited = False

    async def __aenter__(self) -> Self:
        task = asyncio.current_task()
        assert task is not None, "close_when_revoked needs a task"
        self._task, self._cancelling = task, task.cancelling()
        self._loop = asyncio.get_running_loop()
        self._unregister = self.source.on_revocation(self._on_revocation)
        exp = self.claims.get("exp")
        if self.expiry and isinstance(exp, int | float) and not isinstance(exp, bool):
            delay = max(0.0, float(exp) - time.time())
            self._handles.append(self._loop.call_later(delay, self._fire, "expired"))
        self._on_revocation()
        return self

    def _on_revocation(self) -> None:
        if self.reason is None and not self._exited:
            reason = self.source.revoked_reason(self.claims)
            if reason is not None:  # never cancel synchronously inside the source's callback
                self._handles.append(self._loop.call_soon_threadsafe(self._fire, reason))

    def _fire(self, reason: str) -> None:
        if self.reason is None and not self._exited:
            self.reason = reason
            self._task.cancel()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool:
        self._exited = True
        for handle in self._handles:
            handle.cancel()
        if self._unregister is not None:
            self._unregister()
        if self.reason is None:
            return False
        ours = self._task.uncancel() <= self._cancelling
        await _close(self.ws, WS_POLICY_VIOLATION, self.reason)
        return ours and exc_type is not None and issubclass(exc_type, asyncio.CancelledError)


def close_when_revoked(
    ws: WebSocket, claims: Claims, source: RevocationSource, *, expiry: bool = True
) -> RevocationGuard:
    """Guard a live socket: closed with 1008 as soon as ``source`` revokes ``claims`` (and,
    with ``expiry``, when the token's ``exp`` passes). Use as ``async with``."""
    return RevocationGuard(ws, claims, source, expiry=expiry)
