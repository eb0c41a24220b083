"""The access log (auth_service/access_log.py): one line a request, the route template and
never the raw path or query, written off the request path in whole-line chunks."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Callable, Iterator

import pytest

from auth_service.access_log import CHUNK_BYTES, FLUSH_SECONDS, AccessLog, access_log_enabled
from auth_service.container import Container
from auth_service.settings import Settings
from tests.support.http import client_headers, register_and_login
from tests.support.service import Service, started


class Writes:
    """A sink recording each ``write`` (a chunk) separately."""

    def __init__(self) -> None:
        self.chunks: list[str] = []

    def write(self, text: str) -> int:
        self.chunks.append(text)
        return len(text)

    def flush(self) -> None:
        return None

    @property
    def lines(self) -> list[str]:
        return "".join(self.chunks).splitlines()


class Broken(Writes):
    def write(self, text: str) -> int:
        raise OSError("stderr is closed")


@pytest.fixture
def info_on_access_logger() -> Iterator[None]:
    """As ``serve`` leaves it: INFO reaches uvicorn's access logger."""
    logger = logging.getLogger("uvicorn.access")
    saved = logger.level
    logger.setLevel(logging.INFO)
    yield
    logger.setLevel(saved)


@pytest.fixture
async def service(
    info_on_access_logger: None,
    make_container: Callable[..., Container],
    make_settings: Callable[..., Settings],
) -> AsyncIterator[tuple[Service, Writes]]:
    sink = Writes()
    async with started(make_container(make_settings(log_format="json"))) as running:
        running.app.state.access_log.sink = lambda: sink
        yield running, sink


async def lines_of(service: Service, sink: Writes) -> list[dict[str, object]]:
    service.app.state.access_log.flush()
    return [json.loads(line) for line in sink.lines]


async def test_a_line_has_the_route_template_never_the_path_or_query(
    service: tuple[Service, Writes],
) -> None:
    running, sink = service
    await running.client.get("/admin/users?email=alice%40example.com")
    await running.client.get("/auth/sessions/0123456789abcdef")
    await running.client.get("/no/such/secret-path-4711")
    entries = await lines_of(running, sink)
    assert [e["route"] for e in entries] == [
        "/admin/users",
        "/auth/sessions/{session_id}",
        "unmatched",
    ]
    text = "\n".join(sink.lines)
    assert "alice" not in text and "0123456789abcdef" not in text
    assert "path" not in entries[0] and "path" not in entries[1]  # matched: the template only
    assert entries[2]["path"] == "/no/such/secret-path-4711"  # unmatched: what was asked
    first = entries[0]
    assert first["logger"] == "auth_service.access" and first["level"] == "info"
    assert first["method"] == "GET" and first["status"] == 401
    assert first["message"] == "GET /admin/users 401"
    assert isinstance(first["duration_ms"], float) and first["client"] == "127.0.0.1"
    assert len(str(first["request_id"])) == 16


async def test_a_line_carries_the_request_id_and_the_authenticated_client_never_its_secret(
    service: tuple[Service, Writes],
) -> None:
    running, sink = service
    alice = await register_and_login(running, "alice@example.com")
    headers = await client_headers(running)
    secret = headers["Authorization"]
    token = alice.pair["access_token"]
    await running.client.post(
        "/validate", json={"token": token}, headers={**headers, "X-Request-ID": "trace-7"}
    )
    entries = await lines_of(running, sink)
    validated = [e for e in entries if e["route"] == "/validate"]
    assert validated and validated[0]["request_id"] == "trace-7"
    assert validated[0]["client_id"]  # the id of the client that authenticated
    joined = "\n".join(sink.lines)
    assert token not in joined and secret.split()[1] not in joined
    assert alice.pair["refresh_token"] not in joined


async def test_a_forged_forwarded_for_hop_cannot_break_a_line(
    info_on_access_logger: None,
    make_container: Callable[..., Container],
    make_settings: Callable[..., Settings],
) -> None:
    """Behind a trusted proxy the client address is a header's hop: quoted and escaped, in
    text lines as in JSON, so it can neither end a line nor fake a field."""
    for log_format in ("text", "json"):
        sink = Writes()
        settings = make_settings(log_format=log_format, trusted_proxies=["127.0.0.1"])
        async with started(make_container(settings)) as running:
            running.app.state.access_log.sink = lambda sink=sink: sink
            forged = 'x" 200 0ms [fake] "status":200'
            await running.client.get("/health/live", headers={"X-Forwarded-For": forged})
            running.app.state.access_log.flush()
        (line,) = sink.lines
        if log_format == "json":
            assert json.loads(line)["client"] == forged
        else:
            assert json.dumps(forged) in line
            assert len(line.rsplit(" [", 1)[1]) == 17  # the request id's own brackets end it


async def test_an_unmatched_path_is_escaped_and_cut(
    service: tuple[Service, Writes],
) -> None:
    running, sink = service
    await running.client.get("/x%22%0a%7B%22status%22:200%7D" + "y" * 300)
    entries = await lines_of(running, sink)  # one JSON line: nothing broke out
    assert entries[0]["path"] == '/x"\n{"status":200}' + "y" * 82


async def test_lines_wait_for_the_timer_then_go_in_whole_line_chunks() -> None:
    sink = Writes()
    access = AccessLog(json_lines=True, sink=lambda: sink, now=lambda: 1_800_000_000.25)
    scope = {"type": "http", "method": "POST", "state": {}}
    for _ in range(40):
        access.record(scope, 200, 0.001, "r" * 16, "127.0.0.1")
    assert sink.chunks == []  # nothing written on the request path
    await asyncio.sleep(FLUSH_SECONDS * 2)
    assert len(sink.lines) == 40
    assert all(len(chunk) <= CHUNK_BYTES and chunk.endswith("\n") for chunk in sink.chunks)
    assert len(sink.chunks) > 1  # 40 lines of ~250 bytes do not fit one chunk
    assert json.loads(sink.lines[0])["at"] == "2027-01-15T08:00:00.250000+00:00"


async def test_a_full_buffer_is_written_at_once() -> None:
    sink = Writes()
    access = AccessLog(json_lines=False, sink=lambda: sink)
    scope = {"type": "http", "method": "GET", "state": {}}
    for _ in range(300):  # ~130 bytes a line: past the 32 KiB mark before any timer
        access.record(scope, 204, 0.0, "r" * 64, None)
    assert sink.chunks and all(line.endswith("]") for line in sink.lines)
    access.flush()
    assert len(sink.lines) == 300


async def test_a_broken_sink_drops_lines_and_fails_no_request(
    caplog: pytest.LogCaptureFixture,
) -> None:
    access = AccessLog(json_lines=True, sink=Broken)
    access.record({"type": "http", "method": "GET", "state": {}}, 200, 0.0, "id", None)
    access.flush()
    assert access.dropped == 1
    assert "could not be written" in caplog.text


@pytest.mark.parametrize("level", [logging.WARNING, logging.ERROR])
def test_off_by_setting_and_above_info(level: int) -> None:
    logger = logging.getLogger("uvicorn.access")
    saved = logger.level
    try:
        logger.setLevel(logging.INFO)
        assert access_log_enabled(True) and not access_log_enabled(False)
        logger.setLevel(level)
        assert not access_log_enabled(True)
    finally:
        logger.setLevel(saved)


async def test_the_app_has_none_when_off(
    info_on_access_logger: None, make_settings: Callable[..., Settings]
) -> None:
    from auth_service.app import create_app

    assert create_app(make_settings(access_log=False)).state.access_log is None
    assert create_app(make_settings()).state.access_log is not None


async def test_an_unmatched_path_cannot_break_a_text_line(
    info_on_access_logger: None,
    make_container: Callable[..., Container],
    make_settings: Callable[..., Settings],
) -> None:
    """Text lines too: a decoded path with a quote and a newline is escaped, one line."""
    sink = Writes()
    async with started(make_container(make_settings(log_format="text"))) as running:
        running.app.state.access_log.sink = lambda: sink
        await running.client.get('/x%22%0a2026-01-01 00:00:00,000 INFO forged: "GET /" 200')
        running.app.state.access_log.flush()
    (line,) = sink.lines
    assert '"GET unmatched "/x\\"\\n2026' in line and line.endswith("]")


def test_the_lines_are_exactly_these() -> None:
    """The shape operators parse, text and JSON, for a matched route and an unmatched path;
    the parts remembered between lines (route, address, client id) give the same text the
    second time."""

    class Route:
        path = "/validate"

    matched = {"route": Route(), "method": "POST", "state": {"client_id": "svc_a"}}
    unmatched = {"method": "BREW", "path": "/a b", "state": {}}
    text, json_lines = Writes(), Writes()
    for sink, as_json in ((text, False), (json_lines, True)):
        access = AccessLog(json_lines=as_json, sink=lambda s=sink: s, now=lambda: 1_800_000_000.25)
        for _ in range(2):
            access.record(matched, 200, 0.00123, "r" * 16, "127.0.0.1")
            access.record(unmatched, 404, 0.0, "q" * 16, None)
        access.flush()
    assert (
        text.lines
        == [
            '2027-01-15 08:00:00,250 INFO auth_service.access: 127.0.0.1 "POST /validate" 200 1.23ms'
            " client_id=svc_a [rrrrrrrrrrrrrrrr]",
            '2027-01-15 08:00:00,250 INFO auth_service.access: - "other unmatched "/a b"" 404 0.00ms'
            " [qqqqqqqqqqqqqqqq]",
        ]
        * 2
    )
    assert [json.loads(line) for line in json_lines.lines] == [
        {
            "at": "2027-01-15T08:00:00.250000+00:00",
            "level": "info",
            "logger": "auth_service.access",
            "message": "POST /validate 200",
            "request_id": "r" * 16,
            "method": "POST",
            "route": "/validate",
            "status": 200,
            "duration_ms": 1.23,
            "client": "127.0.0.1",
            "client_id": "svc_a",
        },
        {
            "at": "2027-01-15T08:00:00.250000+00:00",
            "level": "info",
            "logger": "auth_service.access",
            "message": "other unmatched 404",
            "request_id": "q" * 16,
            "method": "other",
            "route": "unmatched",
            "status": 404,
            "duration_ms": 0.0,
            "client": None,
            "path": "/a b",
        },
    ] * 2


def test_long_forwarded_hops_are_not_remembered() -> None:
    """A trusted proxy may forward a long ``X-Forwarded-For``: the line escapes it (up to 6x
    longer), and the memo of line parts must not keep a thousand of those (the attack review
    grew a worker by 650 MB with 100 KB hops)."""
    access = AccessLog(json_lines=True, sink=Writes)
    scope = {"type": "http", "method": "POST", "state": {}}
    for i in range(2000):
        access.record(scope, 200, 0.0, "r" * 16, f"{i:04d}" + "\xe9" * 100_000)
        if i % 100 == 0:
            access.flush()
    memo = access._quoted
    assert sum(len(key or "") + len(value) for key, value in memo.items()) < 100_000
