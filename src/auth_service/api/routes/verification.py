"""Email verification endpoints (AUTH_REQUIRE_EMAIL_VERIFICATION; beyond API.md)."""

from __future__ import annotations

from fastapi import APIRouter, BackgroundTasks, Response, status
from pydantic import BaseModel, Field

from auth_service.api.deps import ClientIpDep, VerificationDep
from auth_service.api.routing import JsonRoute
from auth_service.api.schemas.auth import RegistrationAccepted
from auth_service.api.schemas.common import HASHING_503, error_responses
from auth_service.errors import ErrorCode as E

router = APIRouter(prefix="/auth/verify-email", tags=["users and sessions"], route_class=JsonRoute)


class VerifyEmailRequest(BaseModel):
    token: str = Field(max_length=256)
    password: str = Field(max_length=4096, description="The password chosen at registration.")


class ResendRequest(BaseModel):
    email: str = Field(max_length=320)


@router.post(
    "",
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
    responses=error_responses(
        400,
        401,
        422,
        429,
        503,
        s400=(E.INVALID_VERIFICATION_TOKEN,),
        s401=(E.INVALID_CREDENTIALS,),
        s503=HASHING_503,
    ),
)
async def verify_email(body: VerifyEmailRequest, verification: VerificationDep) -> Response:
    """The token from the verification mail and the account's password: the address is
    verified (the account can log in); every other outstanding link is used up."""
    await verification.verify(body.token, body.password)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post(
    "/resend",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=RegistrationAccepted,
    responses=error_responses(422, 429, 503),
)
async def resend_verification(
    body: ResendRequest,
    background: BackgroundTasks,
    verification: VerificationDep,
    ip: ClientIpDep,
) -> RegistrationAccepted:
    """Always 202 with the same body; an unverified account is looked up and mailed only
    after the answer. Limited per address and per client IP (429)."""
    follow_up = await verification.resend(email=body.email, ip=ip)
    if follow_up is not None:
        background.add_task(follow_up)
    return RegistrationAccepted()
