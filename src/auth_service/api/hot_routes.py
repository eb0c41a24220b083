"""The hot path's dispatch: ``POST /validate`` and ``POST /validate/batch`` go straight to
their endpoints, past Starlette's exception middleware, FastAPI's exit stacks and the
router's matching of every route (a fifth of a validation's CPU, measured: docs/benchmarks.md).

It is the innermost middleware, so everything outside it still runs for these requests: the
request id, the size cap, the security headers, CORS, load shedding, the metrics, the access
log and the 500 boundary. The routes stay declared on the router (OpenAPI, and any other
method or path, e.g. ``GET /validate`` → 405, goes there as before); an exception an endpoint
raises is answered by the app's own handler for it, looked up as Starlette does (the nearest
class in the exception's MRO), so the answer is the one the router would have given.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine, Mapping, Sequence
from typing import Any

from fastapi.routing import APIRoute
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

Endpoint = Callable[[Request], Coroutine[Any, Any, Response]]
Handler = Callable[[Request, Exception], Coroutine[Any, Any, Response]]


class HotRoutes:
    """``routes``: the POST routes to dispatch (their ``path`` and ``endpoint``)."""

    def __init__(self, app: ASGIApp, *, routes: Sequence[APIRoute]) -> None:
        self.app = app
        self.endpoints: dict[str, tuple[APIRoute, Endpoint]] = {
            route.path: (route, route.endpoint)
            for route in routes
            if "POST" in (route.methods or ())
        }

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        found = None
        if scope["type"] == "http" and scope["method"] == "POST":
            found = self.endpoints.get(scope["path"])
        if found is None or scope.get("root_path"):
            await self.app(scope, receive, send)
            return
        route, endpoint = found
        scope["route"] = route  # the template, for the metrics and the access log
        request = Request(scope, receive, send)
        try:
            response = await endpoint(request)
        except Exception as exc:
            handler = _handler_for(scope["app"].exception_handlers, exc)
            if handler is None:
                raise  # the 500 boundary outside answers it
            response = await handler(request, exc)
        await response(scope, receive, send)


def _handler_for(handlers: Mapping[Any, Handler], exc: Exception) -> Handler | None:
    """The app's handler for ``exc``'s nearest class; none for a bare ``Exception`` (the
    boundary outside answers that 500, as it does for every route)."""
    for kind in type(exc).__mro__:
        if kind is Exception:
            return None
        handler = handlers.get(kind)
        if handler is not None:
            return handler
    return None
