"""FastAPI/Starlette helpers (the ``[fastapi]`` extra): a dependency that answers 401/403/503 in
the contract's shape, ``require_roles``/``require_scopes``, a middleware that sets
``request.state.principal``; the WebSocket helpers are in ``web_ws``. Every helper takes a
``Check``: ``AuthClient.validate`` or ``LocalVerifier.verify``.

The middleware and the dependency read the token through one function (``request_bearer``):
a request with more than one ``Authorization`` header has no token for either (no principal,
``principal_error="invalid_request"``; the dependency answers 401 ``invalid_token`` with
``WWW-Authenticate: Bearer error="invalid_request"``), so they can never see different users.

No ``from __future__ import annotations`` here: FastAPI must resolve the dependencies' annotations,
which name closure variables."""

import logging
import re
from collections.abc import Awaitable, Callable, Mapping
from typing import Annotated, Any

try:
    from fastapi import Depends, Request
    from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
    from starlette.applications import Starlette
    from starlette.exceptions import HTTPException
    from starlette.responses import JSONResponse, Response
    from starlette.types import ASGIApp, Receive, Scope, Send
except ImportError as exc:  # pragma: no cover - only without the extra
    raise ImportError(
        "auth_service_client.web needs FastAPI: pip install 'auth-service-client[fastapi]'"
    ) from exc

from auth_service_client.errors import AuthServiceError, ServiceUnavailableError
from auth_service_client.types import Check, Verdict

__all__ = [
    "AuthError",
    "Authenticator",
    "Claims",
    "PrincipalMiddleware",
    "bearer_token",
    "check_token",
    "install_error_handler",
    "request_bearer",
    "require_roles",
    "require_scopes",
]

Claims = Mapping[str, Any]
log = logging.getLogger(__name__)

_VERDICT_KEY = "auth_service_client.verdict"  # scope key: (check, token, verdict) of this request
_BEARER = HTTPBearer(auto_error=False, description="An auth-service access token.")
_UNSAFE = re.compile(r"[^\x20\x21\x23-\x5b\x5d-\x7e]")  # RFC 6750 §3 error_description chars


class AuthError(HTTPException):
    """A 401/403/503 in the contract's shape ``{error, error_description}``; rendered by the
    handler ``install_error_handler`` adds (without it: same status and headers, FastAPI's
    ``{"detail": ...}`` body)."""

    def __init__(
        self, status: int, code: str, description: str, headers: Mapping[str, str] | None = None
    ) -> None:
        super().__init__(status, description, dict(headers or {}))
        self.code = code
        self.description = description


async def _render(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, AuthError)
    body = {"error": exc.code, "error_description": exc.description}
    return JSONResponse(body, exc.status_code, headers=exc.headers)


def install_error_handler(app: Starlette) -> None:
    """Render every ``AuthError`` as ``{"error": code, "error_description": text}``."""
    app.add_exception_handler(AuthError, _render)


def _challenge(realm: str | None, **params: str) -> str:
    """``Bearer realm="..", error="..", ..`` with the values made RFC 6750-safe."""
    items = ({"realm": realm} if realm else {}) | params
    quoted = ", ".join(f'{k}="{_UNSAFE.sub("?", v)}"' for k, v in items.items())
    return f"Bearer {quoted}" if quoted else "Bearer"


def bearer_token(authorization: str | None) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header, or None."""
    scheme, _, token = (authorization or "").strip().partition(" ")
    token = token.strip()
    return token if scheme.lower() == "bearer" and token else None


def request_bearer(scope: Scope) -> tuple[str | None, bool]:
    """``(token, ambiguous)`` of a request's ``Authorization`` header: ``(None, True)`` when
    more than one was sent (refused: which one counts would depend on the reader)."""
    values = [
        value for name, value in scope.get("headers") or [] if name.lower() == b"authorization"
    ]
    if len(values) > 1:
        return None, True
    return bearer_token(values[0].decode("latin-1") if values else None), False


async def check_token(check: Check, token: str) -> Verdict:
    """The check's verdict; any library error becomes ``ServiceUnavailableError``: with no
    verdict the token is neither valid nor invalid."""
    try:
        return await check(token)
    except ServiceUnavailableError:
        raise
    except AuthServiceError as exc:  # e.g. a wrong client secret: an outage of this backend
        log.error("token check failed: %s", exc)
        raise ServiceUnavailableError(str(exc)) from exc


class Authenticator:
    """``Depends(auth)`` returns the verified claims, or raises ``AuthError``: 401
    ``invalid_token`` (``WWW-Authenticate: Bearer``, with ``error="invalid_token"`` when a token
    was sent), or 503 ``service_unavailable`` with ``Retry-After`` when no verdict could be had.
    """

    def __init__(self, check: Check, *, realm: str | None = None, retry_after: int = 5) -> None:
        self.check = check
        self.realm = realm
        self.retry_after = retry_after

    async def verify(self, token: str | None, scope: Scope | None = None) -> Claims:
        """The claims of a valid token, else ``AuthError`` (``scope``: reuse the middleware's
        verdict for the same token and check)."""
        if not token:
            headers = {"WWW-Authenticate": _challenge(self.realm)}
            raise AuthError(401, "invalid_token", "A bearer token is required.", headers)
        cached = (scope or {}).get(_VERDICT_KEY)
        if cached is not None and cached[0] == self.check and cached[1] == token:  # same token
            verdict: Verdict = cached[2]
        else:
            try:
                verdict = await check_token(self.check, token)
            except ServiceUnavailableError:
                headers = {"Retry-After": str(self.retry_after)}
                text = "The token could not be checked; try again later."
                raise AuthError(503, "service_unavailable", text, headers) from None
        if verdict.valid and verdict.claims is not None:
            return verdict.claims
        reason = verdict.error or "malformed"
        challenge = _challenge(self.realm, error="invalid_token", error_description=reason)
        raise AuthError(401, "invalid_token", f"The token is not valid: {reason}.",
                        {"WWW-Authenticate": challenge})  # fmt: skip

    async def __call__(
        self,
        request: Request,
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_BEARER)],
    ) -> Claims:
        del credentials  # declared for OpenAPI; the token is read as the middleware reads it
        token, ambiguous = request_bearer(request.scope)
        if ambiguous:
            text = "more than one Authorization header"
            challenge = _challenge(self.realm, error="invalid_request", error_description=text)
            raise AuthError(401, "invalid_token", f"The request is not valid: {text}.",
                            {"WWW-Authenticate": challenge})  # fmt: skip
        return await self.verify(token, request.scope)

    def require_roles(self, *roles: str) -> Callable[..., Awaitable[Claims]]:
        """A dependency: the claims when the ``roles`` claim holds every one of ``roles``."""
        return require_roles(*roles, auth=self)

    def require_scopes(self, *scopes: str) -> Callable[..., Awaitable[Claims]]:
        """A dependency: the claims when the ``scope`` claim holds every one of ``scopes``."""
        return require_scopes(*scopes, auth=self)


def _strings(value: Any, *, split: bool) -> set[str]:
    if isinstance(value, str):
        return set(value.split()) if split else {value}
    if isinstance(value, list | tuple):
        return {item for item in value if isinstance(item, str)}
    return set()


def require_roles(*roles: str, auth: Authenticator) -> Callable[..., Awaitable[Claims]]:
    """A dependency: 401 as ``auth``, then 403 ``forbidden`` unless every role is in ``roles``."""

    async def dependency(claims: Annotated[Claims, Depends(auth)]) -> Claims:
        missing = [role for role in roles if role not in _strings(claims.get("roles"), split=False)]
        if missing:
            raise AuthError(403, "forbidden", f"Role required: {' '.join(missing)}.")
        return claims

    return dependency


def require_scopes(*scopes: str, auth: Authenticator) -> Callable[..., Awaitable[Claims]]:
    """A dependency: 401 as ``auth``, then 403 ``forbidden`` with ``WWW-Authenticate: Bearer
    error="insufficient_scope", scope=".."`` unless the space-separated ``scope`` claim holds
    every one of ``scopes``."""
    needed = " ".join(scopes)

    async def dependency(claims: Annotated[Claims, Depends(auth)]) -> Claims:
        granted = _strings(claims.get("scope"), split=True)
        if not set(scopes) <= granted:
            text = f"Scope required: {needed}."
            params = {"error": "insufficient_scope", "error_description": text, "scope": needed}
            headers = {"WWW-Authenticate": _challenge(auth.realm, **params)}
            raise AuthError(403, "forbidden", text, headers)
        return claims

    return dependency


class PrincipalMiddleware:
    """Pure ASGI middleware: for every HTTP request sets ``request.state.principal`` (the
    claims of a valid Bearer token, else None) and ``request.state.principal_error`` (None, a
    reason, ``invalid_request`` for more than one ``Authorization`` header, or
    ``service_unavailable``). It never rejects a request: routes decide."""

    def __init__(self, app: ASGIApp, check: Check) -> None:
        self.app = app
        self.check = check

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            state = scope.setdefault("state", {})
            principal: Claims | None = None
            error: str | None = None
            scope.pop(_VERDICT_KEY, None)  # only a verdict computed here, for this token
            token, ambiguous = request_bearer(scope)
            if ambiguous:
                error = "invalid_request"
            elif token:
                try:
                    verdict = await check_token(self.check, token)
                except ServiceUnavailableError:
                    error = "service_unavailable"
                else:
                    scope[_VERDICT_KEY] = (self.check, token, verdict)
                    principal, error = verdict.claims if verdict.valid else None, verdict.error
            state["principal"] = principal
            state["principal_error"] = error
        await self.app(scope, receive, send)
