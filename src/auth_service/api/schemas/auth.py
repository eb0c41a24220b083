"""Bodies of the frontend endpoints (/auth/...)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Literal

from pydantic import BaseModel, Field


class UserCreate(BaseModel):
    email: str = Field(
        max_length=320, description="Trimmed and lower-cased; at most 254 after that."
    )
    password: str = Field(max_length=4096, description="12+ characters, at most 1024 UTF-8 bytes.")
    invitation_token: str | None = Field(
        default=None,
        max_length=256,
        description="From an invitation mail: registers this address while registration is"
        " closed, with the invitation's roles.",
    )


class RegistrationAccepted(BaseModel):
    """With AUTH_REQUIRE_EMAIL_VERIFICATION: the one answer, whether or not the address
    already has an account."""

    status: Literal["accepted"] = "accepted"
    message: str = "Check your mail: a link to verify the address is on its way."


class LoginRequest(BaseModel):
    email: str = Field(max_length=320)
    password: str = Field(max_length=4096)


class RefreshRequest(BaseModel):
    refresh_token: str | None = Field(
        default=None,
        max_length=1024,
        description="Required, except in browser mode, where the refresh cookie may carry it.",
    )


class LogoutRequest(BaseModel):
    refresh_token: str | None = Field(default=None, max_length=1024)


class UserCreated(BaseModel):
    id: uuid.UUID
    email: str
    created_at: datetime


class UserMe(BaseModel):
    id: uuid.UUID
    email: str
    roles: list[str]
    mfa_enabled: bool
    email_verified: bool
    created_at: datetime


class TokenPairOut(BaseModel):
    access_token: str
    token_type: str = "Bearer"
    expires_in: int
    refresh_token: str
    refresh_expires_in: int


class BrowserTokenPairOut(BaseModel):
    """Browser mode: the refresh token is in an HttpOnly cookie, never in the body."""

    access_token: str
    token_type: str = "Bearer"
    expires_in: int
    refresh_expires_in: int
    csrf_token: str = Field(description="Send it as X-CSRF-Token with the refresh cookie.")


class SessionOut(BaseModel):
    id: uuid.UUID
    created_at: datetime
    last_used_at: datetime
    ip: str | None
    user_agent: str | None
    current: bool


class SessionList(BaseModel):
    sessions: list[SessionOut]
