"""Frontend endpoints for two-factor login (TOTP, recovery codes) and passwords.

Each calls one use case, which commits its own transaction before it returns: the answer is
never sent before the write it reports. Mails go out after the answer (``BackgroundTasks``).
"""

from __future__ import annotations

from fastapi import APIRouter, BackgroundTasks, Request, Response, status

from auth_service.api.browser import BrowserDep
from auth_service.api.deps import (
    AccessClaimsDep,
    ClientIpDep,
    LoginsDep,
    PasswordsDep,
    TotpDep,
    user_id,
    user_ids,
)
from auth_service.api.routing import JsonRoute
from auth_service.api.schemas.account import (
    Accepted,
    MfaLoginRequest,
    PasswordChangeRequest,
    PasswordForgotRequest,
    PasswordResetRequest,
    RecoveryCodesOut,
    TotpCode,
    TotpDisableRequest,
    TotpSetupOut,
    TotpSetupRequest,
)
from auth_service.api.schemas.auth import BrowserTokenPairOut, TokenPairOut
from auth_service.api.schemas.common import HASHING_503, error_responses
from auth_service.errors import ErrorCode as E
from auth_service.metrics import counting_login

router = APIRouter(prefix="/auth", tags=["users and sessions"], route_class=JsonRoute)


@router.post(
    "/login/mfa",
    response_model=TokenPairOut | BrowserTokenPairOut,
    responses=error_responses(401, 422, 429, 503, s401=(E.INVALID_MFA_CODE, E.INVALID_MFA_TOKEN)),
)
async def login_mfa(
    body: MfaLoginRequest,
    request: Request,
    logins: LoginsDep,
    ip: ClientIpDep,
    browser: BrowserDep,
) -> Response | TokenPairOut:
    """The token pair, as ``POST /auth/login`` answers it (browser mode included)."""
    with counting_login("mfa"):
        pair = await logins.with_second_factor(
            mfa_token=body.mfa_token,
            code=body.code,
            ip=ip,
            user_agent=request.headers.get("user-agent"),
        )
    return browser.answer(pair, request)


@router.post(
    "/mfa/totp/setup",
    response_model=TotpSetupOut,
    responses=error_responses(
        401,
        409,
        422,
        429,
        503,
        s401=(E.INVALID_CREDENTIALS, E.INVALID_TOKEN),
        s409=(E.MFA_ALREADY_ENABLED,),
        s503=HASHING_503,
    ),
)
async def totp_setup(
    body: TotpSetupRequest, claims: AccessClaimsDep, totp: TotpDep
) -> TotpSetupOut:
    """A fresh secret and its ``otpauth://`` URI (for a QR code); inactive until confirmed.
    The current password is required: a stolen access token alone cannot enrol."""
    setup = await totp.begin_setup(user_id=user_id(claims), password=body.password)
    return TotpSetupOut(secret=setup.secret, otpauth_uri=setup.otpauth_uri)


@router.post(
    "/mfa/totp/confirm",
    response_model=RecoveryCodesOut,
    responses=error_responses(
        400, 401, 409, 422, s400=(E.INVALID_MFA_CODE,), s409=(E.MFA_ALREADY_ENABLED,)
    ),
)
async def totp_confirm(
    body: TotpCode, claims: AccessClaimsDep, totp: TotpDep, background: BackgroundTasks
) -> RecoveryCodesOut:
    """Turn TOTP on with a current code; the 10 recovery codes are shown this once. The
    user's other sessions are signed out and the user is mailed."""
    user_id, session_id = user_ids(claims)
    enabled = await totp.confirm_setup(user_id=user_id, session_id=session_id, code=body.code)
    background.add_task(enabled.notify)
    return RecoveryCodesOut(recovery_codes=enabled.recovery_codes)


@router.post(
    "/mfa/totp/disable",
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
    responses=error_responses(
        400,
        401,
        422,
        429,
        503,
        s400=(E.INVALID_MFA_CODE,),
        s503=HASHING_503,
        s401=(E.INVALID_CREDENTIALS, E.INVALID_TOKEN),
    ),
)
async def totp_disable(
    body: TotpDisableRequest,
    claims: AccessClaimsDep,
    totp: TotpDep,
    background: BackgroundTasks,
) -> Response:
    user_id, session_id = user_ids(claims)
    notify = await totp.disable(
        user_id=user_id, session_id=session_id, password=body.password, code=body.code
    )
    background.add_task(notify)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post(
    "/password/change",
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
    responses=error_responses(
        401,
        422,
        429,
        503,
        s401=(E.INVALID_CREDENTIALS, E.INVALID_TOKEN),
        s422=(E.WEAK_PASSWORD,),
        s503=HASHING_503,
    ),
)
async def password_change(
    body: PasswordChangeRequest, claims: AccessClaimsDep, passwords: PasswordsDep
) -> Response:
    """Needs the current password; every other session of the user is revoked."""
    user_id, session_id = user_ids(claims)
    await passwords.change(
        user_id=user_id,
        session_id=session_id,
        current_password=body.current_password,
        new_password=body.new_password,
    )
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post(
    "/password/forgot",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=Accepted,
    responses=error_responses(422, 429, 503),
)
async def password_forgot(
    body: PasswordForgotRequest,
    background: BackgroundTasks,
    passwords: PasswordsDep,
    ip: ClientIpDep,
) -> Accepted:
    """Always 202 with the same body: the account is looked up, and mailed, only after the
    answer has been sent, so neither the answer nor its timing tells whether it exists."""
    follow_up = await passwords.forgot(email=body.email, ip=ip)
    if follow_up is not None:
        background.add_task(follow_up)
    return Accepted()


@router.post(
    "/password/reset",
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
    responses=error_responses(
        400, 422, 503, s400=(E.INVALID_RESET_TOKEN,), s422=(E.WEAK_PASSWORD,), s503=HASHING_503
    ),
)
async def password_reset(body: PasswordResetRequest, passwords: PasswordsDep) -> Response:
    """Sets the new password, burns every outstanding reset token, revokes every session."""
    await passwords.reset(token=body.token, new_password=body.new_password)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
