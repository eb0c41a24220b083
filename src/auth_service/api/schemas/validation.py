"""Bodies of the backend-service endpoints (/validate...)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field


class ValidateRequest(BaseModel):
    token: str = Field(max_length=16_384)
    token_type: Literal["access"] = "access"


class ValidateResult(BaseModel):
    valid: bool
    claims: dict[str, Any] | None = Field(default=None, description="Present when valid.")
    error: str | None = Field(
        default=None,
        description="When not valid: malformed, invalid_signature, unknown_key, key_revoked, "
        "algorithm_not_allowed, wrong_token_type, expired, not_yet_valid, invalid_issuer, "
        "invalid_audience, token_revoked, session_revoked or user_disabled.",
    )


class BatchRequest(BaseModel):
    tokens: list[str] = Field(min_length=1, max_length=100)


class BatchResult(BaseModel):
    results: list[ValidateResult]
