"""``serve``'s HTTP protocol (auth_service/http_protocol.py): each answer leaves in one write,
and nothing is lost, reordered or held past the loop turn it was written in."""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Iterator
from typing import Any

import pytest
import uvicorn

from auth_service.http_protocol import CoalescingHttpToolsProtocol, CoalescingTransport


class FakeTransport:
    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.closed = False
        self.aborted = False
        self.protocol: Any = None

    def write(self, data: bytes) -> None:
        assert not self.closed, "written after close"
        self.writes.append(bytes(data))

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.aborted = self.closed = True

    def write_eof(self) -> None:
        self.writes.append(b"<eof>")

    def set_protocol(self, protocol: Any) -> None:
        self.protocol = protocol

    def get_write_buffer_size(self) -> int:
        return 7

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"peername": ("127.0.0.1", 5000), "sockname": ("127.0.0.1", 8000)}.get(name, default)


def wrapped() -> tuple[CoalescingTransport, FakeTransport]:
    inner = FakeTransport()
    wrapper = CoalescingTransport(inner, asyncio.get_running_loop())  # type: ignore[arg-type]
    return wrapper, inner


async def test_writes_of_one_turn_leave_in_one_write_at_its_end() -> None:
    transport, inner = wrapped()
    transport.write(b"HTTP/1.1 200 OK\r\n\r\n")
    transport.write(b"")  # nothing: no write of its own
    transport.write(memoryview(b"body"))
    assert inner.writes == []  # held until the turn ends
    assert transport.get_write_buffer_size() == 7 + 23
    await asyncio.sleep(0)
    assert inner.writes == [b"HTTP/1.1 200 OK\r\n\r\nbody"]
    transport.write(b"next")  # a later turn: its own write
    await asyncio.sleep(0)
    assert inner.writes[1:] == [b"next"]


async def test_close_eof_and_a_new_protocol_write_what_is_held_first() -> None:
    transport, inner = wrapped()
    transport.write(b"a")
    transport.write_eof()
    transport.write(b"b")
    transport.set_protocol("upgraded")
    transport.writelines([b"c", b"d"])
    transport.close()
    assert inner.writes == [b"a", b"<eof>", b"b", b"cd"] and inner.closed
    assert inner.protocol == "upgraded"
    await asyncio.sleep(0)  # the cancelled flush writes nothing after the close
    assert inner.writes == [b"a", b"<eof>", b"b", b"cd"]


async def test_abort_and_a_closed_transport_drop_what_is_held() -> None:
    transport, inner = wrapped()
    transport.write(b"lost")
    transport.abort()
    await asyncio.sleep(0)
    assert inner.writes == [] and inner.aborted
    transport, inner = wrapped()
    transport.write(b"late")
    inner.closed = True  # the peer left during the turn
    await asyncio.sleep(0)
    assert inner.writes == []


async def test_everything_else_is_the_transports() -> None:
    transport, _ = wrapped()
    assert transport.get_extra_info("peername") == ("127.0.0.1", 5000)
    assert transport.is_closing() is False


async def test_uvicorns_protocol_writes_a_whole_answer_once() -> None:
    """The protocol ``serve`` runs: a request answered in one write (uvicorn's own writes the
    status line and headers, then the body: two)."""

    async def app(scope: Any, receive: Any, send: Any) -> None:
        headers = [(b"content-length", b"5")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": b"hello"})

    config = uvicorn.Config(app, lifespan="off", log_level="warning")
    config.load()
    state = uvicorn.server.ServerState()
    protocol = CoalescingHttpToolsProtocol(config, state, {})
    inner = FakeTransport()
    protocol.connection_made(inner)  # type: ignore[arg-type]
    protocol.data_received(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    for _ in range(5):
        await asyncio.sleep(0)
    assert len(inner.writes) == 1, inner.writes
    assert inner.writes[0].startswith(b"HTTP/1.1 200 OK\r\n")
    assert inner.writes[0].endswith(b"\r\n\r\nhello")
    protocol.connection_lost(None)


# A real server with the protocol, on a socket: what a client sees.


async def _app(scope: Any, receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    path = scope["path"]
    if path == "/stream":  # three pieces, a pause between: each leaves in its own turn
        await send({"type": "http.response.start", "status": 200, "headers": []})
        for piece in (b"one", b"two", b"three"):
            await send({"type": "http.response.body", "body": piece, "more_body": True})
            await asyncio.sleep(0.2)
        await send({"type": "http.response.body", "body": b""})
        return
    answer = b"x" * 4_000_000 if path == "/big" else path.encode() + b":" + body
    headers = [(b"content-length", str(len(answer)).encode())]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": answer})


@pytest.fixture(scope="module")
def server() -> Iterator[int]:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = int(probe.getsockname()[1])
    config = uvicorn.Config(
        _app, port=port, http=CoalescingHttpToolsProtocol, lifespan="off", log_level="warning"
    )
    running = uvicorn.Server(config)
    thread = threading.Thread(target=running.run, daemon=True)
    thread.start()
    for _ in range(200):
        if running.started:
            break
        threading.Event().wait(0.02)
    yield port
    running.should_exit = True
    thread.join(10)


def _ask(port: int, raw: bytes, until: bytes, *, timeout: float = 10) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as connection:
        connection.sendall(raw)
        seen = b""
        while until not in seen:
            chunk = connection.recv(65536)
            if not chunk:
                break
            seen += chunk
        return seen


def test_pipelined_requests_are_answered_in_order(server: int) -> None:
    raw = b"".join(
        b"POST /r%d HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\n\r\n%d" % (i, i) for i in range(5)
    )
    seen = _ask(server, raw, b"/r4:4")
    assert [seen.index(b"/r%d:%d" % (i, i)) for i in range(5)] == sorted(
        seen.index(b"/r%d:%d" % (i, i)) for i in range(5)
    )
    assert seen.count(b"HTTP/1.1 200 OK") == 5


def test_expect_100_continue_is_answered_before_the_body(server: int) -> None:
    with socket.create_connection(("127.0.0.1", server), timeout=10) as connection:
        connection.sendall(
            b"POST /e HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nExpect: 100-continue\r\n\r\n"
        )
        assert connection.recv(100).startswith(b"HTTP/1.1 100 Continue")
        connection.sendall(b"ok")
        seen = b""
        while b"/e:ok" not in seen:
            seen += connection.recv(65536)


def test_a_large_answer_arrives_whole(server: int) -> None:
    seen = _ask(server, b"GET /big HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", b"\0")
    head, _, body = seen.partition(b"\r\n\r\n")
    assert b"content-length: 4000000" in head and body == b"x" * 4_000_000


def test_a_streamed_answer_is_not_held_back(server: int) -> None:
    """Each piece reaches the client while the app still sleeps before the next."""
    with socket.create_connection(("127.0.0.1", server), timeout=10) as connection:
        connection.sendall(b"GET /stream HTTP/1.1\r\nHost: x\r\n\r\n")
        first = b""
        while b"one" not in first:
            first += connection.recv(65536)
        assert b"two" not in first  # sent a turn later, 0.2 s on
        rest = b""
        while b"0\r\n\r\n" not in rest:
            rest += connection.recv(65536)
        assert b"two" in rest and b"three" in rest


def test_a_client_that_half_closes_after_its_request_gets_its_answer(server: int) -> None:
    """HTTP/1.1 lets a client shut its sending side once the request is out (``nc -N``, some
    health checkers): the loop closes the transport at that EOF, and what the turn held
    must have gone out first (the attack review saw 0 answers in 40 before the fix)."""
    for attempt in range(20):
        with socket.create_connection(("127.0.0.1", server), timeout=10) as connection:
            connection.sendall(
                b"POST /h HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n%02d" % attempt
            )
            connection.shutdown(socket.SHUT_WR)
            seen = b""
            while chunk := connection.recv(65536):
                seen += chunk
        assert seen.startswith(b"HTTP/1.1 200 OK") and seen.endswith(b"/h:%02d" % attempt), seen
