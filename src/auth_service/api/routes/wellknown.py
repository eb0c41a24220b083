"""Discovery: the JWKS verifiers cache, and RFC 8414 server metadata."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response

from auth_service.api.deps import KeyRingDep, SettingsDep
from auth_service.api.schemas.discovery import JwkSet, ServerMetadata

router = APIRouter(tags=["discovery"])


def etag_matches(if_none_match: str | None, etag: str) -> bool:
    """RFC 9110 §13.1.2: weak comparison, a list of tags, or ``*``."""
    if not if_none_match:
        return False
    if if_none_match.strip() == "*":
        return True
    candidates = {tag.strip().removeprefix("W/") for tag in if_none_match.split(",")}
    return etag in candidates


@router.get(
    "/.well-known/jwks.json",
    response_model=JwkSet,
    summary="Public keys that verify live tokens, plus the next signing key",
    responses={304: {"description": "Not modified (If-None-Match matched the ETag)."}},
)
async def get_jwks(request: Request, keyring: KeyRingDep, settings: SettingsDep) -> Response:
    document = keyring.snapshot.jwks
    headers = {
        "Cache-Control": f"public, max-age={settings.jwks_max_age_seconds}",
        "ETag": document.etag,
    }
    if etag_matches(request.headers.get("if-none-match"), document.etag):
        return Response(status_code=304, headers=headers)
    return Response(document.body, media_type="application/json", headers=headers)


@router.get(
    "/.well-known/openid-configuration",
    response_model=ServerMetadata,
    summary="Server metadata (RFC 8414 / OpenID discovery)",
)
@router.get(
    "/.well-known/oauth-authorization-server",
    response_model=ServerMetadata,
    include_in_schema=False,
)
async def get_server_metadata(settings: SettingsDep) -> ServerMetadata:
    issuer = settings.issuer
    return ServerMetadata(
        issuer=issuer,
        jwks_uri=f"{issuer}/.well-known/jwks.json",
        token_endpoint=f"{issuer}/oauth/token",
        introspection_endpoint=f"{issuer}/oauth/introspect",
        revocation_endpoint=f"{issuer}/oauth/revoke",
        grant_types_supported=["client_credentials"],
        token_endpoint_auth_methods_supported=["client_secret_basic"],
        introspection_endpoint_auth_methods_supported=["client_secret_basic"],
        revocation_endpoint_auth_methods_supported=["client_secret_basic"],
        response_types_supported=["token"],
        token_endpoint_auth_signing_alg_values_supported=list(settings.allowed_algorithms),
        id_token_signing_alg_values_supported=list(settings.allowed_algorithms),
        subject_types_supported=["public"],
        claims_supported=["iss", "sub", "aud", "exp", "iat", "nbf", "jti", "sid", "roles", "amr"],
    )
