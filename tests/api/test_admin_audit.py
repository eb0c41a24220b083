"""The audit log: what the flows append, and that any edit, deletion or reordering of the
chain is named by verification (HTTP and CLI); retention prunes with a signed checkpoint."""

from __future__ import annotations

import asyncio
import logging
from datetime import timedelta
from typing import Any

import pytest

from auth_service.clock import FrozenClock
from auth_service.scheduler import KeyScheduler
from auth_service.services.audit import Audit
from tests.support.http import PASSWORD, register_and_login
from tests.support.mfa import execute, raw_rows
from tests.support.rotation import admin_headers
from tests.support.service import Service
from tests.support.service import started as started_service

SECRETS_NEVER_LOGGED = (PASSWORD, "wrong password entirely 99")


async def _events(service: Service, admin: dict[str, str], **query: Any) -> list[dict[str, Any]]:
    response = await service.client.get("/admin/audit", params=query, headers=admin)
    assert response.status_code == 200, response.text
    events: list[dict[str, Any]] = response.json()["events"]
    return events


async def _verify(service: Service, admin: dict[str, str]) -> dict[str, Any]:
    response = await service.client.get("/admin/audit/verify", headers=admin)
    assert response.status_code == 200, response.text
    verdict: dict[str, Any] = response.json()
    return verdict


async def _ids(service: Service) -> list[int]:
    return [row[0] for row in await raw_rows(service.container, "SELECT id FROM audit_events")]


async def test_the_flows_append_events_that_verify(service: Service) -> None:
    admin = await admin_headers(service)
    user = await register_and_login(service, "alice@example.com")
    wrong = await service.client.post(
        "/auth/login",
        json={"email": "alice@example.com", "password": SECRETS_NEVER_LOGGED[1]},
        headers={"X-Request-ID": "req-wrong-1"},
    )
    assert wrong.status_code == 401
    unknown = await service.client.post(
        "/auth/login", json={"email": "NOBODY@Example.com", "password": PASSWORD}
    )
    assert unknown.status_code == 401
    disabled = await service.client.post(
        f"/admin/users/{user.user_id}/disable", headers={**admin, "X-Request-ID": "req-dis-1"}
    )
    assert disabled.status_code == 204

    events = await _events(service, admin)
    types = [event["type"] for event in reversed(events)]
    for expected in ("user.registered", "login.succeeded", "login.failed", "user.disabled"):
        assert expected in types, types
    failed = [event for event in events if event["type"] == "login.failed"]
    assert {event["details"]["reason"] for event in failed} == {"wrong_password", "unknown_account"}
    assert any(event["subject"] == "nobody@example.com" for event in failed)  # normalised
    by_request = {event["request_id"]: event for event in events}
    assert by_request["req-wrong-1"]["subject"] == user.user_id
    assert by_request["req-wrong-1"]["ip"] == "127.0.0.1"
    me = await service.client.get("/auth/me", headers=admin)
    assert by_request["req-dis-1"]["actor"] == me.json()["id"]  # the admin who acted
    assert by_request["req-dis-1"]["subject"] == user.user_id
    text = str(await raw_rows(service.container, "SELECT * FROM audit_events"))
    for secret in (*SECRETS_NEVER_LOGGED, user.pair["refresh_token"], user.pair["access_token"]):
        assert secret not in text

    assert await _verify(service, admin) == {
        "ok": True,
        "checked": len(events),
        "first_bad_id": None,
    }
    only = await _events(service, admin, type="login.failed", limit=1)
    assert len(only) == 1 and only[0]["id"] == max(event["id"] for event in failed)
    older = await _events(service, admin, before=only[0]["id"], type="login.failed")
    assert [event["id"] for event in older] == [min(event["id"] for event in failed)]


async def _chain_of(service: Service, count: int) -> tuple[dict[str, str], list[int]]:
    admin = await admin_headers(service)
    for number in range(count):
        await service.container.audit.append("test.event", subject=f"s{number}")
    return admin, sorted(await _ids(service))


async def test_an_edited_row_is_named(service: Service) -> None:
    admin, ids = await _chain_of(service, 5)
    target = ids[-3]
    await execute(
        service.container,
        "UPDATE audit_events SET details = :d WHERE id = :id",
        d='{"reason": "nothing to see"}',
        id=target,
    )
    verdict = await _verify(service, admin)
    assert verdict["ok"] is False and verdict["first_bad_id"] == target


async def test_a_deleted_row_is_named_by_the_next(service: Service) -> None:
    admin, ids = await _chain_of(service, 5)
    await execute(service.container, "DELETE FROM audit_events WHERE id = :id", id=ids[-3])
    verdict = await _verify(service, admin)
    assert verdict["ok"] is False and verdict["first_bad_id"] == ids[-2]


async def test_a_deleted_newest_row_is_found_against_the_head(service: Service) -> None:
    admin, ids = await _chain_of(service, 3)
    await execute(service.container, "DELETE FROM audit_events WHERE id = :id", id=ids[-1])
    verdict = await _verify(service, admin)
    assert verdict["ok"] is False and verdict["first_bad_id"] == ids[-1]


async def test_two_swapped_rows_are_named_by_the_lower(service: Service) -> None:
    admin, ids = await _chain_of(service, 5)
    low, high = ids[-4], ids[-2]
    for old, new in ((low, -1), (high, low), (-1, high)):
        await execute(
            service.container, "UPDATE audit_events SET id = :n WHERE id = :o", n=new, o=old
        )
    verdict = await _verify(service, admin)
    assert verdict["ok"] is False and verdict["first_bad_id"] == low


async def test_a_recomputed_sha256_chain_does_not_pass(service: Service) -> None:
    """An attacker with database access but not the secret rewrites a row and its MAC."""
    admin, ids = await _chain_of(service, 3)
    await execute(
        service.container, "UPDATE audit_events SET mac = :m WHERE id = :id", m="0" * 64, id=ids[-1]
    )
    await execute(service.container, "UPDATE audit_head SET last_mac = :m", m="0" * 64)
    verdict = await _verify(service, admin)
    assert verdict["ok"] is False and verdict["first_bad_id"] == ids[-1]


async def test_concurrent_appends_keep_one_chain(service: Service) -> None:
    admin = await admin_headers(service)
    await asyncio.gather(
        *(service.container.audit.append("test.concurrent", subject=str(n)) for n in range(40))
    )
    ids = sorted(await _ids(service))
    assert ids == list(range(1, len(ids) + 1))  # gapless
    assert (await _verify(service, admin))["ok"] is True


async def test_retention_prunes_from_the_start_with_a_signed_checkpoint(
    service: Service, clock: FrozenClock
) -> None:
    audit: Audit = service.container.audit
    for number in range(4):
        await audit.append("test.old", subject=f"o{number}")
    old = len(await _ids(service))  # the start-up's key events too
    clock.advance(timedelta(days=10).total_seconds())
    for number in range(3):
        await audit.append("test.recent", subject=f"r{number}")
    assert await audit.prune(clock.now() - timedelta(days=5)) == old
    remaining = await audit.events(limit=100, before=None, type_=None, subject=None)
    assert [event.type for event in remaining] == ["test.recent"] * 3
    verdict = await audit.verify()
    assert (verdict.ok, verdict.checked) == (True, 3)
    assert await audit.prune(clock.now() - timedelta(days=5)) == 0  # nothing older left
    await execute(service.container, "UPDATE audit_checkpoints SET pruned = pruned + 1")
    assert (await audit.verify()).ok is False  # the checkpoint is signed too


async def test_a_broken_chain_is_not_pruned(service: Service, clock: FrozenClock) -> None:
    audit: Audit = service.container.audit
    for number in range(3):
        await audit.append("test.old", subject=f"o{number}")
    await execute(service.container, "UPDATE audit_events SET type = 'x' WHERE id = 1")
    clock.advance(timedelta(days=10).total_seconds())
    assert await audit.prune(clock.now()) == 0
    assert (await audit.verify()).first_bad_id == 1  # the evidence stays


@pytest.mark.parametrize("path", ["/admin/audit", "/admin/audit/verify"])
async def test_only_an_admin_reads_the_audit_log(service: Service, path: str) -> None:
    user = await register_and_login(service, "bob@example.com")
    assert (await service.client.get(path, headers=user.bearer)).status_code == 403
    assert (await service.client.get(path)).status_code == 401


async def test_the_scheduler_prunes_at_most_hourly_and_survives_a_failure(
    service: Service, clock: FrozenClock, caplog: pytest.LogCaptureFixture
) -> None:
    audit: Audit = service.container.audit
    runs: list[int] = []

    async def prune() -> int:
        runs.append(await audit.prune_older_than(1))
        if len(runs) == 2:
            raise RuntimeError("database gone")
        return runs[-1]

    ticks = KeyScheduler(
        service.container.rotation, every=timedelta(seconds=60), housekeeping=prune
    )
    clock.advance(timedelta(days=2).total_seconds())
    await ticks.tick()
    await ticks.tick()  # within the hour: no second prune
    assert len(runs) == 1 and runs[0] > 0
    assert (await audit.verify()).ok
    failing = KeyScheduler(
        service.container.rotation,
        every=timedelta(seconds=60),
        housekeeping=prune,
        housekeeping_every=timedelta(0),
    )
    await failing.tick()
    with caplog.at_level(logging.ERROR):
        await failing.tick()  # raises inside: logged, never out of the tick
    assert "audit retention failed" in caplog.text


async def test_a_forwarded_hop_that_is_not_an_ip_is_not_stored_and_not_a_500(
    make_container: Any, make_settings: Any
) -> None:
    """Attack review: a trusted proxy forwarding a 46-character hop made every audited
    request a 500 (the column holds 45), and non-IP hops were stored as they came."""
    settings = make_settings(trusted_proxies=["127.0.0.1"])
    async with started_service(make_container(settings)) as service:
        await register_and_login(service, "ip@example.com")
        for hop in ("x" * 46, "<script>alert(1)</script>", "203.0.113.7"):
            answer = await service.client.post(
                "/auth/login",
                json={"email": "ip@example.com", "password": "wrong password entirely 99"},
                headers={"X-Forwarded-For": hop},
            )
            assert answer.status_code == 401, answer.text
        ips = [row[0] for row in await raw_rows(service.container, "SELECT ip FROM audit_events")]
        assert "203.0.113.7" in ips
        assert all(ip is None or ip in ("127.0.0.1", "203.0.113.7") for ip in ips), ips


@pytest.mark.parametrize("query", ["type=%00", "subject=a%00b"])
async def test_unstorable_audit_filters_are_422(service: Service, query: str) -> None:
    admin = await admin_headers(service)
    response = await service.client.get(f"/admin/audit?{query}", headers=admin)
    assert response.status_code == 422, response.text
