"""Browser mode (``AUTH_REFRESH_COOKIE=true``): the refresh token in an HttpOnly cookie, and the
CSRF double submit that guards every request the cookie authenticates (docs/design/browser.md).

Cookies are issued to requests that carry an ``Origin`` (every browser ``fetch`` POST does;
server-side clients do not), so body-token clients keep their JSON pair. A cookie is accepted
from any request, but only with ``X-CSRF-Token`` equal to the CSRF cookie and to the HMAC of the
refresh cookie (``crypto/csrf.py``); the check runs before any database work.
"""

from __future__ import annotations

import re
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
# A refresh token is token_urlsafe(32); the service never issues more than 128 characters.
_TOKEN = re.compile(r"[A-Za-z0-9_-]{1,128}")
_MAX_DUPLICATES = 4  # pairs tried per request: bounded HMAC work


def cookie_values(request: Request, name: str) -> list[str]:
    """Every value of cookie ``name`` in the request's Cookie headers, in order."""
    found: list[str] = []
    for header in request.headers.getlist("cookie"):
        for part in header.split(";"):
            key, sep, value = part.strip().partition("=")
            if sep and key.strip() == name:
                found.append(value.strip())
    return found


class BrowserMode:
    def __init__(self, settings: Settings) -> None:
        self.enabled = settings.refresh_cookie
        self.path = settings.refresh_cookie_path.rstrip("/") or "/"
        prefix = "__Host-" if self.path == "/" else "__Secure-"  # __Host- requires Path=/
        self.refresh_cookie = f"{prefix}refresh_token"
        self.csrf_cookie = f"{prefix}csrf_token"
        self._csrf = CsrfBinding(settings.secret_values()) if self.enabled else None

    def issues_cookies(self, request: Request) -> bool:
        return self.enabled and "origin" in request.headers

    def cookie_tokens(self, request: Request) -> list[str] | None:
        """The refresh cookies' well-formed tokens: None when browser mode is off or no refresh
        cookie came, ``[]`` when every one is malformed (the caller clears them). A browser
        sends every cookie of the name it holds (a sibling subdomain can add one with
        ``Domain=``), so all of them are candidates, not only the one a parser keeps."""
        if not self.enabled:
            return None
        values = cookie_values(request, self.refresh_cookie)
        if not values:
            return None
        return [value for value in values if _TOKEN.fullmatch(value)]

    def authenticated(self, request: Request, candidates: list[str]) -> str:
        """The candidate whose HMAC equals ``X-CSRF-Token`` and one CSRF cookie; else
        ``CsrfFailedError``. Planted pairs beside the victim's neither pass nor block it."""
        assert self._csrf is not None  # cookie_tokens is None while browser mode is off
        header = request.headers.get(CSRF_HEADER)
        csrf_cookies = cookie_values(request, self.csrf_cookie)[:_MAX_DUPLICATES]
        for token in candidates[:_MAX_DUPLICATES]:
            for csrf in csrf_cookies:
                if self._csrf.verify(token, csrf, header):
                    return token
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


async def browser_of(request: Request) -> BrowserMode:
    mode: BrowserMode = request.app.state.browser
    return mode


BrowserDep = Annotated[BrowserMode, Depends(browser_of)]
