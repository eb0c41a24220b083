"""Key rotation under load: tokens freshly issued while the service rotates its keys several
times all verify locally, with the unknown-kid refetch switched off (interval of an hour):
the ``next`` key is published ahead, so a verifier honouring max-age already holds it."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from auth_service_client.verifier import LocalVerifier
from conftest import Service, serve_instance
from test_verifier_support import AUDIENCE, ISSUER

ROTATIONS = 3


@pytest.fixture
def fast_keys(tmp_path: Path) -> Iterator[Service]:
    """JWKS max-age 1 s and key-cache refresh 1 s: a next key may be promoted at 2 s old."""
    env = {"AUTH_JWKS_MAX_AGE_SECONDS": "1", "AUTH_KEY_CACHE_REFRESH_SECONDS": "1"}
    yield from serve_instance(tmp_path, env)


def _rotate(service: Service, headers: dict[str, str]) -> str:
    deadline = time.monotonic() + 15
    while True:  # 409 while the next key is younger than max-age + cache refresh
        answer = service.post("/admin/keys/rotate", headers=headers)
        if answer.status_code == 200:
            kid: str = answer.json()["active_kid"]
            return kid
        assert answer.status_code == 409 and time.monotonic() < deadline, answer.text
        time.sleep(0.2)


async def test_no_fresh_token_fails_while_keys_rotate(fast_keys: Service) -> None:
    headers = fast_keys.admin_headers()
    http = httpx.AsyncClient(base_url=fast_keys.base_url, timeout=10)
    auth = (fast_keys.client_id, fast_keys.client_secret)
    verifier = LocalVerifier(
        fast_keys.base_url, issuer=ISSUER, audience=AUDIENCE, refetch_interval=3600
    )
    failures: list[tuple[str, str | None]] = []
    kids: set[str] = set()
    verified = 0
    done = asyncio.Event()

    async def load() -> None:
        nonlocal verified
        held: list[str] = []
        while not done.is_set():
            answer = await http.post(
                "/oauth/token", data={"grant_type": "client_credentials"}, auth=auth
            )
            assert answer.status_code == 200, answer.text
            held = [answer.json()["access_token"], *held][:20]
            for token in held:  # the fresh one and those issued before the last rotations
                verdict = await verifier.verify(token)
                verified += 1
                if not verdict.valid:
                    failures.append((token, verdict.error))
            kids.add(verifier._cache[held[0]][0])
            await asyncio.sleep(0.01)

    async with http, verifier:
        loaders = [asyncio.create_task(load()) for _ in range(4)]
        for _ in range(ROTATIONS):
            await asyncio.sleep(0.3)
            await asyncio.to_thread(_rotate, fast_keys, headers)
        await asyncio.sleep(1.5)  # tokens of the last active key are verified too
        done.set()
        await asyncio.gather(*loaders)

    assert not failures, failures[:3]
    assert len(kids) == ROTATIONS + 1  # every key in turn signed tokens that verified
    assert verified > 200
