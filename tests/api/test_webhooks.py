"""Security webhooks: registration, Standard Webhooks signatures, and delivery from the
outbox to a real receiver process that fails twice, across a service restart."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from standardwebhooks.webhooks import Webhook

from auth_service.clock import FrozenClock
from auth_service.container import Container
from auth_service.settings import Settings
from tests.support.cluster import free_port
from tests.support.http import register_and_login
from tests.support.mfa import assert_error
from tests.support.rotation import admin_headers
from tests.support.service import Service, started
from tests.support.webhook_receiver import received, receiver


async def until(check: Callable[[], bool], clock: FrozenClock, step: float = 0) -> None:
    """Poll ``check`` for up to 15 s, moving the service's clock ``step`` s each round."""
    for _ in range(300):
        if check():
            return
        clock.advance(step)
        await asyncio.sleep(0.05)
    raise AssertionError("not delivered in time")


@pytest.fixture
def fast_sender(make_settings: Callable[..., Settings]) -> Settings:
    return make_settings(webhook_poll_seconds=0.02)


async def _register(service: Service, admin: dict[str, str], url: str) -> dict[str, Any]:
    created = await service.client.post(
        "/admin/webhooks", json={"url": url, "event_types": ["user.disabled"]}, headers=admin
    )
    assert created.status_code == 201, created.text
    body: dict[str, Any] = created.json()
    return body


async def test_register_list_delete_and_bad_endpoints(service: Service) -> None:
    admin = await admin_headers(service)
    created = await _register(service, admin, "https://hooks.example.com/auth")
    assert created["secret"].startswith("whsec_") and created["event_types"] == ["user.disabled"]
    listed = (await service.client.get("/admin/webhooks", headers=admin)).json()["webhooks"]
    assert [row["id"] for row in listed] == [created["id"]] and "secret" not in listed[0]
    for body in (
        {"url": "ftp://hooks.example.com", "event_types": ["user.disabled"]},
        {"url": "https://u:p@hooks.example.com", "event_types": ["user.disabled"]},
        {"url": "https://hooks.example.com", "event_types": ["user.registered"]},
        {"url": "https://hooks.example.com", "event_types": []},
        {"url": "/relative", "event_types": ["key.rotated"]},
    ):
        response = await service.client.post("/admin/webhooks", json=body, headers=admin)
        assert_error(response, 422, "invalid_request")
    path = f"/admin/webhooks/{created['id']}"
    assert (await service.client.delete(path, headers=admin)).status_code == 204
    assert_error(await service.client.delete(path, headers=admin), 404, "not_found")
    assert_error(await service.client.delete("/admin/webhooks/x", headers=admin), 404, "not_found")
    user = await register_and_login(service, "eve@example.com")
    assert (await service.client.get("/admin/webhooks", headers=user.bearer)).status_code == 403


def test_production_refuses_plain_http_endpoints() -> None:
    from auth_service.errors import InvalidRequestError
    from auth_service.services.webhooks import check_url

    assert check_url("http://127.0.0.1:9/x", production=False)
    with pytest.raises(InvalidRequestError):
        check_url("http://hooks.example.com/x", production=True)


async def test_a_delivery_is_signed_and_retried_until_the_receiver_answers(
    make_container: Callable[..., Container],
    fast_sender: Settings,
    clock: FrozenClock,
    tmp_path: Path,
) -> None:
    record = tmp_path / "received.jsonl"
    async with started(make_container(fast_sender)) as service:
        admin = await admin_headers(service)
        victim = await register_and_login(service, "victim@example.com")
        with receiver(record, fail_first=2) as url:
            hook = await _register(service, admin, url)
            answer = await service.client.post(
                f"/admin/users/{victim.user_id}/disable", headers=admin
            )
            assert answer.status_code == 204  # answered without waiting for the receiver
            await until(lambda: len(received(record)) >= 3, clock, step=1.0)
            deliveries = await recorded(service.container, hook)
    calls = received(record)
    assert len({call["headers"]["webhook-id"] for call in calls}) == 1  # one message, retried
    assert len(deliveries) == 1 and deliveries[0].attempts == 3
    assert deliveries[0].delivered_at is not None and deliveries[0].last_status == 204
    last = calls[-1]
    headers = last["headers"]
    sent_at = datetime.fromtimestamp(int(headers["webhook-timestamp"]), UTC)
    expected = Webhook(hook["secret"]).sign(headers["webhook-id"], sent_at, last["body"])
    assert headers["webhook-signature"] == expected
    payload = json.loads(last["body"])
    assert payload["type"] == "user.disabled" and payload["data"]["subject"] == victim.user_id
    assert victim.pair["access_token"] not in last["body"]


async def recorded(container: Container, hook: dict[str, Any]) -> list[Any]:
    """The hook's deliveries once the first is recorded as delivered: the receiver has the
    request a moment before the sender writes down the answer."""
    for _ in range(200):
        rows = await container.webhooks.deliveries(hook_id(hook))
        if rows and rows[0].delivered_at is not None:
            return list(rows)
        await asyncio.sleep(0.05)
    return list(rows)


def hook_id(hook: dict[str, Any]) -> Any:
    import uuid

    return uuid.UUID(hook["id"])


async def test_a_pending_delivery_survives_a_restart(
    make_container: Callable[..., Container],
    fast_sender: Settings,
    clock: FrozenClock,
    tmp_path: Path,
) -> None:
    record = tmp_path / "received.jsonl"
    port = free_port()
    async with started(make_container(fast_sender)) as first:
        admin = await admin_headers(first)
        victim = await register_and_login(first, "victim@example.com")
        hook = await _register(first, admin, f"http://127.0.0.1:{port}/hooks/auth")
        await first.client.post(f"/admin/users/{victim.user_id}/disable", headers=admin)

        async def attempted() -> bool:
            rows = await first.container.webhooks.deliveries(hook_id(hook))
            return bool(rows) and rows[0].attempts >= 1

        for _ in range(200):  # nobody listens yet: the first attempt fails
            if await attempted():
                break
            await asyncio.sleep(0.05)
        assert await attempted()
    # A new instance on the same database; the receiver is up now.
    async with started(make_container(fast_sender)) as second:
        with receiver(record, fail_first=0, port=port):
            await until(lambda: len(received(record)) >= 1, clock, step=1.0)
            rows = await recorded(second.container, hook)
    assert rows[0].delivered_at is not None and rows[0].attempts >= 2
    assert json.loads(received(record)[0]["body"])["data"]["subject"] == victim.user_id


async def test_a_deleted_endpoint_receives_nothing_more(
    make_container: Callable[..., Container],
    fast_sender: Settings,
    clock: FrozenClock,
    tmp_path: Path,
) -> None:
    """Its pending deliveries are given up: a receiver that comes back gets no event."""
    record = tmp_path / "received.jsonl"
    port = free_port()
    async with started(make_container(fast_sender)) as service:
        admin = await admin_headers(service)
        victim = await register_and_login(service, "victim@example.com")
        hook = await _register(service, admin, f"http://127.0.0.1:{port}/hooks/auth")
        await service.client.post(f"/admin/users/{victim.user_id}/disable", headers=admin)
        path = f"/admin/webhooks/{hook['id']}"
        assert (await service.client.delete(path, headers=admin)).status_code == 204
        with receiver(record, fail_first=0, port=port):
            for _ in range(20):
                clock.advance(5)
                await asyncio.sleep(0.05)
        rows = await service.container.webhooks.deliveries(hook_id(hook))
    assert received(record) == []
    assert len(rows) == 1 and rows[0].gave_up_at is not None and rows[0].delivered_at is None
