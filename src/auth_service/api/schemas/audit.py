"""Bodies of the audit endpoints (API.md "Admin")."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field


class AuditEventOut(BaseModel):
    id: int
    at: datetime
    type: str
    actor: str | None
    subject: str | None
    ip: str | None
    request_id: str | None
    details: dict[str, Any]


class AuditPage(BaseModel):
    events: list[AuditEventOut] = Field(description="Newest first.")


class AuditVerdict(BaseModel):
    ok: bool
    checked: int = Field(description="Events verified (from the newest checkpoint on).")
    first_bad_id: int | None = Field(
        default=None, description="The first id that does not verify, when `ok` is false."
    )
