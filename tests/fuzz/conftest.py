"""One started app per fuzz module, driven from synchronous tests.

Schemathesis and hypothesis call the test function synchronously, once per example, while
the app (its database engine, its store, its lifespan) lives on one event loop. So the app
runs on an event loop of its own in a background thread (``LoopThread``), started the way
``tests/conftest.py`` starts one (``started``: lifespan run, in-process httpx client) on a
database and a store prefix of its own, on the backend under test; each example's request
goes to it with ``Fuzzed.send``.
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import threading
import uuid
from collections.abc import Coroutine, Iterator
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from typing import Any, TypeVar

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from sqlalchemy import update

from auth_service.clock import FrozenClock
from auth_service.container import build_container
from auth_service.db.models import User
from tests.support.backends import drop_prefix, new_prefix, open_store, own_database
from tests.support.clocks import START
from tests.support.http import PASSWORD
from tests.support.service import Service, started
from tests.support.settings import suite_settings

T = TypeVar("T")

REQUEST_SECONDS = 30.0
USER_EMAIL = "fuzz-user@example.com"
ADMIN_EMAIL = "fuzz-admin@example.com"
# Routes whose success revokes every token of the user issued up to now.
REVOKE_ALL_ROUTES = frozenset({"/auth/logout-all", "/auth/password/change"})


class LoopThread:
    """An event loop running in a daemon thread; ``run`` waits for a coroutine on it."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()

    def run(self, coroutine: Coroutine[Any, Any, T], timeout: float = REQUEST_SECONDS) -> T:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=10)
        self.loop.close()


@dataclass
class Fuzzed:
    """The running app, a registered user, an admin and a service client."""

    runner: LoopThread
    service: Service
    clock: FrozenClock
    client_basic: dict[str, str]
    client_id: str
    user_id: str
    sent: int = field(default=0)
    revoked_all: bool = field(default=False)

    def openapi(self) -> dict[str, Any]:
        document: dict[str, Any] = self.service.app.openapi()
        return document

    def send(self, kwargs: dict[str, Any]) -> httpx.Response:
        """One request given as schemathesis' transport arguments (requests' names)."""
        self.sent += 1
        response = self.runner.run(_send(self.service.client, kwargs))
        if response.is_success and response.url.path in REVOKE_ALL_ROUTES:
            self.revoked_all = True
        return response

    def user_bearer(self) -> dict[str, str]:
        """A fresh access token of the fuzz user: a fuzzed logout, logout-all or password
        change revokes the previous one, and every example should reach the route."""
        return self._fresh(USER_EMAIL)

    def admin_bearer(self) -> dict[str, str]:
        return self._fresh(ADMIN_EMAIL)

    def session_of(self, bearer: dict[str, str]) -> str:
        """The id of a session of the fuzz user (the one ``bearer`` belongs to)."""
        listed = self.runner.run(self.service.client.get("/auth/sessions", headers=bearer))
        assert listed.status_code == 200, listed.text
        return str(listed.json()["sessions"][0]["id"])

    def spare_client(self) -> str:
        """A client of its own for one fuzzed delete or secret rotation (never the client the
        other cases authenticate with)."""
        made = self.runner.run(self.service.container.clients.create(name="spare"))
        return made.client.client_id

    def _fresh(self, email: str) -> dict[str, str]:
        # The clock is frozen: a fuzzed logout-all revokes every token issued up to now, so
        # the next token must be issued a second later (as it would be in real time). Only
        # then: the clock moves as little as it can (the key cache's freshness, the key
        # rotation's schedule and the tokens' lifetimes depend on it).
        if self.revoked_all:
            self.clock.advance(1)
            self.revoked_all = False
        return self.runner.run(_login(self.service.client, email))


async def _send(client: httpx.AsyncClient, kwargs: dict[str, Any]) -> httpx.Response:
    options = dict(kwargs)
    method = options.pop("method")
    url = options.pop("url")
    headers = dict(options.pop("headers", None) or {})
    cookies = options.pop("cookies", None) or {}
    if cookies:  # httpx deprecates per-request cookies: send them as the header they are
        headers["Cookie"] = "; ".join(f"{name}={value}" for name, value in cookies.items())
    request: dict[str, Any] = {"headers": headers, "params": options.pop("params", None)}
    if "json" in options:
        request["json"] = options.pop("json")
    if "data" in options:
        data = options.pop("data")
        request["content" if isinstance(data, str | bytes) else "data"] = data
    if "files" in options:
        request["files"] = options.pop("files")
    auth = options.pop("auth", None)
    if auth is not None:
        request["auth"] = tuple(auth)
    options.pop("timeout", None)
    options.pop("verify", None)
    options.pop("allow_redirects", None)
    if options:
        raise AssertionError(f"transport arguments this driver does not know: {sorted(options)}")
    return await client.request(method, url, **request)


async def _login(client: httpx.AsyncClient, email: str) -> dict[str, str]:
    response = await client.post("/auth/login", json={"email": email, "password": PASSWORD})
    assert response.status_code == 200, response.text
    return {"Authorization": f"Bearer {response.json()['access_token']}"}


async def _prepare(
    stack: AsyncExitStack, runner: LoopThread, url: str, prefix: str, keys: Iterator[Any]
) -> Fuzzed:
    store = await open_store(prefix)
    stack.push_async_callback(store.close)
    clock = FrozenClock(START)
    container = build_container(
        suite_settings(url, prefix),
        clock=clock,
        store=store,
        key_generator=lambda _bits: next(keys),
    )
    service = await stack.enter_async_context(started(container))
    user_id = ""
    for email in (USER_EMAIL, ADMIN_EMAIL):
        created = await service.client.post(
            "/auth/register", json={"email": email, "password": PASSWORD}
        )
        assert created.status_code == 201, created.text
        user_id = user_id or created.json()["id"]
        if email == ADMIN_EMAIL:
            async with container.db.writer() as session, session.begin():
                await session.execute(
                    update(User)
                    .where(User.id == uuid.UUID(created.json()["id"]))
                    .values(roles=["admin"])
                )
    made = await container.clients.create(name="fuzz", scopes=["read", "write"])
    raw = f"{made.client.client_id}:{made.client_secret}".encode()
    return Fuzzed(
        runner=runner,
        service=service,
        clock=clock,
        client_basic={"Authorization": "Basic " + base64.b64encode(raw).decode()},
        client_id=made.client.client_id,
        user_id=user_id,
    )


@pytest.fixture(scope="module")
def fuzzed(
    migrated_database: str,
    tmp_path_factory: pytest.TempPathFactory,
    key_pool: list[rsa.RSAPrivateKey],
) -> Iterator[Fuzzed]:
    """A started app on the backend under test, on a database and store prefix of its own."""
    runner = LoopThread()
    stack = AsyncExitStack()
    prefix = new_prefix()
    keys = itertools.cycle(key_pool)

    async def enter() -> Fuzzed:
        url = await stack.enter_async_context(
            own_database(migrated_database, tmp_path_factory.mktemp("fuzz"))
        )
        return await _prepare(stack, runner, url, prefix, keys)

    try:
        yield runner.run(enter(), timeout=120)
    finally:
        try:
            runner.run(stack.aclose(), timeout=60)
        finally:
            runner.close()
            drop_prefix(prefix)
