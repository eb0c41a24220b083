"""Bodies of the operators' user endpoints (API.md "Admin")."""

from __future__ import annotations

import uuid
from datetime import datetime

from pydantic import BaseModel, Field


class UserSummary(BaseModel):
    id: uuid.UUID
    email: str
    roles: list[str]
    disabled: bool
    mfa_enabled: bool
    created_at: datetime


class UserPageOut(BaseModel):
    users: list[UserSummary]
    next_cursor: str | None = Field(
        description="Pass as `cursor` for the next page; null at the end."
    )


class UserDetailOut(UserSummary):
    last_login_at: datetime | None = Field(description="When the newest session began.")
    active_sessions: int
    email_verified_at: datetime | None = Field(
        description="When the address was verified (link, invitation, reset); null if never."
    )


class InvitationIn(BaseModel):
    email: str = Field(max_length=320)
    roles: list[str] = Field(default_factory=list, max_length=32)


class InvitationOut(BaseModel):
    id: uuid.UUID
    email: str
    roles: list[str]
    invited_by: uuid.UUID | None
    created_at: datetime
    expires_at: datetime


class InvitationCreated(InvitationOut):
    mail_sent: bool = Field(description="Whether the mail with the link was handed over.")


class InvitationList(BaseModel):
    invitations: list[InvitationOut]


class RolesIn(BaseModel):
    roles: list[str] = Field(max_length=32, description="The complete new set of roles.")
