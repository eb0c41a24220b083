"""Attack: a success answered before its write commits (API.md: "Every write is committed
before its success response starts").

httpx's ASGITransport waits for the whole app call, so it cannot see the defect. A real
server sends the response as soon as the app sends it, and the app may still be running
(a yield-dependency's exit code runs then). ``EarlyTransport`` does what a server does: it
answers when the response body is complete and leaves the app running. Every commit is
made slow (``SlowCommit``), so a commit that happens after the answer is still pending when
the client's next request arrives.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import event, select
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session
from sqlalchemy.util import await_only

from auth_service.app import create_app
from auth_service.container import Container
from auth_service.crypto.passwords import hash_opaque
from auth_service.db.models import PasswordResetToken, User
from tests.support.http import PASSWORD

COMMIT_DELAY = 0.3


class SlowCommit(Session):
    """Every commit waits ``COMMIT_DELAY`` seconds (on the event loop, which keeps serving)
    before it happens, however it is made (``session.commit()`` or a ``begin()`` block)."""


class FailingCommit(Session):
    """Every commit fails as a lost connection would."""


@event.listens_for(SlowCommit, "before_commit")
def _wait(_session: Session) -> None:
    await_only(asyncio.sleep(COMMIT_DELAY))


@event.listens_for(FailingCommit, "before_commit")
def _fail(_session: Session) -> None:
    raise OperationalError("COMMIT", {}, Exception("the database went away"))


class EarlyTransport(httpx.AsyncBaseTransport):
    """Returns the response when its last body chunk is sent, like a real server; the app
    call runs on in the background (collected in ``tasks``)."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.tasks: list[asyncio.Task[None]] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        body = await request.aread()
        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": request.method,
            "scheme": "http",
            "path": request.url.path,
            "raw_path": request.url.raw_path,
            "query_string": request.url.query,
            "root_path": "",
            "headers": [(k.lower(), v) for k, v in request.headers.raw],
            "client": ("127.0.0.1", 50000),
            "server": ("testserver", 80),
        }
        sent_body = False
        started: dict[str, Any] = {}
        chunks: list[bytes] = []
        done = asyncio.get_running_loop().create_future()

        async def receive() -> dict[str, Any]:
            nonlocal sent_body
            if not sent_body:
                sent_body = True
                return {"type": "http.request", "body": body, "more_body": False}
            await asyncio.Event().wait()  # the client never disconnects
            raise AssertionError("unreachable")

        async def send(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                started.update(message)
            elif message["type"] == "http.response.body":
                chunks.append(message.get("body", b""))
                if not message.get("more_body") and not done.done():
                    done.set_result(None)

        async def run() -> None:
            try:
                await self.app(scope, receive, send)
            finally:
                if not done.done():
                    done.set_result(None)

        self.tasks.append(asyncio.create_task(run()))
        await done
        return httpx.Response(
            started.get("status", 500), headers=started.get("headers", []), content=b"".join(chunks)
        )


@asynccontextmanager
async def early_client(container: Container) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(container=container)
    transport = EarlyTransport(app)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://testserver") as client,
    ):
        yield client
        await asyncio.gather(*transport.tasks, return_exceptions=True)


def _commits_with(container: Container, session_class: type[Session]) -> Container:
    for maker in (container.db.writer, container.db.reader):
        maker.configure(sync_session_class=session_class)
    return container


def _slow(container: Container) -> Container:
    return _commits_with(container, SlowCommit)


USER = {"email": "alice@example.com", "password": PASSWORD}


async def test_a_registration_is_committed_before_the_201(
    make_container: Callable[..., Container],
) -> None:
    async with early_client(_slow(make_container())) as client:
        created = await client.post("/auth/register", json=USER)
        assert created.status_code == 201
        login = await client.post("/auth/login", json=USER)
        assert login.status_code == 200, login.text


async def test_a_logout_is_committed_before_the_204(
    make_container: Callable[..., Container],
) -> None:
    async with early_client(_slow(make_container())) as client:
        assert (await client.post("/auth/register", json=USER)).status_code == 201
        pair = (await client.post("/auth/login", json=USER)).json()
        bearer = {"Authorization": f"Bearer {pair['access_token']}"}
        out = await client.post("/auth/logout", headers=bearer)
        assert out.status_code == 204, out.text
        refreshed = await client.post(
            "/auth/refresh", json={"refresh_token": pair["refresh_token"]}
        )
        assert refreshed.status_code == 401


async def test_a_password_reset_is_committed_before_the_204(
    make_container: Callable[..., Container],
) -> None:
    container = make_container()
    async with early_client(_slow(container)) as client:
        assert (await client.post("/auth/register", json=USER)).status_code == 201
        token = "a-reset-token-for-this-test-only-0123456789abcdef"
        now = container.clock.now()
        async with container.db.transaction() as db:
            user = (await db.scalars(select(User))).one()
            db.add(
                PasswordResetToken(
                    user_id=user.id,
                    token_hash=hash_opaque(token),
                    created_at=now,
                    expires_at=now + timedelta(minutes=10),
                )
            )
        new = "a new and rather long passphrase"
        reset = await client.post(
            "/auth/password/reset", json={"token": token, "new_password": new}
        )
        assert reset.status_code == 204, reset.text
        login = await client.post("/auth/login", json={"email": USER["email"], "password": new})
        assert login.status_code == 200, login.text


@pytest.mark.parametrize("path", ["/auth/register"])
async def test_a_failed_commit_is_a_503_and_nothing_is_stored(
    make_container: Callable[..., Container], path: str
) -> None:
    container = make_container()
    async with early_client(container) as client:
        _commits_with(container, FailingCommit)
        failed = await client.post(path, json=USER)
        assert failed.status_code == 503
        assert failed.json()["error"] == "service_unavailable"
        _commits_with(container, Session)
        login = await client.post("/auth/login", json=USER)
        assert login.status_code == 401  # nothing was stored
        assert (await client.post(path, json=USER)).status_code == 201
