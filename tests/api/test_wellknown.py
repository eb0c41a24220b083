"""JWKS and discovery as verifiers see them."""

from __future__ import annotations

import pytest
from sqlalchemy import update

from auth_service.db.models import SigningKey
from auth_service.services.key_events import reload_keyring
from tests.conftest import Service

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
    async with service.container.sessionmaker() as session, session.begin():
        await session.execute(
            update(SigningKey).where(SigningKey.kid == next_kid).values(status="revoked")
        )
    assert await reload_keyring(service.container.keys, service.container.keyring)
    after = await service.client.get(
        "/.well-known/jwks.json", headers={"If-None-Match": before.headers["etag"]}
    )
    assert after.status_code == 200
    assert [key["kid"] for key in after.json()["keys"]] == [before.json()["keys"][0]["kid"]]
    assert after.headers["etag"] != before.headers["etag"]


@pytest.mark.parametrize(
    "path", ["/.well-known/openid-configuration", "/.well-known/oauth-authorization-server"]
)
async def test_server_metadata(service: Service, path: str) -> None:
    response = await service.client.get(path)
    assert response.status_code == 200
    body = response.json()
    issuer = "https://auth.example.test"
    assert body["issuer"] == issuer
    assert body["jwks_uri"] == f"{issuer}/.well-known/jwks.json"
    assert body["token_endpoint"] == f"{issuer}/oauth/token"
    assert body["introspection_endpoint"] == f"{issuer}/oauth/introspect"
    assert body["revocation_endpoint"] == f"{issuer}/oauth/revoke"
    assert body["grant_types_supported"] == ["client_credentials"]
    assert body["token_endpoint_auth_methods_supported"] == ["client_secret_basic"]
