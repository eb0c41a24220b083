"""Bodies of the webhook endpoints (API.md "Admin")."""

from __future__ import annotations

import uuid
from datetime import datetime

from pydantic import BaseModel, Field


class WebhookCreate(BaseModel):
    url: str = Field(max_length=2048, description="https (http only outside production).")
    event_types: list[str] = Field(max_length=16)


class WebhookOut(BaseModel):
    id: uuid.UUID
    url: str
    event_types: list[str]
    created_at: datetime


class WebhookCreated(WebhookOut):
    secret: str = Field(description="`whsec_...`: verifies `webhook-signature`; shown once.")


class WebhookList(BaseModel):
    webhooks: list[WebhookOut]
