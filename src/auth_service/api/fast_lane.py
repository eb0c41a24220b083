"""The hot path's lane: ``POST /validate`` and ``POST /validate/batch`` answered from the
app's front door, in one flat function, instead of through eight layers of middleware.

Served, a /validate spent more CPU in the ASGI layers around it (each wrapping ``send`` and
``receive`` in another coroutine, twice a request) than in its token check (the profile is in
docs/benchmarks.md). The lane does, in one place, what those layers do for these two routes:

- the request id (an incoming ``X-Request-ID`` of sane charset and length, else a new one),
  echoed, and set for the services (``request_context``) and the access line;
- the size cap: a declared ``Content-Length`` over it is refused before reading, a streamed
  body the moment it passes it (413, ``Connection: close``), as ``RequestContextMiddleware``;
- the endpoint, with the app's own exception handlers looked up by the exception's MRO, as
  Starlette does, and the contract's 500 for anything else;
- the security headers (and ``no-store``; ``Vary: Origin`` when CORS is configured, as the
  CORS middleware adds it), the metrics and the access line.

Anything else takes the app's full stack, unchanged: another method or path, a ``root_path``,
a request before start-up, and, when CORS is configured, a request with an ``Origin`` (the
CORS middleware answers it). ``tests/api/test_fast_lane.py`` replays every kind of request both
ways and compares status, body and headers.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Coroutine, Mapping, Sequence
from functools import partial
from time import perf_counter
from typing import Any

from fastapi import FastAPI
from fastapi.routing import APIRoute
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Message, Receive, Scope, Send

from auth_service.access_log import AccessLog
from auth_service.api.middleware import (
    SecurityHeaders,
    client_ip,
    error_messages,
    incoming_request_id,
    new_request_id,
    too_large,
    with_security_headers,
)
from auth_service.metrics import RequestRecorder
from auth_service.request_context import RequestContext, enter_request, leave_request

Endpoint = Callable[[Request], Coroutine[Any, Any, Response]]
Handler = Callable[[Request, Any], Response | Awaitable[Response]]

_REQUEST_ID = b"x-request-id"
_CONTENT_LENGTH = b"content-length"
_ORIGIN = b"origin"
_VARY = b"vary"


class _TooLarge(Exception):  # a signal inside the lane, never raised out of it
    """The streamed body passed the size cap."""


class ServiceApp(FastAPI):
    """The app, with the lane at its front door (``fast_lane`` None: every request takes the
    full stack)."""

    fast_lane: FastLane | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        lane = self.fast_lane
        if lane is not None and not self.root_path:
            route = lane.route_for(scope)
            if route is not None and await lane.serve(self, route, scope, receive, send):
                return
        await super().__call__(scope, receive, send)


class FastLane:
    """``routes``: the POST routes it answers (their ``path`` and ``endpoint``)."""

    def __init__(
        self,
        routes: Sequence[APIRoute],
        *,
        max_body_bytes: int,
        security: SecurityHeaders,
        trusted_proxies: frozenset[str],
        recorder: RequestRecorder | None,
        access_log: AccessLog | None,
        cors: bool,
    ) -> None:
        self.endpoints: dict[str, tuple[APIRoute, Endpoint]] = {
            route.path: (route, route.endpoint)
            for route in routes
            if "POST" in (route.methods or ())
        }
        self.max_body_bytes = max_body_bytes
        self.security = security
        self.trusted_proxies = trusted_proxies
        self.recorder = recorder
        self.access_log = access_log
        self.cors = cors

    def route_for(self, scope: Scope) -> tuple[APIRoute, Endpoint] | None:
        """The lane's route for this request, or None: the full stack answers it."""
        if scope["type"] != "http" or scope["method"] != "POST" or scope.get("root_path"):
            return None
        return self.endpoints.get(scope["path"])

    async def serve(
        self,
        app: FastAPI,
        route: tuple[APIRoute, Endpoint],
        scope: Scope,
        receive: Receive,
        send: Send,
    ) -> bool:
        """Answer the request; False (before anything is read or sent) when the full stack
        must: a CORS request, or the app has not started."""
        request_id = declared = None
        for name, value in scope["headers"]:
            if name == _CONTENT_LENGTH and declared is None:
                declared = value
            elif name == _REQUEST_ID and request_id is None:
                request_id = incoming_request_id(value)
            elif name == _ORIGIN and self.cors:
                return False
        if getattr(app.state, "container", None) is None:
            return False
        started = perf_counter()
        if request_id is None:
            request_id = new_request_id()
        scope["app"] = app
        scope["route"] = route[0]  # the template, for the metrics and the access line
        scope.setdefault("state", {})["request_id"] = request_id
        entered = enter_request(
            RequestContext(request_id, partial(client_ip, scope, self.trusted_proxies))
        )
        status = 500
        try:
            status = await self._answer(app, route[1], scope, receive, send, request_id, declared)
        finally:
            leave_request(entered)
            seconds = perf_counter() - started
            if self.recorder is not None:
                self.recorder.record(scope, status, seconds)
            if self.access_log is not None:
                client = client_ip(scope, self.trusted_proxies)
                self.access_log.record(scope, status, seconds, request_id, client)
        return True

    async def _answer(
        self,
        app: FastAPI,
        endpoint: Endpoint,
        scope: Scope,
        receive: Receive,
        send: Send,
        request_id: str,
        declared: bytes | None,
    ) -> int:
        fixed = ((_REQUEST_ID, request_id.encode()), *self.security.for_path(scope["path"]))
        if declared is not None and _over(declared, self.max_body_bytes):
            return await self._refuse_too_large(send, fixed)
        cap, received = self.max_body_bytes, 0

        async def counting_receive() -> Message:
            # The body is read by the endpoint, after the client authenticated (401 first, as
            # the stack answers it); counted as it streams, refused once it passes the cap.
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > cap:
                    raise _TooLarge()
            return message

        request = Request(scope, counting_receive, send)
        try:
            response = await endpoint(request)
        except _TooLarge:
            return await self._refuse_too_large(send, fixed)
        except Exception as exc:
            response = await _handled(app.exception_handlers, request, exc)
        headers = [(name, value) for name, value in response.raw_headers if name != _REQUEST_ID]
        if self.cors:  # as the CORS middleware answers a request without an Origin
            headers = _vary_on_origin(headers)
        start: Message = {
            "type": "http.response.start",
            "status": response.status_code,
            "headers": with_security_headers(headers, fixed),
        }
        await send(start)
        await send({"type": "http.response.body", "body": response.body})
        return response.status_code

    async def _refuse_too_large(self, send: Send, fixed: tuple[tuple[bytes, bytes], ...]) -> int:
        start, body = error_messages(413, "request_too_large", too_large(self.max_body_bytes))
        start["headers"] = with_security_headers(start["headers"], fixed)
        await send(start)
        await send(body)
        return 413


def _vary_on_origin(headers: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    varies = [value for name, value in headers if name == _VARY]
    kept = [(name, value) for name, value in headers if name != _VARY]
    return [*kept, (_VARY, b", ".join([*varies, b"Origin"]))]


def _over(declared: bytes, cap: int) -> bool:
    try:
        return int(declared) > cap
    except ValueError:
        return False  # as the middleware: an unreadable length is counted as the body streams


async def _handled(handlers: Mapping[Any, Handler], request: Request, exc: Exception) -> Response:
    """The app's answer to ``exc``: its handler's, or the contract's 500 when there is none or
    the handler passes it on (as the database-error handler does for a non-transient one)."""
    try:
        return await _answer_of(_handler_for(handlers, exc), request, exc)
    except Exception as passed_on:
        return await _answer_of(handlers[Exception], request, passed_on)


async def _answer_of(handler: Handler, request: Request, exc: Exception) -> Response:
    answer = handler(request, exc)  # Starlette allows a plain function as well
    return await answer if inspect.isawaitable(answer) else answer


def _handler_for(handlers: Mapping[Any, Handler], exc: Exception) -> Handler:
    """The app's handler for ``exc``'s nearest class, as Starlette looks it up (``Exception``'s
    is the contract's 500)."""
    for kind in type(exc).__mro__:
        handler = handlers.get(kind)
        if handler is not None:
            return handler
    raise exc  # a BaseException the app does not handle: the server's own
