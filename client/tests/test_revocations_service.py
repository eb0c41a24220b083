"""The follower against the REAL service's ``GET /events/revocations``: a logout refuses the
token locally within a second, a revoked key is ``key_revoked``, and a stream down for
longer than ``stale_after`` hands the decision to the fallback (or raises without one)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest

from auth_service_client.errors import ServiceUnavailableError
from auth_service_client.types import Verdict
from auth_service_client.verifier import LocalVerifier
from conftest import Service
from test_verifier_support import AUDIENCE, ISSUER


def local(service: Service, **options: Any) -> LocalVerifier:
    return LocalVerifier(
        service.base_url, issuer=ISSUER, audience=AUDIENCE, revocations=True,
        client_id=service.client_id, client_secret=service.client_secret,
        backoff=(0.05, 0.2), **options,
    )  # fmt: skip


@pytest.fixture
async def verifier(service: Service) -> AsyncIterator[LocalVerifier]:
    async with local(service) as started:
        await started.start(wait_synced=10)
        yield started


async def test_a_logout_is_refused_locally_within_a_second(
    service: Service, verifier: LocalVerifier
) -> None:
    delays = []
    for _ in range(3):
        pair = await asyncio.to_thread(service.login)
        assert (await verifier.verify(pair["access_token"])).valid
        await asyncio.to_thread(service.logout, pair)
        logged_out = time.monotonic()
        while (verdict := await verifier.verify(pair["access_token"])).valid:
            assert time.monotonic() - logged_out < 1.0, "still valid a second after logout"
            await asyncio.sleep(0.005)
        delays.append(time.monotonic() - logged_out)
        assert verdict.error == "token_revoked"
    print(f"logout -> local refusal: max {max(delays) * 1000:.1f} ms")


async def test_a_revoked_key_is_key_revoked_and_the_new_key_verifies(
    own_service: Service,
) -> None:
    async with local(own_service) as verifier:
        await verifier.start(wait_synced=10)
        old = (await asyncio.to_thread(own_service.login))["access_token"]
        assert (await verifier.verify(old)).valid
        fetches = verifier.jwks.fetches
        kid = verifier._cache[old][0]
        revoked = await asyncio.to_thread(own_service.revoke_key, kid)
        assert own_service.validate(old) == {"valid": False, "error": "key_revoked"}
        deadline = time.monotonic() + 2
        while (await verifier.verify(old)).error != "key_revoked":
            assert time.monotonic() < deadline
            await asyncio.sleep(0.01)
        new = (await asyncio.to_thread(own_service.login))["access_token"]
        assert verifier._cache.get(new) is None
        assert (await verifier.verify(new)).valid  # signed by the promoted key
        assert verifier._cache[new][0] == revoked["active_kid"]
        await asyncio.sleep(1.2)  # the key events' refetch (at most one a second) has run
        assert kid not in verifier.jwks.kids
        assert 1 <= verifier.jwks.fetches - fetches <= 2


async def test_a_stream_down_past_stale_after_falls_back(own_service: Service) -> None:
    asked: list[str] = []

    async def fallback(token: str) -> Verdict:
        asked.append(token)
        return Verdict(False, None, "token_revoked")

    token = (await asyncio.to_thread(own_service.login))["access_token"]
    async with (
        local(own_service, fallback=fallback, stale_after=0.5) as verifier,
        local(own_service, stale_after=0.5) as bare,
    ):
        await verifier.start(wait_synced=10)
        await bare.start(wait_synced=10)
        assert (await verifier.verify(token)).valid and (await bare.verify(token)).valid
        await asyncio.to_thread(own_service.stop)
        down = time.monotonic()
        assert verifier.follower is not None and not verifier.follower.current
        assert (await verifier.verify(token)).valid  # within stale_after: the state held
        await asyncio.sleep(max(0.0, 0.6 - (time.monotonic() - down)))
        assert await verifier.verify(token) == Verdict(False, None, "token_revoked")
        assert asked == [token]
        with pytest.raises(ServiceUnavailableError):
            await bare.verify(token)
        await asyncio.to_thread(own_service.start)
        async with asyncio.timeout(10):
            await verifier.follower.wait_synced()
        assert (await verifier.verify(token)).valid and asked == [token]
