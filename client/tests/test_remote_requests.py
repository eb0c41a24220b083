"""``AuthClient``'s requests, with ``httpx.MockTransport`` (and a silent TCP server):
client authentication, request shapes, verdict parsing, timeouts, and batch chunking."""

from __future__ import annotations

import asyncio
import base64
import json
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qs, unquote_plus

import httpx
import pytest

from auth_service_client.errors import ServiceUnavailableError
from auth_service_client.remote import AuthClient
from auth_service_client.remote_core import RequestCore, ServerError
from auth_service_client.types import Verdict
from test_remote_failures import VALID, Script, auth, error, ok


async def test_basic_auth_form_urlencodes_id_and_secret_first() -> None:
    script = Script(ok())
    client_id, secret = "id:with+odd chars/é", "s3cr%t:+ x"
    async with AuthClient(
        "http://auth.test", client_id, secret, transport=httpx.MockTransport(script)
    ) as client:
        await client.validate("t")
    scheme, _, encoded = script.requests[0].headers["authorization"].partition(" ")
    decoded = base64.b64decode(encoded).decode("ascii")  # urlencoded: ASCII only
    assert scheme == "Basic"
    assert decoded == "id%3Awith%2Bodd+chars%2F%C3%A9:s3cr%25t%3A%2B+x"
    sent_id, _, sent_secret = decoded.partition(":")  # the first ':' is the separator
    assert (unquote_plus(sent_id), unquote_plus(sent_secret)) == (client_id, secret)


async def test_the_requests_have_the_contracts_shapes() -> None:
    script = Script(
        ok(),
        ok({"results": [VALID, VALID]}),
        ok({"active": False}),
        ok({"access_token": "at", "token_type": "Bearer", "expires_in": 60, "scope": "a b"}),
    )
    async with auth(script) as client:
        await client.validate("t1")
        await client.validate_many(["t1", "t2"])
        await client.introspect("t3")
        await client.client_credentials_token("a b")
    single, batch, introspect, token = script.requests
    assert (single.method, single.url.path) == ("POST", "/base/validate")
    assert json.loads(single.content) == {"token": "t1"}
    assert single.headers["content-type"] == "application/json"
    assert batch.url.path == "/base/validate/batch"
    assert json.loads(batch.content) == {"tokens": ["t1", "t2"]}
    form = "application/x-www-form-urlencoded"
    assert (introspect.url.path, introspect.headers["content-type"]) == (
        "/base/oauth/introspect",
        form,
    )
    assert parse_qs(introspect.content.decode()) == {"token": ["t3"]}
    assert (token.url.path, token.headers["content-type"]) == ("/base/oauth/token", form)
    assert parse_qs(token.content.decode()) == {
        "grant_type": ["client_credentials"],
        "scope": ["a b"],
    }


@pytest.mark.parametrize(
    ("answer", "verdict"),
    [
        (VALID, Verdict(True, VALID["claims"])),
        ({"valid": False, "error": "expired"}, Verdict(False, None, "expired")),
        ({"valid": True}, Verdict(False, None, "malformed")),  # no claims: fail closed
        ({"valid": "yes", "claims": {}}, Verdict(False, None, "malformed")),
        ({"valid": False, "error": 7}, Verdict(False, None, "malformed")),
    ],
)
async def test_a_validate_answer_becomes_a_verdict(
    answer: dict[str, Any], verdict: Verdict
) -> None:
    assert Verdict.from_json(answer) == verdict
    async with auth(Script(ok(answer))) as client:
        assert await client.validate("t") == verdict


@pytest.fixture
def silent_server() -> Iterator[tuple[str, list[socket.socket]]]:
    """A TCP server that accepts connections and never answers."""
    listener = socket.create_server(("127.0.0.1", 0))
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        listener.settimeout(0.05)
        while not stop.is_set():
            try:
                accepted.append(listener.accept()[0])
            except TimeoutError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{listener.getsockname()[1]}", accepted
    stop.set()
    thread.join()
    for conn in accepted:
        conn.close()
    listener.close()


async def test_a_silent_service_times_out_per_attempt(
    silent_server: tuple[str, list[socket.socket]],
) -> None:
    url, accepted = silent_server
    async with AuthClient(url, "c", "s", timeout=0.2, retries=1, backoff=0.0) as client:
        started = time.perf_counter()
        with pytest.raises(ServiceUnavailableError, match="ReadTimeout after 2"):
            await client.validate("t")
        elapsed = time.perf_counter() - started
    assert 0.4 <= elapsed < 1.5
    assert len(accepted) == 2


async def test_validate_many_sends_chunks_of_100_concurrently_and_in_order() -> None:
    sizes: list[int] = []
    in_flight = peak = 0

    async def service(request: httpx.Request) -> httpx.Response:
        nonlocal in_flight, peak
        tokens = json.loads(request.content)["tokens"]
        sizes.append(len(tokens))
        in_flight += 1
        peak = max(peak, in_flight)
        await asyncio.sleep(0.05)
        in_flight -= 1
        return ok({"results": [{"valid": False, "error": t} for t in tokens]})

    tokens = [f"t{i}" for i in range(250)]
    async with auth(service) as client:
        verdicts = await client.validate_many(tokens)
    assert verdicts == [Verdict(False, None, t) for t in tokens]
    assert sorted(sizes) == [50, 100, 100]
    assert peak == 3


async def test_validate_many_raises_the_first_failure_not_a_group() -> None:
    async def service(request: httpx.Request) -> httpx.Response:
        tokens = json.loads(request.content)["tokens"]
        if tokens[0] == "t100":
            return error(500, "internal_error")
        await asyncio.sleep(1.0)  # cancelled when the other chunk fails
        return ok({"results": [VALID] * len(tokens)})

    async with auth(service) as client:
        started = time.perf_counter()
        with pytest.raises(ServerError):
            await client.validate_many([f"t{i}" for i in range(300)])
        assert time.perf_counter() - started < 0.5


def test_the_core_is_shared_and_refuses_nonsense_settings() -> None:
    options: dict[str, Any] = {
        "timeout": 1.0,
        "retries": 1,
        "backoff": 0.1,
        "breaker_failures": 1,
        "breaker_reset_seconds": 1.0,
        "cache_seconds": 0.0,
        "cache_max_entries": 1,
        "time_source": time.monotonic,
        "wall_time": time.time,
    }
    RequestCore("http://x", "c", "s", **options)
    for bad in ({"retries": -1}, {"backoff": -0.1}, {"cache_seconds": -1.0}):
        with pytest.raises(ValueError, match="must"):
            RequestCore("http://x", "c", "s", **{**options, **bad})
