"""Helpers of the verifier, JWKS and revocation tests (no tests here).

``mint`` forges tokens with the SERVED instance's own signing key: a small script run by the
service's Python (beside ``conftest.service_command()``), which loads the active key from
the instance's database with ``auth_service`` modules. The client package itself never
imports ``auth_service``.
"""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx

from conftest import Service, service_command

ISSUER = "http://127.0.0.1"
AUDIENCE = "auth-service"

_MINT = r"""
import asyncio, base64, hashlib, hmac, json, sys
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from auth_service.container import running
from auth_service.dev_secret import ensure_dev_secret
from auth_service.settings import Settings

def b64(raw):
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()

def segment(value):
    return b64(json.dumps(value, separators=(",", ":")).encode())

async def main():
    specs = json.load(sys.stdin)
    async with running(ensure_dev_secret(Settings())) as container:
        await container.rotation.load()
        signing = container.keyring.signing
        attacker = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        public_pem = signing.private_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        tokens = []
        for spec in specs:
            header = {"alg": "RS256", "typ": "at+jwt", "kid": signing.kid, **spec.get("header", {})}
            header = {k: v for k, v in header.items() if v is not None}
            head = spec.get("raw_header") or segment(header)
            body = segment(spec["claims"])
            signing_input = f"{head}.{body}".encode()
            how = spec.get("sign", "rs256")
            if how == "none":
                signature = b""
            elif how == "hs256_public":
                signature = hmac.new(public_pem, signing_input, hashlib.sha256).digest()
            else:
                key = attacker if how == "attacker" else signing.private_key
                signature = key.sign(signing_input, padding.PKCS1v15(), hashes.SHA256())
            tokens.append(f"{head}.{body}.{b64(signature)}")
        print(json.dumps({"kid": signing.kid, "tokens": tokens}))

asyncio.run(main())
"""


def service_python() -> str:
    return str(Path(service_command()).parent / "python")


def mint(service: Service, specs: list[dict[str, Any]]) -> tuple[str, list[str]]:
    """Tokens for ``specs`` (``claims``, optional ``header`` overrides (None removes),
    ``raw_header``, ``sign``: rs256 | attacker | none | hs256_public); and the active kid."""
    done = subprocess.run(
        [service_python(), "-c", _MINT],
        input=json.dumps(specs),
        env=service.env,
        cwd=service.workdir,
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    printed = json.loads(done.stdout.strip().splitlines()[-1])
    return printed["kid"], printed["tokens"]


def claims(**overrides: Any) -> dict[str, Any]:
    """User-token claims the service could have issued (a session never revoked)."""
    now = int(time.time())
    base: dict[str, Any] = {
        "iss": ISSUER,
        "sub": "00000000-0000-0000-0000-000000000001",
        "aud": AUDIENCE,
        "exp": now + 600,
        "iat": now,
        "nbf": now,
        "jti": f"jti-{time.monotonic_ns()}",
        "sid": f"sid-{time.monotonic_ns()}",
        "roles": ["user"],
        "amr": ["pwd"],
    }
    base.update(overrides)
    return {name: value for name, value in base.items() if value is not None}


def service_token(service: Service) -> str:
    answer = httpx.post(
        f"{service.base_url}/oauth/token",
        data={"grant_type": "client_credentials"},
        auth=(service.client_id, service.client_secret),
        timeout=10,
    )
    assert answer.status_code == 200, answer.text
    token: str = answer.json()["access_token"]
    return token


def me(service: Service, pair: dict[str, Any]) -> dict[str, Any]:
    answer = httpx.get(
        f"{service.base_url}/auth/me",
        headers={"Authorization": f"Bearer {pair['access_token']}"},
        timeout=10,
    )
    assert answer.status_code == 200, answer.text
    body: dict[str, Any] = answer.json()
    return body


def stream_served(service: Service) -> bool:
    """Whether this build of the service serves ``GET /events/revocations``."""
    answer = httpx.get(f"{service.base_url}/openapi.json", timeout=10)
    return answer.status_code == 200 and "/events/revocations" in answer.json().get("paths", {})
