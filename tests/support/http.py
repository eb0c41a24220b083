"""Shared steps for HTTP tests: a registered, logged-in user and a service client."""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding

from tests.support.service import Service

PASSWORD = "correct horse battery staple"


@dataclass
class LoggedIn:
    user_id: str
    email: str
    pair: dict[str, Any]

    @property
    def bearer(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.pair['access_token']}"}


async def register_and_login(
    service: Service, email: str = "alice@example.com", password: str = PASSWORD
) -> LoggedIn:
    created = await service.client.post(
        "/auth/register", json={"email": email, "password": password}
    )
    assert created.status_code == 201, created.text
    login = await service.client.post("/auth/login", json={"email": email, "password": password})
    assert login.status_code == 200, login.text
    return LoggedIn(user_id=created.json()["id"], email=email, pair=login.json())


async def client_headers(service: Service, name: str = "billing") -> dict[str, str]:
    """HTTP Basic headers of a freshly created service client."""
    created = await service.container.clients.create(name=name)
    raw = f"{created.client.client_id}:{created.client_secret}".encode()
    return {"Authorization": "Basic " + base64.b64encode(raw).decode()}


async def validate(service: Service, token: str, headers: dict[str, str]) -> dict[str, Any]:
    response = await service.client.post("/validate", json={"token": token}, headers=headers)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def mails(path: Path) -> list[dict[str, Any]]:
    """The mails the ``file`` mail backend wrote to ``path`` so far, oldest first."""
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines()]


def _segment(value: Any) -> str:
    raw = json.dumps(value, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def sign_as_service(service: Service, claims: dict[str, Any]) -> str:
    """A token the service could have issued: its active key, its header (for claims the
    service would not put in a token it issues itself, e.g. a session never revoked)."""
    signing = service.container.keyring.signing
    assert signing is not None
    header = {"alg": "RS256", "typ": "at+jwt", "kid": signing.kid}
    signing_input = f"{_segment(header)}.{_segment(claims)}"
    signature = signing.private_key.sign(
        signing_input.encode(), padding.PKCS1v15(), hashes.SHA256()
    )
    return f"{signing_input}.{base64.urlsafe_b64encode(signature).rstrip(b'=').decode()}"


VALIDATE_PATHS = ["/validate", "/validate/batch"]


def body_with_token(path: str, raw_token: bytes) -> bytes:
    """A body for ``path`` (one of ``VALIDATE_PATHS``) whose token is the raw JSON value
    ``raw_token``."""
    if path == "/validate":
        return b'{"token":' + raw_token + b"}"
    return b'{"tokens":[' + raw_token + b"]}"
