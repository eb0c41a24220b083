"""Frontend endpoints: register, login, refresh, logout, me, sessions.

Each calls one use case, which commits its own transaction before it returns: the answer is
never sent before the write it reports (a failed commit is a 503, not a success).
"""

from __future__ import annotations

import uuid
from dataclasses import asdict
from typing import Any

from fastapi import APIRouter, BackgroundTasks, Request, Response, status
from fastapi.routing import APIRoute
from pydantic import TypeAdapter

from auth_service.api.browser import BrowserDep, BrowserMode
from auth_service.api.deps import (
    AccessClaimsDep,
    AccountsDep,
    ClientIpDep,
    LoginsDep,
    OptionalAccessClaimsDep,
    RegistrationsDep,
    SessionsDep,
    container_of,
    user_id,
)
from auth_service.api.direct import (
    DirectRoute,
    json_response,
    optional_json_body,
    request_body_schema,
)
from auth_service.api.routing import JsonRoute, require_json
from auth_service.api.schemas.account import MfaChallengeOut
from auth_service.api.schemas.auth import (
    BrowserTokenPairOut,
    LoginRequest,
    LogoutRequest,
    RefreshRequest,
    RegistrationAccepted,
    SessionList,
    SessionOut,
    TokenPairOut,
    UserCreate,
    UserCreated,
    UserMe,
)
from auth_service.api.schemas.common import HASHING_503, error_responses
from auth_service.errors import ErrorCode as E
from auth_service.errors import (
    InvalidRefreshTokenError,
    InvalidRequestError,
    UnauthorizedError,
)
from auth_service.metrics import counting_login
from auth_service.services.login import MfaChallenge
from auth_service.services.registration import Pending
from auth_service.services.sessions import TokenPair

router = APIRouter(prefix="/auth", tags=["users and sessions"], route_class=JsonRoute)

_401 = error_responses(401)
_422 = error_responses(422)
_CSRF_403 = error_responses(403, s403=(E.CSRF_FAILED,))


def _pair_out(pair: TokenPair) -> TokenPairOut:
    return TokenPairOut(**asdict(pair))


@router.post(
    "/register",
    status_code=status.HTTP_201_CREATED,
    response_model=UserCreated | RegistrationAccepted,
    responses={
        202: {
            "model": RegistrationAccepted,
            "description": "AUTH_REQUIRE_EMAIL_VERIFICATION: the same answer for every address",
        },
        **error_responses(
            400,
            409,
            403,
            422,
            429,
            503,
            s400=(E.INVALID_INVITATION,),
            s409=(E.EMAIL_TAKEN,),
            s403=(E.REGISTRATION_CLOSED,),
            s422=(E.INVALID_REQUEST, E.WEAK_PASSWORD),
            s503=HASHING_503,
        ),
    },
)
async def register(
    body: UserCreate,
    response: Response,
    background: BackgroundTasks,
    registrations: RegistrationsDep,
    ip: ClientIpDep,
) -> UserCreated | RegistrationAccepted:
    """201 and the account; with an ``invitation_token`` also while registration is closed.
    With AUTH_REQUIRE_EMAIL_VERIFICATION (and no invitation): 202, the same body whether or
    not the address has an account; the verification mail goes after the answer."""
    outcome = await registrations.register(
        email=body.email, password=body.password, ip=ip, invitation=body.invitation_token
    )
    if isinstance(outcome, Pending):
        if outcome.mail is not None:
            background.add_task(outcome.mail)
        response.status_code = status.HTTP_202_ACCEPTED
        return RegistrationAccepted()
    return UserCreated(id=outcome.id, email=outcome.email, created_at=outcome.created_at)


@router.post(
    "/login",
    response_model=TokenPairOut | BrowserTokenPairOut | MfaChallengeOut,
    responses=error_responses(
        401,
        403,
        422,
        429,
        503,
        s401=(E.INVALID_CREDENTIALS,),
        s403=(E.ACCOUNT_DISABLED,),
        s503=HASHING_503,
    ),
)
async def login(
    body: LoginRequest, request: Request, logins: LoginsDep, ip: ClientIpDep, browser: BrowserDep
) -> Response | TokenPairOut | MfaChallengeOut:
    """A token pair, or for a user with TOTP on ``{mfa_required, mfa_token, expires_in}``.
    In browser mode a browser gets the refresh token as a cookie, and ``csrf_token``."""
    with counting_login("password") as outcome:
        pair = await logins.with_password(
            email=body.email,
            password=body.password,
            ip=ip,
            user_agent=request.headers.get("user-agent"),
        )
        if isinstance(pair, MfaChallenge):
            outcome.append("mfa_required")
            return MfaChallengeOut(mfa_token=pair.mfa_token, expires_in=pair.expires_in)
    return browser.answer(pair, request)


async def refresh(request: Request) -> Response:
    """A token in the body is rotated and answered in the body. In browser mode, without one,
    the refresh cookie is, with ``X-CSRF-Token``; the answer sets new cookies."""
    # On DirectRoute (api/direct.py), answered by the lane (api/fast_lane.py): what the route
    # class, FastAPI and the response model did is done here, in their order (415 for a body
    # that is not JSON, then the body's 422); tests/api/test_refresh_direct.py replays every
    # kind of request against the route as FastAPI ran it.
    require_json(request.headers)
    body = await optional_json_body(request, _REFRESH_BODY)
    sessions = container_of(request).sessions
    browser: BrowserMode = request.app.state.browser
    if body is not None and body.refresh_token is not None:
        return json_response(_pair_json(await sessions.refresh(body.refresh_token)))
    candidates = browser.cookie_tokens(request)
    if candidates is None:
        if browser.enabled:
            raise InvalidRefreshTokenError("No refresh token: neither in the body nor a cookie.")
        raise InvalidRequestError("refresh_token: Field required")
    if not candidates:
        return browser.refused(InvalidRefreshTokenError("The refresh cookie is malformed."))
    from_cookie = browser.authenticated(request, candidates)
    try:
        return browser.token_answer(await sessions.refresh(from_cookie))
    except UnauthorizedError as exc:  # invalid or reused: the cookies are dead too
        return browser.refused(exc)


_REFRESH_BODY: TypeAdapter[RefreshRequest | None] = TypeAdapter(RefreshRequest | None)


def _pair_json(pair: TokenPair) -> dict[str, Any]:
    """``TokenPairOut``'s fields, in its order (as FastAPI's response model wrote them)."""
    return {
        "access_token": pair.access_token,
        "token_type": pair.token_type,
        "expires_in": pair.expires_in,
        "refresh_token": pair.refresh_token,
        "refresh_expires_in": pair.refresh_expires_in,
    }


router.add_api_route(
    "/refresh",
    refresh,
    methods=["POST"],
    route_class_override=DirectRoute,
    response_model=TokenPairOut | BrowserTokenPairOut,
    responses={
        **error_responses(401, 415, 422, s401=(E.INVALID_REFRESH_TOKEN, E.REFRESH_TOKEN_REUSED)),
        **_CSRF_403,
    },
    openapi_extra=request_body_schema(RefreshRequest, required=False),
)


def hot_routes() -> list[APIRoute]:
    """The routes the lane answers (api/fast_lane.py): POST /auth/refresh."""
    return [r for r in router.routes if isinstance(r, APIRoute) and r.endpoint is refresh]


@router.post(
    "/logout",
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
    responses={**_401, **_422, **_CSRF_403},
)
async def logout(
    request: Request,
    claims: OptionalAccessClaimsDep,
    sessions: SessionsDep,
    browser: BrowserDep,
    body: LogoutRequest | None = None,
) -> Response:
    """Bearer: this session and this access token. In browser mode, the refresh cookie with
    ``X-CSRF-Token`` may stand in for the Bearer; either way the cookies are cleared."""
    done = Response(status_code=status.HTTP_204_NO_CONTENT)
    if claims is not None:
        await sessions.logout(claims=claims)
        return browser.clear(done) if browser.enabled else done
    candidates = browser.cookie_tokens(request)
    if candidates is None:
        raise UnauthorizedError("A Bearer access token is required.")
    if not candidates:
        return browser.refused(InvalidRefreshTokenError("The refresh cookie is malformed."))
    from_cookie = browser.authenticated(request, candidates)
    await sessions.logout_with_refresh(from_cookie)
    return browser.clear(done)


@router.post(
    "/logout-all", status_code=status.HTTP_204_NO_CONTENT, response_class=Response, responses=_401
)
async def logout_all(claims: AccessClaimsDep, sessions: SessionsDep) -> Response:
    await sessions.logout_all(user_id=user_id(claims))
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get("/me", response_model=UserMe, responses=_401)
async def me(claims: AccessClaimsDep, accounts: AccountsDep) -> UserMe:
    user = await accounts.me(user_id(claims))
    return UserMe(
        id=user.id,
        email=user.email,
        roles=list(user.roles),
        mfa_enabled=user.mfa_enabled,
        email_verified=user.email_verified_at is not None,
        created_at=user.created_at,
    )


@router.get("/sessions", response_model=SessionList, responses=_401)
async def list_sessions(claims: AccessClaimsDep, sessions: SessionsDep) -> SessionList:
    rows = await sessions.live(user_id=user_id(claims))
    return SessionList(
        sessions=[
            SessionOut(
                id=row.id,
                created_at=row.created_at,
                last_used_at=row.last_used_at,
                ip=row.ip,
                user_agent=row.user_agent,
                current=str(row.id) == claims["sid"],
            )
            for row in rows
        ]
    )


@router.delete(
    "/sessions/{session_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
    responses={**_401, **error_responses(404)},
)
async def delete_session(
    session_id: uuid.UUID, claims: AccessClaimsDep, sessions: SessionsDep
) -> Response:
    await sessions.delete(user_id=user_id(claims), session_id=session_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
