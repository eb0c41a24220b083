"""Key rotation at run time: the scheduler job, a store outage during a rotation, and the key
cache reload a token with an unknown kid triggers (rate-limited and single-flight)."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
from collections.abc import Callable
from datetime import timedelta

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey

from auth_service.clock import FrozenClock
from auth_service.container import Container
from auth_service.crypto.envelope import Envelope
from auth_service.crypto.jwt import encode_token
from auth_service.db.models import SigningKey
from auth_service.scheduler import KeyScheduler
from auth_service.services.keys import new_signing_key, open_private_key
from auth_service.services.rotation import DueReport
from auth_service.settings import Settings
from auth_service.store.base import StoreUnavailableError
from tests.support.http import client_headers, register_and_login
from tests.support.rotation import statuses, verdict
from tests.support.service import Service, started

DAY = timedelta(hours=24)


async def test_the_scheduler_tick_rotates_when_due_and_logs_a_store_outage(
    rot: Service,
    clock: FrozenClock,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    container = rot.container
    scheduler = KeyScheduler(container.rotation, every=timedelta(seconds=60))
    before = await statuses(container)
    await scheduler.tick()  # not due
    assert await statuses(container) == before

    clock.advance(DAY)

    async def down(*_args: object, **_kwargs: object) -> str | None:
        raise StoreUnavailableError("connection refused")

    store = container.rotation.keys.store
    with monkeypatch.context() as patch, caplog.at_level(logging.ERROR):
        patch.setattr(store, "acquire_lock", down)
        await scheduler.tick()  # never raises
    assert "the store is unavailable" in caplog.text
    assert await statuses(container) == before  # skipped, nothing half-written
    assert container.rotation.keys.metrics.rotations[("scheduled", "failed")] == 1

    await scheduler.tick()  # the store is back: the due rotation happens
    after = await statuses(container)
    assert after["retired"] == before["active"] and after["active"] == before["next"]


async def test_validation_reads_no_database(rot: Service, monkeypatch: pytest.MonkeyPatch) -> None:
    headers = await client_headers(rot)
    user = await register_and_login(rot, "dave@example.com")
    assert (await verdict(rot, user.pair["access_token"], headers))["valid"] is True
    monkeypatch.setattr(rot.container.engine.sync_engine.pool, "connect", _refuse, raising=False)
    assert (await verdict(rot, user.pair["access_token"], headers))["valid"] is True


def _refuse() -> None:
    raise OSError("the database is gone")


async def test_the_scheduler_runs_in_the_app_and_stops_with_it(
    make_container: Callable[..., Container],
    make_settings: Callable[..., Settings],
) -> None:
    settings = make_settings(scheduler_enabled=True, key_check_interval_seconds=0.05)
    container = make_container(settings)
    async with started(container):
        assert container.scheduler is not None and container.scheduler.running
        for _ in range(200):
            if container.rotation.keys.metrics.rotations[("scheduled", "not_due")] >= 2:
                break
            await asyncio.sleep(0.025)
        assert container.rotation.keys.metrics.rotations[("scheduled", "not_due")] >= 2
    assert not container.scheduler.running
    ticks = container.rotation.keys.metrics.rotations[("scheduled", "not_due")]
    await asyncio.sleep(0.2)
    assert container.rotation.keys.metrics.rotations[("scheduled", "not_due")] == ticks


def _claims_of(token: str) -> dict[str, object]:
    claims: dict[str, object] = jwt.decode(token, options={"verify_signature": False})
    return claims


def _forge_kid(token: str, kid: str) -> str:
    header = base64.urlsafe_b64encode(
        json.dumps({"alg": "RS256", "typ": "at+jwt", "kid": kid}).encode()
    )
    _, payload, signature = token.split(".")
    return f"{header.rstrip(b'=').decode()}.{payload}.{signature}"


async def test_a_flood_of_unknown_kids_reloads_the_key_cache_once_per_interval(
    rot: Service, clock: FrozenClock
) -> None:
    validator = rot.container.validator
    assert validator.kid_reloader is not None
    token = (await register_and_login(rot, "erin@example.com")).pair["access_token"]
    floods = [_forge_kid(token, f"random-kid-{i}") for i in range(50)]
    results = await asyncio.gather(*(validator.validate(t) for t in floods))
    assert {r.error for r in results} == {"unknown_key"}
    assert validator.kid_reloader.reloads == 1  # concurrent misses shared one reload
    await validator.validate_many(floods)
    assert validator.kid_reloader.reloads == 1  # within the interval: none more
    clock.advance(5)
    await validator.validate(floods[0])
    assert validator.kid_reloader.reloads == 2


async def test_a_key_made_elsewhere_a_moment_ago_validates_at_once(
    rot: Service, clock: FrozenClock
) -> None:
    """Another instance's key that this one has not heard of (no event): the unknown kid
    reloads the cache and the token validates on its first presentation."""
    container = rot.container
    headers = await client_headers(rot)
    token = (await register_and_login(rot, "frank@example.com")).pair["access_token"]
    async with container.db.writer() as session, session.begin():
        row = await new_signing_key(container.rotation.keys, status="retired", now=clock.now())
        row.retired_at, row.expires_at = clock.now(), clock.now() + DAY
        session.add(row)
    elsewhere = encode_token(
        _claims_of(token),
        private_key=open_private_key(container.rotation.keys.envelope, row),
        kid=row.kid,
    )
    assert container.keyring.lookup(row.kid) is None
    assert (await verdict(rot, elsewhere, headers))["valid"] is True


async def test_shutdown_lets_a_check_in_flight_finish(
    rot: Service, monkeypatch: pytest.MonkeyPatch
) -> None:
    finished: list[bool] = []

    async def slow_check(*_args: object) -> DueReport:
        await asyncio.sleep(0.3)
        finished.append(True)
        return DueReport(rotation=None, expired=[])

    monkeypatch.setattr(rot.container.rotation, "run_due_work", slow_check)
    scheduler = KeyScheduler(rot.container.rotation, every=timedelta(seconds=60))
    scheduler.start()
    for _ in range(300):  # the first check starts 0.5-2 s after start()
        if scheduler._running:
            break
        await asyncio.sleep(0.01)
    assert scheduler._running, "the first check did not start"
    await scheduler.shutdown()
    assert finished == [True] and not scheduler.running


async def test_a_reload_opens_each_private_key_once(
    rot: Service, monkeypatch: pytest.MonkeyPatch
) -> None:
    from auth_service.services import keys

    opened: list[str] = []
    real = keys.open_private_key

    def counting(envelope: Envelope, row: SigningKey) -> RSAPrivateKey:
        opened.append(row.kid)
        return real(envelope, row)

    monkeypatch.setattr(keys, "open_private_key", counting)
    for _ in range(3):
        assert await rot.container.rotation.reload()
    assert opened == []  # both keys were opened at start-up and are remembered
    rot.container.rotation.keys.opened.clear()
    assert await rot.container.rotation.reload()
    assert sorted(opened) == sorted(rot.container.keyring.snapshot.keys)
