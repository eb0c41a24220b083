"""Third-party OAuth clients against a served instance (not our own code): Authlib's
client gets a client-credentials token, introspects and revokes it; requests-oauthlib's
BackendApplicationClient gets one; pyjwt's PyJWKClient verifies it from JWKS."""

from __future__ import annotations

import subprocess
from pathlib import Path

import jwt
import pytest
from authlib.integrations.requests_client import OAuth2Session as OAuth2Client
from oauthlib.oauth2 import BackendApplicationClient
from requests_oauthlib import OAuth2Session

from tests.support.processes import BIN

pytestmark = pytest.mark.slow


@pytest.fixture
def credentials(environment: dict[str, str], tmp_path: Path) -> tuple[str, str]:
    created = subprocess.run(
        [BIN, "clients", "create", "interop", "--scope", "orders:read", "--scope", "orders:write"],
        env=environment,
        check=True,
        capture_output=True,
        text=True,
        cwd=tmp_path,
    ).stdout
    lines = dict(line.split("=", 1) for line in created.strip().splitlines())
    return lines["client_id"], lines["client_secret"]


def test_authlib_gets_introspects_and_revokes_a_token(
    served: tuple[str, Path], credentials: tuple[str, str]
) -> None:
    base, _log = served
    client_id, secret = credentials
    with OAuth2Client(client_id, secret, scope="orders:read") as client:
        token = client.fetch_token(f"{base}/oauth/token", grant_type="client_credentials")
        assert token["token_type"] == "Bearer" and token["scope"] == "orders:read"
        info = client.introspect_token(f"{base}/oauth/introspect", token=token["access_token"])
        assert info.status_code == 200
        body = info.json()
        assert body["active"] is True and body["client_id"] == client_id
        assert body["scope"] == "orders:read"
        revoked = client.revoke_token(f"{base}/oauth/revoke", token=token["access_token"])
        assert revoked.status_code == 200
        again = client.introspect_token(f"{base}/oauth/introspect", token=token["access_token"])
        assert again.json() == {"active": False}


def test_authlib_with_client_secret_post(
    served: tuple[str, Path], credentials: tuple[str, str]
) -> None:
    base, _log = served
    client_id, secret = credentials
    with OAuth2Client(client_id, secret, token_endpoint_auth_method="client_secret_post") as client:
        token = client.fetch_token(f"{base}/oauth/token", grant_type="client_credentials")
        assert token["scope"] == "orders:read orders:write"


def test_requests_oauthlib_backend_application_client(
    served: tuple[str, Path], credentials: tuple[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    base, _log = served
    monkeypatch.setenv("OAUTHLIB_INSECURE_TRANSPORT", "1")  # the test serves plain HTTP
    client_id, secret = credentials
    session = OAuth2Session(client=BackendApplicationClient(client_id=client_id))
    token = session.fetch_token(
        token_url=f"{base}/oauth/token", client_id=client_id, client_secret=secret
    )
    assert token["token_type"] == "Bearer" and token["expires_in"] > 0


def test_pyjwt_verifies_a_service_token_from_jwks(
    served: tuple[str, Path], credentials: tuple[str, str]
) -> None:
    base, _log = served
    client_id, secret = credentials
    with OAuth2Client(client_id, secret) as client:
        token = client.fetch_token(f"{base}/oauth/token", grant_type="client_credentials")
    jwks = jwt.PyJWKClient(f"{base}/.well-known/jwks.json")
    key = jwks.get_signing_key_from_jwt(token["access_token"])
    claims = jwt.decode(
        token["access_token"],
        key.key,
        algorithms=["RS256"],
        audience="auth-service",
        issuer="http://127.0.0.1",
    )
    assert claims["client_id"] == claims["sub"] == client_id
    assert jwt.get_unverified_header(token["access_token"])["typ"] == "at+jwt"
