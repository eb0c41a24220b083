"""What the services may know of the HTTP request they serve: its id, the client's IP and the
signed-in caller.

The request-context middleware sets it for every request; the audit log reads it. The IP is
resolved (through the trusted proxies, as every limit resolves it) only when asked for, so the
hot path pays one context-variable set. Outside a request (CLI, scheduler) both are None.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from contextvars import ContextVar, Token
from functools import cached_property


class RequestContext:
    def __init__(
        self, request_id: str | None, resolve_ip: Callable[[], str | None] | None = None
    ) -> None:
        self.request_id = request_id
        self._resolve_ip = resolve_ip
        # The signed-in caller (a user id), once a route's token check has passed.
        self.actor: str | None = None

    @cached_property
    def ip(self) -> str | None:
        """The client's address in its canonical form, or None when it is not an IP (a
        proxy may forward anything: it never reaches a column unchecked)."""
        raw = self._resolve_ip() if self._resolve_ip is not None else None
        try:
            return str(ipaddress.ip_address(raw)) if raw else None
        except ValueError:
            return None


_NONE = RequestContext(None)
_current: ContextVar[RequestContext] = ContextVar("auth_service_request", default=_NONE)


def current_request() -> RequestContext:
    return _current.get()


def enter_request(context: RequestContext) -> Token[RequestContext]:
    return _current.set(context)


def leave_request(token: Token[RequestContext]) -> None:
    _current.reset(token)
