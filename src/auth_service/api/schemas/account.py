"""Bodies of the two-factor and password endpoints (API.md "Users and sessions")."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field


class MfaChallengeOut(BaseModel):
    mfa_required: Literal[True] = True
    mfa_token: str
    expires_in: int


class MfaLoginRequest(BaseModel):
    mfa_token: str = Field(max_length=256)
    code: str = Field(max_length=64, description="A 6-digit TOTP code or a recovery code.")


class TotpSetupRequest(BaseModel):
    password: str = Field(max_length=4096, description="The account's current password.")


class TotpSetupOut(BaseModel):
    secret: str
    otpauth_uri: str


class TotpCode(BaseModel):
    code: str = Field(max_length=64)


class RecoveryCodesOut(BaseModel):
    recovery_codes: list[str]


class TotpDisableRequest(BaseModel):
    password: str = Field(max_length=4096)
    code: str = Field(max_length=64)


class PasswordChangeRequest(BaseModel):
    current_password: str = Field(max_length=4096)
    new_password: str = Field(max_length=4096)


class PasswordForgotRequest(BaseModel):
    email: str = Field(max_length=320)


class PasswordResetRequest(BaseModel):
    token: str = Field(max_length=256)
    new_password: str = Field(max_length=4096)


class Accepted(BaseModel):
    status: Literal["accepted"] = "accepted"
    message: str = Field(
        default=("If an account with this email exists, a mail with a reset link is on its way.")
    )
