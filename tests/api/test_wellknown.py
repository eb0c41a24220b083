"""JWKS and discovery as verifiers see them."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import update

from auth_service.db.models import SigningKey
from auth_service.services.key_events import reload_keyring
from tests.support.service import Service

PRIVATE_MEMBERS = {"d", "p", "q", "dp", "dq", "qi"}


async def test_jwks_publishes_the_active_and_the_next_key(service: Service) -> None:
    response = await service.client.get("/.well-known/jwks.json")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    keys = response.json()["keys"]
    assert len(keys) == 2
    snapshot = service.container.keyring.snapshot
    assert snapshot.signing is not None
    assert keys[0]["kid"] == snapshot.signing.kid  # the active key first
    for key in keys:
        assert set(key) == {"kty", "kid", "use", "alg", "n", "e"}
        assert not PRIVATE_MEMBERS & set(key)
        assert (key["kty"], key["use"], key["alg"], key["e"]) == ("RSA", "sig", "RS256", "AQAB")


async def test_jwks_cache_headers_and_conditional_get(service: Service) -> None:
    first = await service.client.get("/.well-known/jwks.json")
    etag = first.headers["etag"]
    assert first.headers["cache-control"] == "public, max-age=300"
    assert etag.startswith('"') and etag.endswith('"') and not etag.startswith("W/")
    for header in (etag, f"W/{etag}", f'"other", {etag}', "*"):
        again = await service.client.get(
            "/.well-known/jwks.json", headers={"If-None-Match": header}
        )
        assert again.status_code == 304, header
        assert again.content == b""
        assert again.headers["etag"] == etag
        assert again.headers["cache-control"] == "public, max-age=300"
    stale = await service.client.get("/.well-known/jwks.json", headers={"If-None-Match": '"x"'})
    assert stale.status_code == 200 and stale.json() == first.json()


async def test_etag_changes_when_the_published_keys_change(service: Service) -> None:
    before = await service.client.get("/.well-known/jwks.json")
    next_kid = before.json()["keys"][1]["kid"]
    async with service.container.db.writer() as session, session.begin():
        await session.execute(
            update(SigningKey).where(SigningKey.kid == next_kid).values(status="revoked")
        )
    assert await reload_keyring(service.container.rotation.keys, service.container.keyring)
    after = await service.client.get(
        "/.well-known/jwks.json", headers={"If-None-Match": before.headers["etag"]}
    )
    assert after.status_code == 200
    assert [key["kid"] for key in after.json()["keys"]] == [before.json()["keys"][0]["kid"]]
    assert after.headers["etag"] != before.headers["etag"]


METADATA_PATHS = ["/.well-known/openid-configuration", "/.well-known/oauth-authorization-server"]
ISSUER = "https://auth.example.test"
# Which request proves each grant type or response type is served (RFC 6749 §4, §3.1.1).
GRANT_REQUESTS = {
    "authorization_code": {"code": "x", "redirect_uri": f"{ISSUER}/cb"},
    "client_credentials": {},
    "password": {"username": "x", "password": "x"},
    "refresh_token": {"refresh_token": "x"},
}


async def _metadata(service: Service, path: str = METADATA_PATHS[0]) -> dict[str, Any]:
    response = await service.client.get(path)
    assert response.status_code == 200
    body: dict[str, Any] = response.json()
    return body


def _local_path(url: str) -> str:
    assert url.startswith(f"{ISSUER}/"), url  # every URL points at this service
    return url.removeprefix(ISSUER)


@pytest.mark.parametrize("path", METADATA_PATHS)
async def test_server_metadata(service: Service, path: str) -> None:
    body = await _metadata(service, path)
    assert body["issuer"] == ISSUER
    assert body["jwks_uri"] == f"{ISSUER}/.well-known/jwks.json"
    # Listed, never omitted: omitted would mean authorization_code + implicit (RFC 8414 §2).
    assert body["grant_types_supported"] == ["client_credentials"]
    assert body["token_endpoint"] == f"{ISSUER}/oauth/token"
    assert body["introspection_endpoint"] == f"{ISSUER}/oauth/introspect"
    assert body["revocation_endpoint"] == f"{ISSUER}/oauth/revoke"
    assert body["response_types_supported"] == []  # RFC 8414: REQUIRED, even when empty
    assert body["subject_types_supported"] == ["public"]
    assert {"iss", "sub", "aud", "exp", "jti", "roles"} <= set(body["claims_supported"])


@pytest.mark.parametrize("path", METADATA_PATHS)
async def test_every_advertised_url_is_served(service: Service, path: str) -> None:
    body = await _metadata(service, path)
    urls = {key: value for key, value in body.items() if key.endswith(("_uri", "_endpoint"))}
    assert "jwks_uri" in urls
    for key, url in urls.items():
        if key.endswith("_uri"):  # documents: jwks_uri, service_documentation, ...
            response = await service.client.get(_local_path(url))
        else:  # the RFC endpoints take forms (RFC 6749, 7009, 7662)
            response = await service.client.post(_local_path(url), data={"token": "x"})
        assert response.status_code not in (404, 405), (key, url, response.status_code)


@pytest.mark.parametrize("path", METADATA_PATHS)
async def test_no_grant_or_response_type_is_listed_that_no_route_serves(
    service: Service, path: str
) -> None:
    body = await _metadata(service, path)
    for grant_type in body["grant_types_supported"]:
        assert grant_type in GRANT_REQUESTS, f"no known request proves {grant_type!r} is served"
        assert "token_endpoint" in body, grant_type
        response = await service.client.post(
            _local_path(body["token_endpoint"]),
            data={"grant_type": grant_type, **GRANT_REQUESTS[grant_type]},
        )
        assert response.status_code not in (404, 405), grant_type
        assert response.json().get("error") != "unsupported_grant_type", grant_type
    for response_type in body["response_types_supported"]:
        assert "authorization_endpoint" in body, response_type
        response = await service.client.get(
            _local_path(body["authorization_endpoint"]),
            params={"response_type": response_type, "client_id": "x"},
        )
        assert response.status_code not in (404, 405), response_type
        assert "unsupported_response_type" not in response.text, response_type
    # Members that only make sense beside a served endpoint or an ID token.
    orphans = {
        "token_endpoint_auth_methods_supported": "token_endpoint",
        "token_endpoint_auth_signing_alg_values_supported": "token_endpoint",
        "introspection_endpoint_auth_methods_supported": "introspection_endpoint",
        "revocation_endpoint_auth_methods_supported": "revocation_endpoint",
        "id_token_signing_alg_values_supported": "authorization_endpoint",
    }
    assert [key for key, needs in orphans.items() if key in body and needs not in body] == []
