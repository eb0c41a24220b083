"""Security webhooks attacked (the attacker review's findings, each as a test): malformed and
internal URLs, a receiver that drips its answer or sends an endless body, and the audit of
endpoint changes."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable

import httpx
import pytest

from auth_service.clock import FrozenClock
from auth_service.container import Container
from auth_service.errors import InvalidRequestError
from auth_service.services import webhook_sender
from auth_service.services.webhook_sender import WebhookSender
from auth_service.services.webhooks import check_url, sealer
from auth_service.settings import Settings
from tests.support.http import register_and_login
from tests.support.mfa import assert_error
from tests.support.rotation import admin_headers
from tests.support.service import started


@pytest.mark.parametrize(
    "url",
    [
        "http://[::1/x",
        "http://exa mple.com/x",
        "http://127.0.0.1:99999/x",
        "http://127.0.0.1:0/x",
        "http://bad_host!.example/x",
        "https://a..b/hook",  # an empty label: getaddrinfo raised UnicodeError, never recorded
        "https://a.../",
        "https://" + "a" * 300 + ".com/",
        "https://-a.example/",
    ],
)
def test_a_malformed_url_is_422_never_500(url: str) -> None:
    with pytest.raises(InvalidRequestError):
        check_url(url, production=False)


@pytest.mark.parametrize(
    "url",
    [
        "https://127.0.0.1/x",
        "https://169.254.169.254/latest/meta-data",
        "https://10.1.2.3/x",
        "https://[::1]/x",
        "https://[fd00::1]/x",
        "https://localhost/x",
        "https://hooks.localhost/x",
        "https://[64:ff9b::a9fe:a9fe]/x",  # NAT64 of 169.254.169.254
        "https://[2002:7f00:1::]/x",  # 6to4 of 127.0.0.1
        "https://[::127.0.0.1]/x",  # IPv4-compatible
        "https://[::ffff:10.0.0.1]/x",
        "https://192.0.0.8/x",
    ],
)
def test_production_refuses_internal_addresses(url: str) -> None:
    assert check_url(url, production=False)
    with pytest.raises(InvalidRequestError, match="internal"):
        check_url(url, production=True)
    assert check_url("https://hooks.example.com/x", production=True)


async def test_a_malformed_url_over_http_is_422_and_changes_are_audited(
    make_container: Callable[..., Container], make_settings: Callable[..., Settings]
) -> None:
    async with started(make_container(make_settings())) as service:
        admin = await admin_headers(service)
        bad = await service.client.post(
            "/admin/webhooks",
            json={"url": "http://[::1/x", "event_types": ["user.disabled"]},
            headers=admin,
        )
        assert_error(bad, 422, "invalid_request")
        created = await service.client.post(
            "/admin/webhooks",
            json={"url": "http://127.0.0.1:9/hook", "event_types": ["user.disabled"]},
            headers=admin,
        )
        hook = created.json()["id"]
        assert (await service.client.delete(f"/admin/webhooks/{hook}", headers=admin)).is_success
        events = (await service.client.get("/admin/audit", headers=admin)).json()["events"]
        mine = [(e["type"], e["subject"]) for e in events if e["type"].startswith("admin.webhook")]
        assert mine == [("admin.webhook_deleted", hook), ("admin.webhook_created", hook)]
        assert created.json()["secret"] not in str(events)


class _Receivers:
    """A drip (answers after a minute), an endless body, and a prompt receiver."""

    def __init__(self) -> None:
        self.chunks_sent = 0
        self.prompt = 0

    async def handle(self, request: httpx.Request) -> httpx.Response:
        if request.url.host == "drip.test":
            await asyncio.sleep(60)
            return httpx.Response(204)
        if request.url.host == "big.test":
            return httpx.Response(200, content=self._endless())
        self.prompt += 1
        return httpx.Response(204)

    async def _endless(self) -> AsyncIterator[bytes]:
        while True:
            self.chunks_sent += 1
            yield b"x" * 65536
            await asyncio.sleep(0)


async def test_a_slow_or_endless_receiver_holds_nothing(
    make_container: Callable[..., Container],
    make_settings: Callable[..., Settings],
    clock: FrozenClock,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(webhook_sender, "DEADLINE", 0.5)
    settings = make_settings(webhook_poll_seconds=60)  # the app's own sender stays idle
    async with started(make_container(settings)) as service:
        admin = await admin_headers(service)
        hooks = {}
        for host in ("drip.test", "big.test", "ok.test"):
            created = await service.client.post(
                "/admin/webhooks",
                json={"url": f"http://{host}/hook", "event_types": ["user.disabled"]},
                headers=admin,
            )
            hooks[host] = created.json()["id"]
        victim = await register_and_login(service, "victim@example.com")
        await service.client.post(f"/admin/users/{victim.user_id}/disable", headers=admin)
        receivers = _Receivers()
        sender = WebhookSender(
            service.container.db,
            sealer(settings.secret_values()),
            clock,
            production=False,
            poll_seconds=1,
        )
        transport = httpx.MockTransport(receivers.handle)
        async with httpx.AsyncClient(transport=transport) as http:
            started_at = time.monotonic()
            assert await sender.send_due(http) == 3
            took = time.monotonic() - started_at
        assert took < 3, took  # the drip cost its deadline, not a minute, and held no other
        assert receivers.prompt == 1
        assert receivers.chunks_sent <= 2  # the endless body was never read
        import uuid

        rows = {
            host: (await service.container.webhooks.deliveries(uuid.UUID(hook)))[0]
            for host, hook in hooks.items()
        }
    assert rows["ok.test"].delivered_at is not None
    assert rows["big.test"].delivered_at is not None and rows["big.test"].last_status == 200
    drip = rows["drip.test"]
    assert drip.delivered_at is None and drip.last_error == "no answer within 0.5 s"
    assert drip.next_attempt_at < clock.now() + webhook_sender.LEASE  # retried on back-off


async def test_an_unexpected_failure_of_one_post_is_recorded_and_backs_off(
    make_container: Callable[..., Container],
    make_settings: Callable[..., Settings],
    clock: FrozenClock,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Found by the attacker review: an exception other than a timeout escaped the post, so
    the attempt was never recorded and the delivery was claimed again forever."""
    settings = make_settings(webhook_poll_seconds=60)
    async with started(make_container(settings)) as service:
        admin = await admin_headers(service)
        created = await service.client.post(
            "/admin/webhooks",
            json={"url": "http://ok.test/hook", "event_types": ["user.disabled"]},
            headers=admin,
        )
        victim = await register_and_login(service, "victim@example.com")
        await service.client.post(f"/admin/users/{victim.user_id}/disable", headers=admin)
        sender = WebhookSender(
            service.container.db,
            sealer(settings.secret_values()),
            clock,
            production=True,
            poll_seconds=1,
        )

        async def broken(*_args: object) -> tuple[int | None, str]:
            raise UnicodeError("label empty or too long")

        monkeypatch.setattr(sender, "_post", broken)
        async with httpx.AsyncClient() as http:
            assert await sender.send_due(http) == 1  # no exception out of the round
        import uuid

        [row] = await service.container.webhooks.deliveries(uuid.UUID(created.json()["id"]))
    assert row.attempts == 1 and row.last_error == "not sent: UnicodeError"
    assert row.delivered_at is None and row.next_attempt_at > clock.now()
