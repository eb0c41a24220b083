"""JWKS (RFC 7517) and discovery (RFC 8414) documents."""

from __future__ import annotations

from pydantic import BaseModel, Field


class JwkPublic(BaseModel):
    kty: str
    kid: str
    use: str
    alg: str
    n: str
    e: str


class JwkSet(BaseModel):
    keys: list[JwkPublic]


class ServerMetadata(BaseModel):
    """RFC 8414 §2 metadata listing only what this service serves (see ``routes/wellknown``)."""

    issuer: str
    jwks_uri: str
    grant_types_supported: list[str] = Field(
        description="Empty: no grant is served yet (omitted would mean authorization_code, "
        "implicit)."
    )
    response_types_supported: list[str] = Field(
        description="Empty: there is no authorization endpoint (RFC 8414 makes this REQUIRED)."
    )
    subject_types_supported: list[str]
    claims_supported: list[str]
