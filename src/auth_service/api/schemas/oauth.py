"""The RFC endpoints' bodies (RFC 6749 §5.1, RFC 7662 §2.2) and the admin client bodies."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field


class TokenForm(BaseModel):
    """``application/x-www-form-urlencoded`` (RFC 6749 §4.4.2)."""

    grant_type: str = Field(examples=["client_credentials"])
    scope: str | None = Field(None, description="Space-separated; default: every allowed one.")
    client_id: str | None = Field(None, description="client_secret_post only")
    client_secret: str | None = Field(None, description="client_secret_post only")


class TokenForms(BaseModel):
    """``token`` (and an optional ``token_type_hint``) as a form (RFC 7662, RFC 7009)."""

    token: str
    token_type_hint: str | None = Field(None, examples=["access_token", "refresh_token"])
    client_id: str | None = Field(None, description="client_secret_post only")
    client_secret: str | None = Field(None, description="client_secret_post only")


class ServiceTokenOut(BaseModel):
    access_token: str
    token_type: str = "Bearer"
    expires_in: int
    scope: str


class IntrospectionOut(BaseModel):
    """``active`` alone for any token that is not live; the rest only for a live one."""

    model_config = ConfigDict(extra="allow")
    active: bool


class ClientCreate(BaseModel):
    name: str = Field(min_length=1, max_length=200)
    scopes: list[str] = Field(default_factory=list, max_length=32)


class ClientOut(BaseModel):
    client_id: str
    name: str
    scopes: list[str]
    created_at: datetime
    secret_rotated_at: datetime | None = None
    previous_secret_expires_at: datetime | None = None


class ClientCreated(ClientOut):
    client_secret: str = Field(description="Shown once; stored only as an argon2id hash.")


class ClientList(BaseModel):
    clients: list[ClientOut]


class SecretRotation(BaseModel):
    overlap_seconds: int = Field(
        86_400, ge=0, le=2_592_000, description="How long the old secret keeps working."
    )


class SecretRotated(BaseModel):
    client_id: str
    client_secret: str = Field(description="Shown once.")
    previous_secret_expires_at: datetime | None
