"""The WebSocket helpers against real tokens of the real service: ``authenticate_websocket``'s
1008/1013 closes (through Starlette's TestClient and through a real uvicorn + websockets
handshake, the code a browser sees), and ``close_when_revoked`` with a fake RevocationSource."""

import asyncio
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import httpx
import pytest
from fastapi import FastAPI, WebSocket
from starlette.websockets import WebSocketDisconnect, WebSocketState

from auth_service_client.types import Check, Verdict
from auth_service_client.web_ws import authenticate_websocket, close_when_revoked
from conftest import Service, free_port
from helpers import TestClient, remote_check


class FakeSource:
    """A RevocationSource whose revocations the test makes (from its own thread)."""

    def __init__(self) -> None:
        self.sids: set[str] = set()
        self.callbacks: list[tuple[asyncio.AbstractEventLoop, Callable[[], None]]] = []

    def revoked_reason(self, claims: Mapping[str, Any]) -> str | None:
        return "session_revoked" if claims.get("sid") in self.sids else None

    def on_revocation(self, callback: Callable[[], None]) -> Callable[[], None]:
        entry = (asyncio.get_running_loop(), callback)
        self.callbacks.append(entry)
        return lambda: self.callbacks.remove(entry)

    def revoke(self, sid: str) -> None:
        self.sids.add(sid)
        for loop, callback in list(self.callbacks):
            loop.call_soon_threadsafe(callback)


def make_app(check: Check, source: FakeSource, reasons: list[str | None]) -> FastAPI:
    app = FastAPI()

    @app.websocket("/ws")
    async def echo(ws: WebSocket) -> None:
        claims = await authenticate_websocket(ws, check, query_param=ws.query_params.get("q"))
        if claims is None:
            return
        async with close_when_revoked(ws, claims, source) as guard:
            await ws.send_json({"sub": claims["sub"], "protocol": ws.scope.get("subprotocols")})
            async for text in ws.iter_text():
                await ws.send_text(text)
        reasons.append(guard.reason)

    return app


@pytest.fixture(scope="module")
def check(service: Service) -> Check:
    return remote_check(service.base_url, service.client_id, service.client_secret)


def closed_with(client: TestClient, path: str = "/ws", **kwargs: Any) -> WebSocketDisconnect:
    with client.websocket_connect(path, **kwargs) as ws, pytest.raises(WebSocketDisconnect) as e:
        ws.receive_text()
    return e.value


def test_a_header_token_is_accepted(service: Service, check: Check) -> None:
    pair = service.login()
    client = TestClient(make_app(check, FakeSource(), []))
    headers = {"Authorization": f"Bearer {pair['access_token']}"}
    with client.websocket_connect("/ws", headers=headers) as ws:
        assert ws.receive_json()["sub"] == service.validate(pair["access_token"])["claims"]["sub"]
        ws.send_text("ping")
        assert ws.receive_text() == "ping"


def test_a_subprotocol_token_is_accepted_as_bearer(service: Service, check: Check) -> None:
    token = service.login()["access_token"]
    client = TestClient(make_app(check, FakeSource(), []))
    with client.websocket_connect("/ws", subprotocols=["bearer", token]) as ws:
        assert ws.accepted_subprotocol == "bearer"
        assert ws.receive_json()["sub"]


def test_the_query_parameter_only_when_enabled(service: Service, check: Check) -> None:
    token = service.login()["access_token"]
    client = TestClient(make_app(check, FakeSource(), []))
    with client.websocket_connect(f"/ws?q=access_token&access_token={token}") as ws:
        assert ws.receive_json()["sub"]
    refused = closed_with(client, f"/ws?access_token={token}")
    assert (refused.code, refused.reason) == (1008, "missing token")


def test_a_missing_token_closes_1008(check: Check) -> None:
    closed = closed_with(TestClient(make_app(check, FakeSource(), [])))
    assert (closed.code, closed.reason) == (1008, "missing token")


def test_two_authorization_headers_close_1008(service: Service, check: Check) -> None:
    """Which of two headers counts would depend on the reader: neither does."""
    mine, other = service.login()["access_token"], service.login()["access_token"]
    client = TestClient(make_app(check, FakeSource(), []))
    headers = httpx.Headers(
        [("authorization", f"Bearer {mine}"), ("authorization", f"Bearer {other}")]
    )
    closed = closed_with(client, headers=headers)
    assert closed.code == 1008


def test_a_bad_token_closes_1008_with_the_reason(check: Check) -> None:
    client = TestClient(make_app(check, FakeSource(), []))
    closed = closed_with(client, headers={"Authorization": "Bearer not-a-jwt"})
    assert (closed.code, closed.reason) == (1008, "invalid token: malformed")
    closed = closed_with(client, subprotocols=["bearer", "not.a.jwt"])
    assert closed.code == 1008


def test_a_logged_out_token_closes_1008(service: Service, check: Check) -> None:
    pair = service.login()
    service.logout(pair)
    client = TestClient(make_app(check, FakeSource(), []))
    closed = closed_with(client, headers={"Authorization": f"Bearer {pair['access_token']}"})
    assert closed.code == 1008
    assert closed.reason.endswith("_revoked")


def test_an_unreachable_service_closes_1013_not_1011(service: Service) -> None:
    dead = remote_check(f"http://127.0.0.1:{free_port()}", "x", "y")
    client = TestClient(make_app(dead, FakeSource(), []))
    token = service.login()["access_token"]
    closed = closed_with(client, headers={"Authorization": f"Bearer {token}"})
    assert (closed.code, closed.reason) == (1013, "auth service unavailable")


def test_a_revocation_closes_the_live_socket_1008(service: Service, check: Check) -> None:
    pair = service.login()
    sid = service.validate(pair["access_token"])["claims"]["sid"]
    source, reasons = FakeSource(), list[str | None]()
    client = TestClient(make_app(check, source, reasons))
    with client.websocket_connect("/ws", subprotocols=["bearer", pair["access_token"]]) as ws:
        ws.receive_json()
        ws.send_text("still here")
        assert ws.receive_text() == "still here"
        source.revoke("some-other-session")
        ws.send_text("and now")
        assert ws.receive_text() == "and now"
        source.revoke(sid)
        with pytest.raises(WebSocketDisconnect) as closed:
            ws.receive_text()
    assert (closed.value.code, closed.value.reason) == (1008, "session_revoked")
    assert reasons == ["session_revoked"]
    assert source.callbacks == []  # unregistered on exit


def test_an_already_revoked_token_is_closed_at_once(service: Service, check: Check) -> None:
    pair = service.login()
    source = FakeSource()
    source.sids.add(service.validate(pair["access_token"])["claims"]["sid"])
    client = TestClient(make_app(check, source, []))
    closed = closed_with(client, headers={"Authorization": f"Bearer {pair['access_token']}"})
    assert (closed.code, closed.reason) == (1008, "session_revoked")


def test_the_socket_is_closed_when_the_token_expires(service: Service, check: Check) -> None:
    async def short_lived(token: str) -> Verdict:
        verdict = await check(token)
        assert verdict.claims is not None
        return Verdict(True, {**verdict.claims, "exp": time.time() + 0.5})

    client = TestClient(make_app(short_lived, FakeSource(), []))
    token = service.login()["access_token"]
    with client.websocket_connect("/ws", headers={"Authorization": f"Bearer {token}"}) as ws:
        ws.receive_json()
        started = time.monotonic()
        with pytest.raises(WebSocketDisconnect) as closed:
            ws.receive_text()
    assert (closed.value.code, closed.value.reason) == (1008, "expired")
    assert time.monotonic() - started < 5


# -- over a real handshake: the close code a browser sees --------------------------------------
SERVED_SOURCE = FakeSource()


@pytest.fixture(scope="module")
def served_app(check: Check) -> Iterator[str]:
    uvicorn = pytest.importorskip("uvicorn")
    port = free_port()
    config = uvicorn.Config(make_app(check, SERVED_SOURCE, []), port=port, log_level="warning")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.started
    yield f"ws://127.0.0.1:{port}/ws"
    server.should_exit = True
    thread.join(10)


def _real_close(url: str, **kwargs: Any) -> tuple[int, str]:
    client = pytest.importorskip("websockets.sync.client")
    exceptions = pytest.importorskip("websockets.exceptions")
    with (
        client.connect(url, open_timeout=10, **kwargs) as ws,
        pytest.raises(exceptions.ConnectionClosed) as closed,
    ):
        ws.recv(timeout=10)
    received = closed.value.rcvd
    assert received is not None
    return received.code, received.reason


def test_a_real_client_sees_1008_and_1013_not_a_refused_handshake(
    served_app: str, service: Service
) -> None:
    assert _real_close(served_app) == (1008, "missing token")
    bad = {"additional_headers": {"Authorization": "Bearer nope"}}
    assert _real_close(served_app, **bad) == (1008, "invalid token: malformed")
    assert _real_close(served_app, subprotocols=["bearer", "x.y.z"])[0] == 1008


def test_a_real_client_sees_1008_on_revocation(served_app: str, service: Service) -> None:
    client = pytest.importorskip("websockets.sync.client")
    exceptions = pytest.importorskip("websockets.exceptions")
    pair = service.login()
    sid = service.validate(pair["access_token"])["claims"]["sid"]
    with client.connect(served_app, subprotocols=["bearer", pair["access_token"]]) as ws:
        assert ws.subprotocol == "bearer"
        ws.recv(timeout=10)
        ws.send("ping")
        assert ws.recv(timeout=10) == "ping"
        SERVED_SOURCE.revoke(sid)
        with pytest.raises(exceptions.ConnectionClosed) as closed:
            ws.recv(timeout=10)
    assert closed.value.rcvd is not None
    assert (closed.value.rcvd.code, closed.value.rcvd.reason) == (1008, "session_revoked")


# -- the guard's cancellation, without a socket ---------------------------------------------
class FakeSocket:
    application_state = client_state = WebSocketState.CONNECTED

    def __init__(self) -> None:
        self.closed: list[tuple[int, str | None]] = []

    async def close(self, code: int = 1000, reason: str | None = None) -> None:
        self.closed.append((code, reason))
        self.application_state = WebSocketState.DISCONNECTED


async def test_the_guard_swallows_only_its_own_cancellation() -> None:
    source, socket = FakeSource(), FakeSocket()
    claims = {"sid": "s1", "exp": time.time() + 60}

    async def guarded(source: FakeSource, socket: FakeSocket) -> str | None:
        async with close_when_revoked(socket, claims, source) as guard:  # type: ignore[arg-type]
            await asyncio.sleep(30)
        return guard.reason

    task = asyncio.create_task(guarded(source, socket))
    await asyncio.sleep(0.01)
    source.revoke("s1")
    assert await asyncio.wait_for(task, 5) == "session_revoked"
    assert socket.closed == [(1008, "session_revoked")]
    assert source.callbacks == []

    other, socket = FakeSource(), FakeSocket()
    outer = asyncio.create_task(guarded(other, socket))
    await asyncio.sleep(0.01)
    outer.cancel()  # someone else's cancellation propagates, and closes nothing
    with pytest.raises(asyncio.CancelledError):
        await outer
    assert socket.closed == []
    assert other.callbacks == []
