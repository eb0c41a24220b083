"""Pure ASGI middleware (cheap on the hot path): request ids, the security headers of every
response, and the request-size limit."""

from __future__ import annotations

import json
import random
import re
from collections.abc import Collection
from functools import partial
from time import perf_counter

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from auth_service.access_log import AccessLog
from auth_service.metrics import RequestRecorder
from auth_service.request_context import RequestContext, enter_request, leave_request

_SAFE_REQUEST_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")
_CACHE_CONTROL = b"cache-control"
_NO_STORE = ((b"cache-control", b"no-store"), (b"pragma", b"no-cache"))
STRICT_POLICY = "default-src 'none'; frame-ancestors 'none'"
HSTS = "max-age=63072000; includeSubDomains"


def nearest_untrusted_hop(peer: str, forwarded_for: str, trusted: Collection[str]) -> str:
    """Behind a trusted proxy, the client is the nearest ``X-Forwarded-For`` hop that is not
    one of ours (a client can prepend anything; it cannot forge what our proxy appends)."""
    hops = [hop.strip() for hop in forwarded_for.split(",")]
    for hop in reversed([hop for hop in hops if hop]):
        if hop not in trusted:
            return hop
    return peer


class SecurityHeaders:
    """The headers every response gets, built once: ``for_path`` is a lookup, not a build.

    A response whose route set no ``Cache-Control`` also gets ``no-store`` + ``Pragma``: only
    the public, cacheable documents (JWKS, discovery) set their own, so every answer that
    carries a token, a secret, a TOTP secret or recovery codes is no-store without its route
    having to remember it.
    """

    def __init__(self, *, hsts: bool, policies: dict[str, str] | None = None) -> None:
        def build(policy: str) -> tuple[tuple[bytes, bytes], ...]:
            fixed = [
                (b"x-content-type-options", b"nosniff"),
                (b"referrer-policy", b"no-referrer"),
                (b"content-security-policy", policy.encode()),
            ]
            if hsts:
                fixed.append((b"strict-transport-security", HSTS.encode()))
            return tuple(fixed)

        self.default = build(STRICT_POLICY)
        self._by_path = {path: build(policy) for path, policy in (policies or {}).items()}

    def for_path(self, path: str) -> tuple[tuple[bytes, bytes], ...]:
        return self._by_path.get(path, self.default) if self._by_path else self.default


def with_security_headers(
    headers: list[tuple[bytes, bytes]], fixed: tuple[tuple[bytes, bytes], ...]
) -> list[tuple[bytes, bytes]]:
    for name, _ in headers:
        if name == _CACHE_CONTROL:
            return [*headers, *fixed]
    return [*headers, *fixed, *_NO_STORE]


def too_large(max_body_bytes: int) -> str:
    return f"The request body is larger than {max_body_bytes} bytes."


def incoming_request_id(value: bytes) -> str | None:
    """An incoming ``X-Request-ID`` if its charset and length are sane, else None."""
    candidate = value.decode("latin-1")
    return candidate if _SAFE_REQUEST_ID.fullmatch(candidate) else None


def new_request_id() -> str:
    # A correlation id, not a secret: the process's PRNG (os.urandom cost a syscall a
    # request), 64 bits so that ids do not collide in a day's logs.
    return f"{random.getrandbits(64):016x}"


def client_ip(scope: Scope, trusted_proxies: Collection[str]) -> str | None:
    """The client's address: the peer, or behind a trusted proxy its nearest untrusted hop."""
    client = scope.get("client")
    peer = client[0] if client else None
    if peer is None or peer not in trusted_proxies:
        return peer
    forwarded = b",".join(v for k, v in scope.get("headers", []) if k == b"x-forwarded-for")
    return nearest_untrusted_hop(peer, forwarded.decode("latin-1"), trusted_proxies)


def error_messages(status: int, code: str, description: str) -> tuple[Message, Message]:
    body = json.dumps({"error": code, "error_description": description}).encode()
    start: Message = {
        "type": "http.response.start",
        "status": status,
        "headers": [
            (b"content-type", b"application/json"),
            (b"connection", b"close"),  # stop reading whatever the client still sends
            (b"content-length", str(len(body)).encode()),
        ],
    }
    return start, {"type": "http.response.body", "body": body}


class RequestContextMiddleware:
    """Gives each request an id (``X-Request-ID``, echoed when it is safe) and caps body size.

    A declared ``Content-Length`` over the cap is refused before reading; a chunked body is
    counted as it streams and refused with 413 the moment it passes the cap.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        max_body_bytes: int,
        security: SecurityHeaders | None = None,
        trusted_proxies: frozenset[str] = frozenset(),
        recorder: RequestRecorder | None = None,
        access_log: AccessLog | None = None,
    ) -> None:
        self.app = app
        self.recorder = recorder  # the metrics (None: AUTH_METRICS_ENABLED=false)
        self.access_log = access_log  # None: AUTH_ACCESS_LOG=false, or INFO is off
        self.max_body_bytes = max_body_bytes
        self.trusted_proxies = trusted_proxies
        self.security = security or SecurityHeaders(hsts=False)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = perf_counter()
        status = [500]
        request_id = self._request_id(scope)
        try:
            await self._serve(scope, receive, send, status, request_id)
        finally:
            seconds = perf_counter() - started
            if self.recorder is not None:
                self.recorder.record(scope, status[0], seconds)
            if self.access_log is not None:
                client = self._client_ip(scope)
                self.access_log.record(scope, status[0], seconds, request_id, client)

    async def _serve(
        self, scope: Scope, receive: Receive, send: Send, status: list[int], request_id: str
    ) -> None:
        scope.setdefault("state", {})["request_id"] = request_id
        entered = enter_request(RequestContext(request_id, partial(self._client_ip, scope)))
        header = (b"x-request-id", request_id.encode())
        fixed = (header, *self.security.for_path(scope["path"]))

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
                message["headers"] = with_security_headers(message.get("headers", []), fixed)
            await send(message)

        declared = self._content_length(scope)
        if declared is not None and declared > self.max_body_bytes:
            for message in self._too_large():
                await send_with_id(message)
            return

        received = 0
        rejected = False

        async def guarded_send(message: Message) -> None:
            if not rejected:  # once 413 is sent, nothing the app says reaches the client
                await send_with_id(message)

        async def counting_receive() -> Message:
            nonlocal received, rejected
            if rejected:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_body_bytes:
                    for reply in self._too_large():
                        await send_with_id(reply)
                    rejected = True
                    return {"type": "http.disconnect"}
            return message

        try:
            await self.app(scope, counting_receive, guarded_send)
        except Exception:
            if not rejected:
                raise
        finally:
            leave_request(entered)

    def _client_ip(self, scope: Scope) -> str | None:
        return client_ip(scope, self.trusted_proxies)

    def _too_large(self) -> tuple[Message, Message]:
        return error_messages(413, "request_too_large", too_large(self.max_body_bytes))

    @staticmethod
    def _request_id(scope: Scope) -> str:
        for name, value in scope.get("headers", []):
            if name == b"x-request-id" and (candidate := incoming_request_id(value)):
                return candidate
        return new_request_id()

    @staticmethod
    def _content_length(scope: Scope) -> int | None:
        for name, value in scope.get("headers", []):
            if name == b"content-length":
                try:
                    return int(value)
                except ValueError:
                    return None
        return None
