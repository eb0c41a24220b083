"""Frontend endpoints for two-factor login (TOTP, recovery codes) and passwords."""

from __future__ import annotations

import uuid
from dataclasses import asdict

from fastapi import APIRouter, BackgroundTasks, Request, Response, status

from auth_service.api.deps import AccessClaimsDep, ClientIpDep, ContainerDep, SessionDep
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
)
from auth_service.api.schemas.auth import TokenPairOut
from auth_service.api.schemas.common import error_responses
from auth_service.db.models import User
from auth_service.errors import ErrorCode as E
from auth_service.errors import UnauthorizedError
from auth_service.services import passwords, totp
from auth_service.services.login import login_with_second_factor

router = APIRouter(prefix="/auth", tags=["users and sessions"])


async def _caller(db: SessionDep, claims: AccessClaimsDep) -> User:
    user = await db.get(User, uuid.UUID(claims["sub"]))
    if user is None:
        raise UnauthorizedError("The access token is not valid (user_disabled).")
    return user


@router.post(
    "/login/mfa",
    response_model=TokenPairOut,
    responses=error_responses(401, 422, 429, 503, s401=(E.INVALID_MFA_CODE, E.INVALID_MFA_TOKEN)),
)
async def login_mfa(
    body: MfaLoginRequest,
    request: Request,
    db: SessionDep,
    container: ContainerDep,
    ip: ClientIpDep,
) -> TokenPairOut:
    pair = await login_with_second_factor(
        container.sessions,
        container.totp,
        db,
        mfa_token=body.mfa_token,
        code=body.code,
        ip=ip,
        user_agent=request.headers.get("user-agent"),
    )
    return TokenPairOut(**asdict(pair))


@router.post(
    "/mfa/totp/setup",
    response_model=TotpSetupOut,
    responses=error_responses(401, 409, s409=(E.MFA_ALREADY_ENABLED,)),
)
async def totp_setup(
    db: SessionDep, claims: AccessClaimsDep, container: ContainerDep
) -> TotpSetupOut:
    """A fresh secret and its ``otpauth://`` URI (for a QR code); inactive until confirmed."""
    user = await _caller(db, claims)
    setup = await totp.begin_setup(container.totp, db, user)
    return TotpSetupOut(secret=setup.secret, otpauth_uri=setup.otpauth_uri)


@router.post(
    "/mfa/totp/confirm",
    response_model=RecoveryCodesOut,
    responses=error_responses(
        400, 401, 409, 422, s400=(E.INVALID_MFA_CODE,), s409=(E.MFA_ALREADY_ENABLED,)
    ),
)
async def totp_confirm(
    body: TotpCode, db: SessionDep, claims: AccessClaimsDep, container: ContainerDep
) -> RecoveryCodesOut:
    """Turn TOTP on with a current code; the 10 recovery codes are shown this once."""
    user = await _caller(db, claims)
    codes = await totp.confirm_setup(container.totp, db, user, body.code.strip())
    return RecoveryCodesOut(recovery_codes=codes)


@router.post(
    "/mfa/totp/disable",
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
    responses=error_responses(
        400, 401, 422, s400=(E.INVALID_MFA_CODE,), s401=(E.INVALID_CREDENTIALS, E.INVALID_TOKEN)
    ),
)
async def totp_disable(
    body: TotpDisableRequest, db: SessionDep, claims: AccessClaimsDep, container: ContainerDep
) -> Response:
    user = await _caller(db, claims)
    await totp.disable(container.totp, db, user, password=body.password, code=body.code.strip())
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post(
    "/password/change",
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
    responses=error_responses(
        401, 422, 429, s401=(E.INVALID_CREDENTIALS, E.INVALID_TOKEN), s422=(E.WEAK_PASSWORD,)
    ),
)
async def password_change(
    body: PasswordChangeRequest, db: SessionDep, claims: AccessClaimsDep, container: ContainerDep
) -> Response:
    """Needs the current password; every other session of the user is revoked."""
    await passwords.change_password(
        container.sessions,
        db,
        container.hasher,
        user_id=uuid.UUID(claims["sub"]),
        session_id=uuid.UUID(claims["sid"]),
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
    container: ContainerDep,
    ip: ClientIpDep,
) -> Accepted:
    """Always 202 with the same body: the account is looked up, and mailed, only after the
    answer has been sent, so neither the answer nor its timing tells whether it exists."""
    email = passwords.canonical_email(body.email)
    await passwords.limit_reset_requests(container.sessions, email=email or "-", ip=ip)
    if email is not None:
        background.add_task(
            passwords.request_reset,
            container.sessions,
            container.sessionmaker,
            container.mailer,
            email=email,
            link_base=container.settings.password_reset_url,
        )
    return Accepted()


@router.post(
    "/password/reset",
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
    responses=error_responses(400, 422, s400=(E.INVALID_RESET_TOKEN,), s422=(E.WEAK_PASSWORD,)),
)
async def password_reset(
    body: PasswordResetRequest, db: SessionDep, container: ContainerDep
) -> Response:
    """Sets the new password, burns every outstanding reset token, revokes every session."""
    await passwords.reset_password(
        container.sessions,
        db,
        container.hasher,
        token=body.token,
        new_password=body.new_password,
    )
    return Response(status_code=status.HTTP_204_NO_CONTENT)
