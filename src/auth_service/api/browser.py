"""Browser mode (``AUTH_REFRESH_COOKIE=true``): the refresh token in an HttpOnly cookie, and the
CSRF double submit that guards every request the cookie authenticates (docs/design/browser.md).

Cookies are issued to requests that carry an ``Origin`` (every browser ``fetch`` POST does;
server-side clients do not), so body-token clients keep their JSON pair. A cookie is accepted
from any request, but only with ``X-CSRF-Token`` equal to the CSRF cookie and to the HMAC of the
refresh cookie (``crypto/csrf.py``); the check runs before any database work.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Annotated, Any

from fastapi import Depends, Request
from fastapi.responses import JSONResponse, Response

from auth_service.api.errors import error_body
from auth_service.api.schemas.auth import TokenPairOut
from auth_service.crypto.csrf import CsrfBinding
from auth_service.errors import AuthError, CsrfFailedError
from auth_service.services.sessions import TokenPair
from auth_service.settings import Settings

CSRF_HEADER = "x-csrf-token"
_MAX_COOKIE_TOKEN = 1024


class BrowserMode:
    def __init__(self, settings: Settings) -> None:
        self.enabled = settings.refresh_cookie
        self.path = settings.refresh_cookie_path.rstrip("/") or "/"
        prefix = "__Host-" if self.path == "/" else "__Secure-"  # __Host- requires Path=/
        self.refresh_cookie = f"{prefix}refresh_token"
        self.csrf_cookie = f"{prefix}csrf_token"
        self._csrf = CsrfBinding(settings.secret_value()) if self.enabled else None

    def issues_cookies(self, request: Request) -> bool:
        return self.enabled and "origin" in request.headers

    def cookie_token(self, request: Request) -> str | None:
        """The refresh cookie's token, or None (browser mode off, no cookie, or garbage)."""
        if not self.enabled:
            return None
        token = request.cookies.get(self.refresh_cookie)
        return token if token and len(token) <= _MAX_COOKIE_TOKEN else None

    def check_csrf(self, request: Request, refresh_token: str) -> None:
        """``CsrfFailedError`` unless header, cookie and the token's HMAC are one value."""
        assert self._csrf is not None  # cookie_token is None while browser mode is off
        header = request.headers.get(CSRF_HEADER)
        cookie = request.cookies.get(self.csrf_cookie)
        if not self._csrf.verify(refresh_token, cookie, header):
            raise CsrfFailedError()

    def answer(self, pair: TokenPair, request: Request) -> JSONResponse | TokenPairOut:
        """A browser (browser mode on, the request has an Origin) gets the cookies and no
        refresh token in the body; every other client its JSON pair."""
        if self.issues_cookies(request):
            return self.token_answer(pair)
        return TokenPairOut(**asdict(pair))

    def token_answer(self, pair: TokenPair) -> JSONResponse:
        """The pair without its refresh token, plus ``csrf_token``; both cookies set."""
        assert self._csrf is not None
        csrf = self._csrf.token_for(pair.refresh_token)
        body: dict[str, Any] = {
            "access_token": pair.access_token,
            "token_type": pair.token_type,
            "expires_in": pair.expires_in,
            "refresh_expires_in": pair.refresh_expires_in,
            "csrf_token": csrf,
        }
        response = JSONResponse(body)
        for name, value in ((self.refresh_cookie, pair.refresh_token), (self.csrf_cookie, csrf)):
            response.set_cookie(
                name,
                value,
                max_age=pair.refresh_expires_in,
                path=self.path,
                secure=True,
                httponly=True,
                samesite="strict",
            )
        return response

    def clear(self, response: Response) -> Response:
        for name in (self.refresh_cookie, self.csrf_cookie):
            response.delete_cookie(
                name, path=self.path, secure=True, httponly=True, samesite="strict"
            )
        return response

    def refused(self, exc: AuthError) -> Response:
        """An error of the cookie flow: the contract's body, and both cookies cleared."""
        answer = JSONResponse(
            error_body(exc.code.value, exc.description),
            status_code=exc.status_code,
            headers=exc.headers,
        )
        return self.clear(answer)


def browser_of(request: Request) -> BrowserMode:
    mode: BrowserMode = request.app.state.browser
    return mode


BrowserDep = Annotated[BrowserMode, Depends(browser_of)]
