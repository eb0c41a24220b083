"""The key lifecycle over simulated days (injected clock, no sleeping), on both backends:
next → active → retired → expired, plus revoked; what JWKS publishes at each step; what a
token signed just before a promotion does until it (and its key) expire."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import timedelta

import pytest
from sqlalchemy import select

from auth_service.clock import FrozenClock
from auth_service.container import Container
from auth_service.db.models import SigningKey
from auth_service.errors import NotFoundError, RotationInProgressError
from auth_service.services.keys import KEYS_LOCK
from auth_service.services.rotation import (
    DueReport,
    RotationPolicy,
    expire_retired_keys,
    revoke_key,
    rotate_keys,
    rotation_status,
    run_due_work,
)
from auth_service.settings import Settings
from tests.support.http import client_headers, register_and_login
from tests.support.rotation import access_token, jwks_kids, kid_of, statuses, verdict
from tests.support.service import Service

DAY = timedelta(hours=24)


def _outcome(result: DueReport | BaseException) -> str:
    if isinstance(result, RotationInProgressError):
        return "busy"  # another instance held the lock
    if isinstance(result, BaseException):
        return repr(result)
    assert result.rotation is not None
    return "rotated" if result.rotation.rotated else "not_due"


def _policy(service: Service) -> RotationPolicy:
    return service.container.rotation.policy


async def _row(container: Container, kid: str) -> SigningKey:
    async with container.db.writer() as session:
        row = await session.scalar(select(SigningKey).where(SigningKey.kid == kid))
    assert row is not None
    return row


async def test_a_full_lifecycle_over_simulated_days(rot: Service, clock: FrozenClock) -> None:
    container, policy = rot.container, _policy(rot)
    headers = await client_headers(rot)
    await register_and_login(rot, "alice@example.com")
    start = await statuses(container)
    first, second = start["active"][0], start["next"][0]
    assert await jwks_kids(rot) == [first, second]

    # Not due within the interval: nothing changes, nothing is written.
    clock.advance(DAY - timedelta(minutes=1))
    report = await run_due_work(container.rotation.keys, policy)
    assert report.rotation is not None and not report.rotation.rotated and not report.expired
    assert await statuses(container) == start

    # A token signed a minute before the promotion.
    before = await access_token(rot, "alice@example.com")
    assert kid_of(before) == first
    clock.advance(timedelta(minutes=1))
    report = await run_due_work(container.rotation.keys, policy)
    assert report.rotation is not None and report.rotation.rotated
    assert (report.rotation.active_kid, report.rotation.previous_kid) == (second, first)
    await container.rotation.reload()
    after = await statuses(container)
    third = after["next"][0]
    assert after == {"active": [second], "next": [third], "retired": [first]}
    assert await jwks_kids(rot) == [second, third, first]
    promoted = await _row(container, second)
    assert promoted.activated_at is not None
    assert promoted.activated_at - promoted.created_at >= policy.interval  # published a day
    assert kid_of(await access_token(rot, "alice@example.com")) == second

    # The old token stays valid until it expires (+ leeway), then "expired"...
    rotated_at = clock.now()
    clock.set(rotated_at + timedelta(seconds=840 + 9))  # exp = rotated_at + 840 s
    assert (await verdict(rot, before, headers))["valid"] is True
    clock.advance(1)
    assert (await verdict(rot, before, headers))["error"] == "expired"
    # ...and once its key expires (successor's activation + TTL + leeway + cache refresh)
    # the key is unknown, leaves JWKS and stays in the database.
    retired = await _row(container, first)
    assert retired.expires_at == rotated_at + timedelta(seconds=900 + 10 + 60)
    clock.set(retired.expires_at - timedelta(seconds=1))
    assert await expire_retired_keys(container.rotation.keys) == []
    clock.set(retired.expires_at)
    assert (await verdict(rot, before, headers))["error"] == "unknown_key"  # before the job
    assert (await run_due_work(container.rotation.keys, policy)).expired == [first]
    await container.rotation.reload()
    assert await jwks_kids(rot) == [second, third]
    assert (await statuses(container))["expired"] == [first]

    # The next day: the key published yesterday signs; always exactly one next.
    clock.set(rotated_at + DAY)
    report = await run_due_work(container.rotation.keys, policy)
    assert report.rotation is not None and report.rotation.active_kid == third
    await container.rotation.reload()
    final = await statuses(container)
    assert final["active"] == [third] and final["retired"] == [second]
    assert len(final["next"]) == 1 and final["expired"] == [first]
    assert await jwks_kids(rot) == [third, final["next"][0], second]


async def test_a_manual_rotation_waits_until_the_next_key_is_published_long_enough(
    rot: Service, clock: FrozenClock
) -> None:
    container, policy = rot.container, _policy(rot)
    assert policy.min_next_age == timedelta(seconds=300 + 60)
    clock.advance(policy.min_next_age - timedelta(seconds=1))
    with pytest.raises(RotationInProgressError, match="cannot sign yet"):
        await rotate_keys(container.rotation.keys, policy, trigger="manual")
    before = await statuses(container)
    clock.advance(1)
    result = await rotate_keys(container.rotation.keys, policy, trigger="manual")
    assert result.rotated and result.previous_kid == before["active"][0]
    # The new next key is brand new: an immediate second rotation is refused.
    with pytest.raises(RotationInProgressError):
        await rotate_keys(container.rotation.keys, policy, trigger="manual")
    assert container.rotation.keys.metrics.rotations[("manual", "rotated")] == 1
    assert container.rotation.keys.metrics.rotations[("manual", "busy")] == 2


async def test_a_rotation_due_on_many_instances_happens_once(
    rot: Service, make_container: Callable[..., Container], clock: FrozenClock
) -> None:
    # Three more instances on the same database and store, every one finding it due.
    others = [make_container() for _ in range(3)]
    clock.advance(DAY)
    results = await asyncio.gather(
        *(run_due_work(c.rotation.keys, c.rotation.policy) for c in [rot.container, *others]),
        return_exceptions=True,
    )
    outcomes = [_outcome(result) for result in results]
    assert outcomes.count("rotated") == 1, outcomes
    assert set(outcomes) <= {"rotated", "busy", "not_due"}, results
    found = await statuses(rot.container)
    assert len(found["active"]) == 1 and len(found["retired"]) == 1 and len(found["next"]) == 1
    for other in others:
        await other.engine.dispose()


async def test_a_held_lock_or_a_lock_lost_before_commit_writes_nothing(
    rot: Service, clock: FrozenClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    container, policy = rot.container, _policy(rot)
    clock.advance(DAY)
    before = await statuses(container)
    holder = await container.store.acquire_lock(KEYS_LOCK, timedelta(seconds=30))
    assert holder is not None
    with pytest.raises(RotationInProgressError):
        await rotate_keys(container.rotation.keys, policy, trigger="scheduled")
    await container.store.release_lock(KEYS_LOCK, holder)

    async def lost(*_args: object) -> bool:
        return False

    monkeypatch.setattr(container.rotation.keys.store, "extend_lock", lost)
    with pytest.raises(RotationInProgressError, match="lost"):
        await rotate_keys(container.rotation.keys, policy, trigger="scheduled")
    assert await statuses(container) == before  # rolled back: nothing half-written
    assert container.rotation.keys.metrics.rotations[("scheduled", "busy")] == 2


async def test_revoking_the_active_key_rotates_first_and_its_tokens_answer_key_revoked(
    rot: Service,
) -> None:
    container, policy = rot.container, _policy(rot)
    headers = await client_headers(rot)
    user = await register_and_login(rot, "bob@example.com")
    token = user.pair["access_token"]
    before = await statuses(container)
    active, upcoming = before["active"][0], before["next"][0]
    assert (await verdict(rot, token, headers))["valid"] is True  # cached signature now

    # The next key is brand new, yet an emergency rotation goes ahead.
    assert await revoke_key(container.rotation.keys, policy, active) == (active, upcoming)
    await container.rotation.reload()
    assert (await verdict(rot, token, headers)) == {"valid": False, "error": "key_revoked"}
    kids = await jwks_kids(rot)
    assert active not in kids and kids[0] == upcoming
    after = await statuses(container)
    assert after["revoked"] == [active] and after["active"] == [upcoming]
    assert len(after["next"]) == 1 and after["next"][0] not in (active, upcoming)
    # Idempotent; unknown kids are 404.
    assert await revoke_key(container.rotation.keys, policy, active) == (active, upcoming)
    with pytest.raises(NotFoundError):
        await revoke_key(container.rotation.keys, policy, "no-such-kid")


async def test_revoking_the_next_key_replaces_it_at_once(rot: Service) -> None:
    container, policy = rot.container, _policy(rot)
    before = await statuses(container)
    upcoming = before["next"][0]
    assert await revoke_key(container.rotation.keys, policy, upcoming) == (
        upcoming,
        before["active"][0],
    )
    await container.rotation.reload()
    after = await statuses(container)
    assert after["revoked"] == [upcoming] and len(after["next"]) == 1
    assert after["active"] == before["active"]
    assert await jwks_kids(rot) == [before["active"][0], after["next"][0]]


async def test_rotation_status_reports_the_schedule(rot: Service, clock: FrozenClock) -> None:
    container, policy = rot.container, _policy(rot)
    status = await rotation_status(container.rotation.keys, policy)
    first = (await statuses(container))["active"][0]
    assert status.active_kid == first and status.last_rotation is None
    assert status.next_rotation_at == status.active_since + DAY  # type: ignore[operator]
    assert status.interval_hours == 24
    clock.advance(DAY)
    result = await rotate_keys(container.rotation.keys, policy, trigger="scheduled")
    status = await rotation_status(container.rotation.keys, policy)
    assert status.last_rotation == {
        "at": clock.now(),
        "active_kid": result.active_kid,
        "previous_kid": first,
    }
    assert status.published_keys[0] == result.active_kid and len(status.published_keys) == 3


def test_jwks_max_age_must_be_well_below_the_rotation_interval(
    make_settings: Callable[..., Settings],
) -> None:
    with pytest.raises(ValueError, match="at most 1/10"):
        make_settings(key_rotation_interval_hours=0.05, jwks_max_age_seconds=60)  # 180 s
    assert make_settings(key_rotation_interval_hours=0.05, jwks_max_age_seconds=18)
