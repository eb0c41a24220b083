"""Attacks on client authentication's failure limits, through HTTP (``/validate``).

The app runs behind a trusted proxy (127.0.0.1, the in-process client's peer) so each request
names its client IP in ``X-Forwarded-For``. The limit is 3 failures a minute per client id and
per IP. Every argon2 call is recorded with its ``urgent`` flag, so "no hash ran" and "it ran
without priority" are counted, not timed.
"""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

import httpx
import pytest

from auth_service.container import Container
from auth_service.crypto.passwords import PasswordHasher
from auth_service.services.client_auth import id_failure_key, ip_failure_key
from auth_service.services.limits import ip_group
from auth_service.settings import Settings
from tests.support.clients import DatabaseDown, DatabaseRefused
from tests.support.http import VALIDATE_PATHS, body_with_token, client_headers
from tests.support.service import Service, started

LIMIT = 3
ATTACKER = "203.0.113.66"
HOME = "192.0.2.10"  # where the real client runs
ELSEWHERE = "192.0.2.77"  # the real client, moved (a new pod) and never seen before
UNKNOWN_ID = "svc_nobodynobodynobo"


@dataclass
class Hashes:
    """Every argon2 verification run: ("verify" | "dummy", urgent)."""

    calls: list[tuple[str, bool]] = field(default_factory=list)

    def install(self, hasher: PasswordHasher, monkeypatch: pytest.MonkeyPatch) -> None:
        verify, dummy = hasher.verify, hasher.verify_dummy

        async def recording_verify(hash: str, password: str, *, urgent: bool = False) -> bool:
            self.calls.append(("verify", urgent))
            return await verify(hash, password, urgent=urgent)

        async def recording_dummy(password: str, *, urgent: bool = False) -> None:
            self.calls.append(("dummy", urgent))
            await dummy(password, urgent=urgent)

        monkeypatch.setattr(hasher, "verify", recording_verify)
        monkeypatch.setattr(hasher, "verify_dummy", recording_dummy)


@dataclass
class World:
    service: Service
    client_id: str
    secret: str
    hashes: Hashes

    @property
    def wrong(self) -> str:
        return self.secret[:-1] + ("A" if self.secret[-1] != "A" else "B")

    async def call(
        self, ip: str, secret: str | None = None, client_id: str | None = None
    ) -> httpx.Response:
        raw = f"{client_id or self.client_id}:{secret or self.secret}".encode()
        headers = {
            "Authorization": "Basic " + base64.b64encode(raw).decode(),
            "X-Forwarded-For": ip,
        }
        return await self.service.client.post("/validate", json={"token": "x"}, headers=headers)

    async def status(self, ip: str, secret: str | None = None, client_id: str | None = None) -> int:
        return (await self.call(ip, secret, client_id)).status_code

    def forget(self) -> None:
        """This instance drops its remembered verification (a restart, another instance)."""
        self.service.container.clients.forget(self.client_id)


@pytest.fixture
async def world(
    make_settings: Callable[..., Settings],
    make_container: Callable[..., Container],
    monkeypatch: pytest.MonkeyPatch,
) -> AsyncIterator[World]:
    settings = make_settings(client_auth_failure_limit=LIMIT, trusted_proxies=["127.0.0.1"])
    container = make_container(settings)
    async with started(container) as service:
        created = await container.clients.create(name="b")
        hashes = Hashes()
        hashes.install(container.hasher, monkeypatch)
        yield World(service, created.client.client_id, created.client_secret, hashes)


async def test_a_flood_from_one_ip_is_refused_before_any_hash(world: World) -> None:
    for _ in range(LIMIT):
        assert await world.status(ATTACKER, world.wrong) == 401
    assert len(world.hashes.calls) == LIMIT
    limited = await world.call(ATTACKER, world.wrong)
    assert limited.status_code == 429, limited.text
    assert limited.json()["error"] == "rate_limited"
    assert 1 <= int(limited.headers["retry-after"]) <= 60
    # Neither another wrong secret, nor an unknown client id's dummy, nor an unremembered
    # right secret from that IP costs a hash while it is limited.
    assert await world.status(ATTACKER, world.wrong + "x") == 429
    assert await world.status(ATTACKER, client_id=UNKNOWN_ID) == 429
    assert await world.status(ATTACKER) == 429
    assert len(world.hashes.calls) == LIMIT


async def test_the_real_client_on_another_ip_keeps_working_through_a_flood(
    world: World,
) -> None:
    assert await world.status(HOME) == 200
    for index in range(LIMIT + 5):
        assert await world.status(ATTACKER, f"{world.wrong}{index}") in (401, 429)
    assert await world.status(ATTACKER, world.wrong) == 429
    before = len(world.hashes.calls)
    assert await world.status(HOME) == 200  # remembered: no hash
    assert await world.status(ATTACKER) == 200  # remembered, even from the limited IP
    assert len(world.hashes.calls) == before
    world.forget()
    assert await world.status(HOME) == 200  # not remembered: verified, not refused
    assert world.hashes.calls[before:] == [("verify", True)]


async def test_successes_are_not_counted_as_failures(world: World) -> None:
    for _ in range(LIMIT + 2):
        world.forget()
        assert await world.status(ATTACKER) == 200
    assert world.hashes.calls == [("verify", True)] * (LIMIT + 2)
    assert await world.status(ATTACKER, world.wrong) == 401  # the IP has its whole budget


async def test_failures_of_a_client_id_cost_it_priority_never_access(world: World) -> None:
    """Wrong secrets for one client id from many IPs (each under its own limit) cannot lock
    the real client out: they only take away argon2 priority from unfamiliar IPs."""
    assert await world.status(HOME) == 200  # HOME becomes a familiar IP of this client
    assert world.hashes.calls == [("verify", True)]
    sprayers = [f"198.51.100.{n}" for n in range(1, LIMIT + 3)]
    for ip in sprayers:
        assert await world.status(ip, world.wrong) == 401  # never 429: no lockout
    assert world.hashes.calls[1:] == [("verify", True)] * LIMIT + [("verify", False)] * 2
    store = world.service.container.store
    (failures,) = await store.get_many([id_failure_key(world.client_id)])
    assert failures == str(LIMIT + 2)
    calls = len(world.hashes.calls)
    assert await world.status(ELSEWHERE) == 200  # remembered: accepted with no hash
    assert len(world.hashes.calls) == calls
    world.forget()
    assert await world.status(ELSEWHERE) == 200  # an unfamiliar IP: verified, no priority
    world.forget()
    assert await world.status(HOME) == 200  # its familiar IP keeps its priority
    assert world.hashes.calls[calls:] == [("verify", False), ("verify", True)]


async def test_an_unknown_client_id_costs_a_plain_dummy_hash(world: World) -> None:
    assert await world.status(ATTACKER, client_id=UNKNOWN_ID) == 401
    assert world.hashes.calls == [("dummy", False)]
    store = world.service.container.store
    (per_id,) = await store.get_many([id_failure_key(UNKNOWN_ID)])
    assert per_id is None  # no counter for a client that does not exist
    (per_ip,) = await store.get_many([ip_failure_key(ip_group(ATTACKER))])
    assert per_ip == "1"


async def test_addresses_of_one_ipv6_64_share_one_counter(world: World) -> None:
    one_64 = ["2001:db8:1:2::1", "2001:db8:1:2:aaaa::2", "2001:db8:1:2:ffff:ffff:ffff:ffff"]
    for ip in one_64:
        assert await world.status(ip, world.wrong) == 401
    assert await world.status("2001:db8:1:2::99", world.wrong) == 429
    assert await world.status("2001:db8:1:3::1", world.wrong) == 401  # the next /64
    store = world.service.container.store
    shared, other = await store.get_many(
        [ip_failure_key("2001:db8:1:2::/64"), ip_failure_key("2001:db8:1:3::/64")]
    )
    assert (shared, other) == (str(LIMIT + 1), "1")


# -- the database failing, and client ids outside the issued charset -------------------------


def _basic(client_id: str, secret: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{client_id}:{secret}".encode()).decode()}


@pytest.mark.parametrize("down", [DatabaseDown, DatabaseRefused])
async def test_a_database_outage_in_client_auth_is_503_not_500(
    service: Service, monkeypatch: pytest.MonkeyPatch, down: type
) -> None:
    """The database failing during client authentication is 503, as a store outage is
    (it was an unhandled 500)."""
    headers = await client_headers(service)
    monkeypatch.setattr(service.container.clients._authenticator, "_sessionmaker", down)
    response = await service.client.post("/validate", json={"token": "x"}, headers=headers)
    assert response.status_code == 503, response.text
    assert response.json()["error"] == "service_unavailable"
    assert response.headers["retry-after"] == "1"
    assert "5432" not in response.text and "SELECT" not in response.text


@pytest.mark.parametrize("client_id", ["svc_x%00", "%00", "svc_" + "%00" * 8])
async def test_a_nul_in_the_client_id_is_401_not_500(service: Service, client_id: str) -> None:
    """A NUL in the Basic client id used to reach the primary-key lookup, which PostgreSQL
    refuses: an unauthenticated 500 with a logged trace. Ids outside the issued charset are
    refused before any lookup."""
    for path in VALIDATE_PATHS:
        response = await service.client.post(
            path, content=body_with_token(path, b'"x"'), headers=_basic(client_id, "secret")
        )
        assert response.status_code == 401, response.text
        assert response.json()["error"] == "invalid_client"
