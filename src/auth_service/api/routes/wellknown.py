"""Discovery: the JWKS verifiers cache, and RFC 8414 server metadata.

The metadata lists only what this service serves today, so that no client is sent to a 404:
``issuer``, ``jwks_uri`` and the claims of the access tokens. What it leaves out, and why:

- ``token_endpoint``, ``introspection_endpoint``, ``revocation_endpoint`` and their
  ``*_auth_methods_supported`` / ``*_auth_signing_alg_values_supported``: ``/oauth/*`` is not
  built yet (it returns with the issue that builds it, together with ``client_credentials``).
- ``id_token_signing_alg_values_supported``: this service issues no ID tokens.

Two members stay, as empty lists, and that is the decision on RFC 8414 §2:
``response_types_supported`` is REQUIRED there unconditionally (only ``authorization_endpoint``
is conditional, "unless no grant types are supported that use the authorization endpoint"),
and we serve no response type, so it is ``[]`` rather than dropped. ``grant_types_supported``
is optional but "if omitted, the default value is ["authorization_code", "implicit"]", which
would advertise two grants we do not serve, so it is ``[]`` too. ``token_endpoint`` is
"REQUIRED unless only the implicit grant type is supported": with no grant at all there is no
token endpoint to name, and naming a 404 would be the dishonest choice. The same document is
served at ``/.well-known/openid-configuration`` for verifiers that look for ``jwks_uri`` there;
this service is not an OpenID Provider (no authorization endpoint, no ID tokens), so the
members OpenID Discovery requires only of a provider are not claimed.
"""

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
    client_auth = ["client_secret_basic", "client_secret_post"]
    return ServerMetadata(
        issuer=issuer,
        jwks_uri=f"{issuer}/.well-known/jwks.json",
        token_endpoint=f"{issuer}/oauth/token",
        introspection_endpoint=f"{issuer}/oauth/introspect",
        revocation_endpoint=f"{issuer}/oauth/revoke",
        grant_types_supported=["client_credentials"],
        response_types_supported=[],
        token_endpoint_auth_methods_supported=client_auth,
        introspection_endpoint_auth_methods_supported=client_auth,
        revocation_endpoint_auth_methods_supported=client_auth,
        subject_types_supported=["public"],
        claims_supported=[
            *("iss", "sub", "aud", "exp", "iat", "nbf", "jti"),
            *("sid", "roles", "amr", "client_id", "scope"),
        ],
    )
