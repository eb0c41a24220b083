"""POST /oauth/token (RFC 6749 §4.4): client credentials, scopes, the form, the errors."""

from __future__ import annotations

import base64
import json

import pytest

from tests.support.http import register_and_login, validate
from tests.support.oauth import ServiceClient, form, new_client, service_token
from tests.support.service import Service

GRANT = {"grant_type": "client_credentials"}


def _no_store(response: object) -> None:
    headers = response.headers  # type: ignore[attr-defined]
    assert headers["cache-control"] == "no-store"
    assert headers["pragma"] == "no-cache"


async def test_a_client_gets_a_service_token_with_basic_auth(service: Service) -> None:
    client = await new_client(service, scopes=["billing:read", "billing:write"])
    response = await form(service, "/oauth/token", GRANT, client)
    assert response.status_code == 200, response.text
    _no_store(response)
    body = response.json()
    assert set(body) == {"access_token", "token_type", "expires_in", "scope"}
    assert body["token_type"] == "Bearer"
    assert body["expires_in"] == service.container.settings.access_token_ttl_seconds
    assert body["scope"] == "billing:read billing:write"  # omitted: every allowed scope
    checked = await validate(service, body["access_token"], client.basic)
    assert checked["valid"] is True
    claims = checked["claims"]
    assert claims["sub"] == claims["client_id"] == client.client_id
    assert claims["scope"] == "billing:read billing:write"
    assert "sid" not in claims and "amr" not in claims


async def test_client_secret_post_works_too(service: Service) -> None:
    client = await new_client(service)
    response = await form(service, "/oauth/token", {**GRANT, **client.post_credentials})
    assert response.status_code == 200, response.text


async def test_a_narrower_scope_is_granted_and_a_wider_one_refused(service: Service) -> None:
    client = await new_client(service, scopes=["a", "b"])
    token = await service_token(service, client, scope="b")
    assert (await validate(service, token, client.basic))["claims"]["scope"] == "b"
    for asked in ("c", "a c", "a\tb", "admin", "a  b", "a" * 3000):
        refused = await form(service, "/oauth/token", {**GRANT, "scope": asked}, client)
        assert refused.status_code == 400, asked
        assert refused.json()["error"] == "invalid_scope", asked
        _no_store(refused)


async def test_a_client_without_scopes_cannot_ask_for_one(service: Service) -> None:
    client = await new_client(service)
    refused = await form(service, "/oauth/token", {**GRANT, "scope": "revoke"}, client)
    assert refused.json()["error"] == "invalid_scope"


async def test_wrong_or_missing_client_auth_is_401_with_a_challenge(service: Service) -> None:
    client = await new_client(service)
    wrong = ServiceClient(client.client_id, client.secret + "x")
    for headers in ({}, wrong.basic, {"Authorization": "Basic !!!"}):
        response = await service.client.post("/oauth/token", data=GRANT, headers=headers)
        assert response.status_code == 401
        assert response.json()["error"] == "invalid_client"
        assert response.headers["www-authenticate"].startswith("Basic")
        _no_store(response)
    posted = await form(service, "/oauth/token", {**GRANT, **wrong.post_credentials})
    assert posted.status_code == 401


async def test_two_auth_methods_at_once_are_refused(service: Service) -> None:
    client = await new_client(service)
    response = await form(service, "/oauth/token", {**GRANT, **client.post_credentials}, client)
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_request"


async def test_a_basic_client_id_that_disagrees_with_the_form_is_refused(
    service: Service,
) -> None:
    client, other = await new_client(service), await new_client(service, name="other")
    data = {**GRANT, "client_id": other.client_id}
    assert (await form(service, "/oauth/token", data, client)).status_code == 401


async def test_other_grants_are_unsupported(service: Service) -> None:
    client = await new_client(service)
    for grant in ("password", "authorization_code", "refresh_token", "urn:x", ""):
        response = await form(service, "/oauth/token", {"grant_type": grant}, client)
        assert response.status_code == 400, grant
        expected = "invalid_request" if not grant else "unsupported_grant_type"
        assert response.json()["error"] == expected, grant


@pytest.mark.parametrize(
    ("content_type", "body"),
    [
        ("application/json", json.dumps(GRANT).encode()),
        ("text/plain", b"grant_type=client_credentials"),
        ("multipart/form-data; boundary=x", b"--x--"),
    ],
)
async def test_a_body_that_is_not_a_form_is_415(
    service: Service, content_type: str, body: bytes
) -> None:
    client = await new_client(service)
    response = await service.client.post(
        "/oauth/token", content=body, headers={**client.basic, "Content-Type": content_type}
    )
    assert response.status_code == 415, response.text
    assert response.json()["error"] == "unsupported_media_type"
    _no_store(response)


@pytest.mark.parametrize(
    ("content_type", "body"),
    [
        ("application/x-www-form-urlencoded", b"grant_type=client_credentials&grant_type=x"),
        ("application/x-www-form-urlencoded", b"\xff\xfe=\x00"),
        ("application/x-www-form-urlencoded", b"grant_type"),
        ("application/x-www-form-urlencoded", "&".join(f"f{n}=1" for n in range(40)).encode()),
    ],
)
async def test_a_form_that_is_not_one_clean_form_is_400(
    service: Service, content_type: str, body: bytes
) -> None:
    client = await new_client(service)
    response = await service.client.post(
        "/oauth/token", content=body, headers={**client.basic, "Content-Type": content_type}
    )
    assert response.status_code == 400, response.text
    assert response.json()["error"] == "invalid_request"
    assert "traceback" not in response.text.lower()
    _no_store(response)


async def test_a_duplicated_secret_parameter_is_not_echoed(service: Service) -> None:
    client = await new_client(service)
    data = [("client_secret", client.secret), ("client_secret", "y"), ("grant_type", "x")]
    response = await form(service, "/oauth/token", data)
    assert response.status_code == 400
    assert client.secret not in response.text


async def test_an_attacker_chosen_parameter_name_is_not_echoed(service: Service) -> None:
    client = await new_client(service)
    data = [("<script>", "1"), ("<script>", "2"), *GRANT.items()]
    response = await form(service, "/oauth/token", data, client)
    assert response.status_code == 400 and "<script>" not in response.text


async def test_a_service_token_cannot_act_as_a_user(service: Service) -> None:
    token = await service_token(service, await new_client(service))
    me = await service.client.get("/auth/me", headers={"Authorization": f"Bearer {token}"})
    assert me.status_code == 401


async def test_a_deleted_client_is_refused_at_once_and_its_tokens_are_revoked(
    service: Service,
) -> None:
    client, watcher = await new_client(service), await new_client(service, name="watcher")
    token = await service_token(service, client)  # its secret is now cached
    await service.container.clients.delete(client.client_id)
    assert (await form(service, "/oauth/token", GRANT, client)).status_code == 401
    assert (await validate(service, token, watcher.basic)) == {
        "valid": False,
        "error": "token_revoked",
    }


async def test_a_user_token_is_not_a_client_credential(service: Service) -> None:
    user = await register_and_login(service)
    raw = base64.b64encode(f"{user.user_id}:{user.pair['access_token']}".encode()).decode()
    response = await service.client.post(
        "/oauth/token", data=GRANT, headers={"Authorization": f"Basic {raw}"}
    )
    assert response.status_code == 401


async def test_tokens_a_deleted_client_got_after_its_delete_are_revoked_too(
    service: Service,
) -> None:
    """Attack (third review): the delete revoked the client's tokens issued up to its
    whole second; an instance that had not yet heard of it issued more, which passed."""
    from auth_service.services.tokens import TokenIssuer, TokenPolicy

    client, watcher = await new_client(service), await new_client(service, name="watcher")
    await service.container.clients.delete(client.client_id)
    service.container.clock.advance(5)  # type: ignore[attr-defined]
    stale = TokenIssuer(
        service.container.keyring, TokenPolicy.from_settings(service.container.settings)
    )
    late = stale.service_token(
        now=service.container.clock.now(), client_id=client.client_id, scopes=[]
    )  # what a stale instance would still have signed
    assert (await validate(service, late.token, watcher.basic)) == {
        "valid": False,
        "error": "token_revoked",
    }
    store = service.container.store  # the store comes back empty: rebuilt from the database
    for key, _value, _ttl in await store.scan("revoked:"):
        await store.delete(key)
    assert (await validate(service, late.token, watcher.basic))["error"] == "token_revoked"


async def test_a_nul_in_a_client_name_is_refused_not_a_500(service: Service) -> None:
    from auth_service.errors import InvalidRequestError

    with pytest.raises(InvalidRequestError):
        await service.container.clients.create(name="a\x00b")
    with pytest.raises(InvalidRequestError):
        await service.container.clients.create(name="line\nbreak")


async def test_an_invalid_percent_escape_is_invalid_request(service: Service) -> None:
    client = await new_client(service, scopes=["a"])
    response = await service.client.post(
        "/oauth/token",
        content=b"grant_type=client_credentials&scope=%ff",
        headers={**client.basic, "Content-Type": "application/x-www-form-urlencoded"},
    )
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_request"


async def test_a_deleted_client_has_no_scopes_to_read(service: Service) -> None:
    """Review of this change: the scopes of a client not in the verified cache were read
    from its row without looking at ``deleted_at``, so a request authenticated just before
    a delete could still get (and, with ``revoke``, use) the deleted client's scopes."""
    client = await new_client(service, scopes=["orders:read", "revoke"])
    clients = service.container.clients
    assert await clients.allowed_scopes(client.client_id) == ("orders:read", "revoke")
    await clients.delete(client.client_id)
    assert await clients.allowed_scopes(client.client_id) == ()
