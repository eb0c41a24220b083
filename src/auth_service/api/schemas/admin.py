"""Operator endpoints' bodies (API.md "Admin")."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel


class KeyInfo(BaseModel):
    kid: str
    alg: str
    status: str
    created_at: datetime
    activated_at: datetime | None
    retired_at: datetime | None
    expires_at: datetime | None
    revoked_at: datetime | None


class KeyList(BaseModel):
    keys: list[KeyInfo]


class RotateResult(BaseModel):
    active_kid: str
    previous_kid: str | None


class LastRotation(BaseModel):
    at: datetime
    active_kid: str
    previous_kid: str


class RotationStatusBody(BaseModel):
    active_kid: str | None
    active_since: datetime | None
    next_rotation_at: datetime | None
    interval_hours: float
    published_keys: list[str]
    last_rotation: LastRotation | None


class RevokeKeyResult(BaseModel):
    kid: str
    status: str
    active_kid: str
