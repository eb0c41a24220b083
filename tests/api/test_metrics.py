"""GET /metrics: who may scrape it, and that each counter moves with the flow it counts."""

from __future__ import annotations

import re
from collections.abc import Callable

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from auth_service.clock import FrozenClock
from auth_service.container import Container
from auth_service.settings import Settings
from tests.support.http import client_headers, register_and_login
from tests.support.mfa import assert_error
from tests.support.service import Service, started

METRICS_TOKEN = "m" * 40


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(text: str, name: str, **labels: str) -> float:
    return samples(text).get((name, frozenset(labels.items())), 0.0)


async def scrape(service: Service) -> str:
    answer = await service.client.get("/metrics")
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"].startswith("text/plain")
    return answer.text


async def test_each_counter_moves_with_its_flow(service: Service, clock: FrozenClock) -> None:
    before = await scrape(service)
    alice = await register_and_login(service)
    await service.client.post(
        "/auth/login", json={"email": "alice@example.com", "password": "wrong password!"}
    )
    refresh = alice.pair["refresh_token"]
    renewed = await service.client.post("/auth/refresh", json={"refresh_token": refresh})
    assert renewed.status_code == 200
    clock.advance(11)  # past AUTH_REFRESH_REUSE_GRACE_SECONDS
    reused = await service.client.post("/auth/refresh", json={"refresh_token": refresh})
    assert reused.status_code == 401
    headers = await client_headers(service)
    token = renewed.json()["access_token"]
    await service.client.post("/validate", json={"token": token}, headers=headers)
    await service.client.post("/validate", json={"token": "x.y.z"}, headers=headers)
    await service.client.get(f"/auth/sessions/{'0' * 8}")
    await service.client.get("/no/such/path/4711")
    after = await scrape(service)

    def moved(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert moved("auth_logins_total", step="password", outcome="success") == 1
    assert moved("auth_logins_total", step="password", outcome="invalid_credentials") == 1
    assert moved("auth_refresh_reuse_detections_total") == 1
    assert moved("auth_validations_total", verdict="valid") == 0  # revoked by the reuse
    assert moved("auth_validations_total", verdict="session_revoked") == 1
    assert moved("auth_validations_total", verdict="malformed") == 1
    route = {"route": "/auth/register", "method": "POST", "status": "201"}
    assert moved("auth_http_requests_total", **route) == 1
    assert (
        moved("auth_http_request_duration_seconds_count", route="/auth/register", method="POST")
        == 1
    )
    # Route templates, never raw paths: the label set stays bounded.
    # (Labels only: a float sample such as a timestamp may hold any digits.)
    labels = " ".join(re.findall(r"\{[^}]*\}", after))
    assert "0" * 8 not in labels and "4711" not in labels
    assert moved("auth_http_requests_total", route="unmatched", method="GET", status="404") == 1
    assert value(after, "auth_signing_keys", status="active") == 1
    assert ("auth_password_hash_queue_depth", frozenset({("queue", "urgent")})) in samples(after)


async def test_rate_limit_hits_are_counted_by_limiter_never_by_account(
    make_container: Callable[..., Container], make_settings: Callable[..., Settings]
) -> None:
    settings = make_settings(login_failure_limit=1)
    async with started(make_container(settings)) as service:
        await register_and_login(service, "bob@example.com")
        before = await scrape(service)
        for _ in range(3):
            await service.client.post(
                "/auth/login", json={"email": "bob@example.com", "password": "not his password"}
            )
        after = await scrape(service)
    limited = value(after, "auth_rate_limited_total", limiter="login:pair") - value(
        before, "auth_rate_limited_total", limiter="login:pair"
    )
    assert limited >= 1
    assert "bob" not in after and "127.0.0.1" not in after


async def test_only_allowed_networks_or_the_token_may_scrape(
    make_container: Callable[..., Container], make_settings: Callable[..., Settings]
) -> None:
    settings = make_settings(metrics_allow=["10.0.0.0/8"], metrics_token=METRICS_TOKEN)
    async with started(make_container(settings)) as service:
        refused = await service.client.get("/metrics")  # from 127.0.0.1
        assert_error(refused, 403, "forbidden")
        wrong = await service.client.get(
            "/metrics", headers={"Authorization": "Bearer " + "n" * 40}
        )
        assert_error(wrong, 403, "forbidden")
        right = await service.client.get(
            "/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"}
        )
        assert right.status_code == 200 and "auth_http_requests_total" in right.text
        transport = httpx.ASGITransport(app=service.app, client=("10.1.2.3", 4000))
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as inside:
            assert (await inside.get("/metrics")).status_code == 200


async def test_a_blank_token_setting_lets_no_empty_bearer_in(
    make_container: Callable[..., Container], make_settings: Callable[..., Settings]
) -> None:
    settings = make_settings(metrics_allow=["10.0.0.0/8"], metrics_token="  ")
    assert settings.metrics_token is None
    async with started(make_container(settings)) as service:
        for header in ("Bearer ", "Bearer", "bearer  "):
            answer = await service.client.get("/metrics", headers={"Authorization": header})
            assert_error(answer, 403, "forbidden")


async def test_metrics_off_serves_nothing(
    make_container: Callable[..., Container], make_settings: Callable[..., Settings]
) -> None:
    async with started(make_container(make_settings(metrics_enabled=False))) as service:
        assert_error(await service.client.get("/metrics"), 404, "not_found")
        spec = (await service.client.get("/openapi.json")).json()
        assert "/metrics" not in spec["paths"]


async def test_a_bad_network_in_the_allow_list_is_refused_at_start(
    make_settings: Callable[..., Settings],
) -> None:
    with pytest.raises(ValueError, match="IP network"):
        make_settings(metrics_allow=["not-a-network"])


async def test_a_forwarded_for_header_lets_no_outsider_in(
    make_container: Callable[..., Container], make_settings: Callable[..., Settings]
) -> None:
    """The allow-list judges the client IP as every limit resolves it: a header from an
    untrusted peer is ignored, and behind our proxy only the hop it appended counts."""
    settings = make_settings(metrics_allow=["127.0.0.1/32"], trusted_proxies=["10.0.0.1"])
    async with started(make_container(settings)) as service:
        cases = [
            (("203.0.113.9", 1), "127.0.0.1", 403),  # an outsider claiming loopback
            (("10.0.0.1", 1), "127.0.0.1, 203.0.113.9", 403),  # prepended by the client
            (("10.0.0.1", 1), "127.0.0.1", 200),  # our proxy forwarding a loopback client
        ]
        for peer, forwarded, expected in cases:
            transport = httpx.ASGITransport(app=service.app, client=peer)
            async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
                answer = await client.get("/metrics", headers={"X-Forwarded-For": forwarded})
            assert answer.status_code == expected, (peer, forwarded, answer.text)
