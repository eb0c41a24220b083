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
    token_endpoint: str
    introspection_endpoint: str
    revocation_endpoint: str
    grant_types_supported: list[str] = Field(
        description="Only client_credentials: users log in at /auth/login, not by OAuth."
    )
    response_types_supported: list[str] = Field(
        description="Empty: there is no authorization endpoint (RFC 8414 makes this REQUIRED)."
    )
    token_endpoint_auth_methods_supported: list[str]
    introspection_endpoint_auth_methods_supported: list[str]
    revocation_endpoint_auth_methods_supported: list[str]
    subject_types_supported: list[str]
    claims_supported: list[str]
