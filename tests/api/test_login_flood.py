"""Attacks on the login and registration limits: other spellings of one address, floods of
made-up emails from one IP, IPv6 addresses of one /64, sprayers locking the owner out, and
registrations in bulk. The suite lifts per-IP limits (one IP for every test client); each
test here sets the limit it attacks."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest

from auth_service.container import Container
from auth_service.settings import Settings
from tests.support.http import PASSWORD
from tests.support.service import started

EMAIL = "victim@example.com"
SPELLINGS = [  # the same address: case, spaces, fullwidth letters, ideographic full stops
    "VICTIM@EXAMPLE.COM",
    " victim@example.com ",
    "victim@\uff45x\uff41mple\u3002com",
    "\uff56\uff49\uff43\uff54\uff49\uff4d@example\uff0ecom",
    "victim@example\uff61com",
]


@asynccontextmanager
async def app_with(
    make_container: Callable[..., Container],
    make_settings: Callable[..., Settings],
    **overrides: Any,
) -> AsyncIterator[httpx.AsyncClient]:
    settings = make_settings(trusted_proxies="127.0.0.1", **overrides)
    async with started(make_container(settings)) as service:
        yield service.client


async def _login(client: httpx.AsyncClient, email: str, password: str, ip: str) -> httpx.Response:
    return await client.post(
        "/auth/login",
        json={"email": email, "password": password},
        headers={"X-Forwarded-For": ip},
    )


async def _register(client: httpx.AsyncClient, email: str, ip: str = "198.51.100.1") -> int:
    response = await client.post(
        "/auth/register",
        json={"email": email, "password": PASSWORD},
        headers={"X-Forwarded-For": ip},
    )
    return response.status_code


@pytest.fixture
def flood_app(
    make_container: Callable[..., Container], make_settings: Callable[..., Settings]
) -> Callable[..., Any]:
    def build(**overrides: Any) -> Any:
        return app_with(make_container, make_settings, **overrides)

    return build


async def test_other_spellings_of_the_address_share_its_counters(flood_app: Any) -> None:
    async with flood_app(login_failure_limit=3, login_account_failure_limit=1000) as client:
        assert await _register(client, EMAIL) == 201
        for spelling in SPELLINGS[:3]:  # each reaches the account...
            assert (
                await _login(client, spelling, "a wrong guess!!", "198.51.100.7")
            ).status_code == 401
        for spelling in [EMAIL, *SPELLINGS]:  # ...and the pair's counter is spent for all
            response = await _login(client, spelling, PASSWORD, "198.51.100.7")
            assert response.status_code == 429, spelling


async def test_every_spelling_logs_in_to_the_one_account(flood_app: Any) -> None:
    async with flood_app() as client:
        assert await _register(client, EMAIL) == 201
        for spelling in SPELLINGS:
            assert (await _login(client, spelling, PASSWORD, "198.51.100.7")).status_code == 200
            assert await _register(client, spelling) == 409


async def test_a_flood_of_made_up_emails_from_one_ip_is_stopped(flood_app: Any) -> None:
    async with flood_app(login_ip_limit=5) as client:
        assert await _register(client, EMAIL) == 201
        for attempt in range(4):
            made_up = f"nobody{attempt}@example.com"
            assert (await _login(client, made_up, PASSWORD, "203.0.113.5")).status_code == 401
        # A malformed address matches no account but still counts.
        assert (await _login(client, "not an address", PASSWORD, "203.0.113.5")).status_code == 401
        refused = await _login(client, EMAIL, PASSWORD, "203.0.113.5")
        assert refused.status_code == 429 and int(refused.headers["Retry-After"]) >= 1
        assert (await _login(client, EMAIL, PASSWORD, "203.0.113.6")).status_code == 200


async def test_the_addresses_of_one_ipv6_64_share_a_counter(flood_app: Any) -> None:
    async with flood_app(login_ip_limit=3) as client:
        for host in range(3):
            address = f"2001:db8:1:2::{host + 1:x}"
            assert (
                await _login(client, "nobody@example.com", PASSWORD, address)
            ).status_code == 401
        other_host = await _login(client, "nobody@example.com", PASSWORD, "2001:db8:1:2:ffff::9")
        assert other_host.status_code == 429
        other_net = await _login(client, "nobody@example.com", PASSWORD, "2001:db8:1:3::1")
        assert other_net.status_code == 401


async def test_a_sprayer_is_stopped_but_the_owner_on_a_known_ip_still_logs_in(
    flood_app: Any,
) -> None:
    async with flood_app(login_account_failure_limit=3, login_failure_limit=5) as client:
        assert await _register(client, EMAIL) == 201
        home = "198.51.100.20"
        assert (await _login(client, EMAIL, PASSWORD, home)).status_code == 200  # known now
        for attempt in range(3):  # a sprayer, one guess from each of many IPs
            guess = await _login(client, EMAIL, "a wrong guess!!", f"203.0.113.{attempt}")
            assert guess.status_code == 401
        assert (await _login(client, EMAIL, "another guess!!", "203.0.113.50")).status_code == 429
        # The right password from a new IP is held back by the account limit too...
        assert (await _login(client, EMAIL, PASSWORD, "203.0.113.51")).status_code == 429
        # ...but the owner's known IP is not, and stays bound by its own pair limit.
        assert (await _login(client, EMAIL, PASSWORD, home)).status_code == 200
        # The owner's success does not hand the sprayer a fresh budget.
        assert (await _login(client, EMAIL, "yet another guess", "203.0.113.52")).status_code == 429
        for _ in range(5):
            assert (await _login(client, EMAIL, "typo in it!!", home)).status_code == 401
        assert (await _login(client, EMAIL, PASSWORD, home)).status_code == 429


async def test_known_client_days_zero_turns_the_exemption_off(flood_app: Any) -> None:
    async with flood_app(login_account_failure_limit=2, known_client_days=0) as client:
        assert await _register(client, EMAIL) == 201
        home = "198.51.100.20"
        assert (await _login(client, EMAIL, PASSWORD, home)).status_code == 200
        for attempt in range(2):
            await _login(client, EMAIL, "a wrong guess!!", f"203.0.113.{attempt}")
        assert (await _login(client, EMAIL, PASSWORD, home)).status_code == 429


async def test_registrations_are_limited_per_ip(flood_app: Any) -> None:
    async with flood_app(register_ip_limit=3) as client:
        for n in range(3):
            assert await _register(client, f"user{n}@example.com", "203.0.113.9") == 201
        assert await _register(client, "user9@example.com", "203.0.113.9") == 429
        assert await _register(client, "user9@example.com", "2001:db8::1") == 201


async def test_a_full_normal_lane_sheds_strangers_before_any_work_but_not_a_known_device(
    make_container: Callable[..., Container], make_settings: Callable[..., Settings]
) -> None:
    """Under a flood the strangers' lane is full: their logins and registrations are refused
    at once (no store write, no database read), while a device that logged in before goes on
    and is served by the urgent lane."""
    container = make_container(make_settings(trusted_proxies="127.0.0.1", login_ip_limit=1))
    async with started(container) as service:
        client = service.client
        assert await _register(client, EMAIL) == 201
        home = "198.51.100.20"
        assert (await _login(client, EMAIL, PASSWORD, home)).status_code == 200
        queue = container.hasher.queue
        queue.full = lambda *, urgent: not urgent  # type: ignore[method-assign]
        for _ in range(2):  # refused before the per-IP counter is even touched
            shed = await _login(client, EMAIL, PASSWORD, "203.0.113.77")
            assert shed.status_code == 503 and shed.json()["error"] == "server_busy"
            assert shed.headers["Retry-After"] == "1"
        assert await _register(client, "new@example.com", "203.0.113.78") == 503
        del queue.full
        # The stranger's IP was never counted: its one allowed attempt is still there.
        assert (await _login(client, EMAIL, PASSWORD, "203.0.113.77")).status_code == 200
        queue.full = lambda *, urgent: not urgent  # type: ignore[method-assign]
        # Another account's login from the home IP is a stranger's: shed (having logged in
        # once from an address does not let a flood from it past the edge).
        other = await _login(client, "someone.else@example.com", PASSWORD, home)
        assert other.status_code == 503 and other.json()["error"] == "server_busy"
        # The home device: login_ip_limit=1 was spent by its first login, so a 429 here
        # shows it got past the shedding (and the limit still holds it).
        assert (await _login(client, EMAIL, PASSWORD, home)).status_code == 429


async def test_shed_requests_are_answered_late_but_the_tarpit_is_bounded(
    make_container: Callable[..., Container],
) -> None:
    """A shed request waits before its 503 (a flooding client that waits for answers slows
    down); beyond MAX_TARPITTED waiting requests the answer comes at once."""
    import asyncio
    import json
    import time

    from auth_service.api import shedding

    container = make_container()
    container.hasher.queue.full = lambda *, urgent: not urgent  # type: ignore[method-assign]
    app = type("App", (), {})()
    app.state = type("State", (), {"container": container})()  # type: ignore[attr-defined]
    reached: list[str] = []

    async def inner(scope: Any, receive: Any, send: Any) -> None:
        reached.append(scope["path"])

    middleware = shedding.LoadSheddingMiddleware(inner, delay_seconds=0.2)
    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    body = json.dumps({"email": "nobody@example.com", "password": "x"}).encode()

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": body, "more_body": False}

    scope = {
        "type": "http",
        "method": "POST",
        "path": "/auth/login",
        "app": app,
        "headers": [],
        "client": ("203.0.113.1", 1),
    }
    started_at = time.monotonic()
    await asyncio.gather(*(middleware(scope, receive, send) for _ in range(5)))  # type: ignore[arg-type]
    assert 0.2 <= time.monotonic() - started_at < 1.0  # they wait together, not in turn
    assert [m["status"] for m in sent if m["type"] == "http.response.start"] == [503] * 5
    assert middleware.tarpitted == 0 and reached == []
    middleware.tarpitted = shedding.MAX_TARPITTED  # the tarpit is full: answered at once
    started_at = time.monotonic()
    await middleware(scope, receive, send)  # type: ignore[arg-type]
    assert time.monotonic() - started_at < 0.1
    await middleware({**scope, "path": "/validate"}, receive, send)  # type: ignore[arg-type]
    assert reached == ["/validate"]
    await container.engine.dispose()
    container.hasher.close()
