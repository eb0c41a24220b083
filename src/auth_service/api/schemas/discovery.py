"""JWKS (RFC 7517) and discovery (RFC 8414) documents."""

from __future__ import annotations

from pydantic import BaseModel


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
    issuer: str
    jwks_uri: str
    token_endpoint: str
    introspection_endpoint: str
    revocation_endpoint: str
    grant_types_supported: list[str]
    token_endpoint_auth_methods_supported: list[str]
    introspection_endpoint_auth_methods_supported: list[str]
    revocation_endpoint_auth_methods_supported: list[str]
    response_types_supported: list[str]
    token_endpoint_auth_signing_alg_values_supported: list[str]
    id_token_signing_alg_values_supported: list[str]
    subject_types_supported: list[str]
    claims_supported: list[str]
