"""The revocation stream on a served process (uvicorn, a real port), on both backends: client
auth, the first frames, the heartbeat, the per-client limit, and a stop that does not wait
for open streams."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.support.processes import BIN, free_port
from tests.support.sse import Frame, frames, until_synced

pytestmark = pytest.mark.slow


@dataclass
class Instance:
    base: str
    process: subprocess.Popen[bytes]
    auth: tuple[str, str]
    log: Path


@pytest.fixture
def stream_environment(environment: dict[str, str]) -> dict[str, str]:
    return {
        **environment,
        "AUTH_EVENT_HEARTBEAT_SECONDS": "0.2",
        "AUTH_EVENT_STREAMS_PER_CLIENT": "2",
    }


@pytest.fixture
def instance(stream_environment: dict[str, str], tmp_path: Path) -> Iterator[Instance]:
    env = stream_environment
    subprocess.run([BIN, "migrate"], env=env, check=True, capture_output=True, cwd=tmp_path)
    created = subprocess.run(
        [BIN, "clients", "create", "streams"],
        env=env,
        check=True,
        capture_output=True,
        text=True,
        cwd=tmp_path,
    ).stdout
    values = dict(line.split("=", 1) for line in created.split())
    port = free_port()
    with (tmp_path / "serve.log").open("w") as sink:
        process = subprocess.Popen(
            [BIN, "serve", "--port", str(port)], env=env, stdout=sink, stderr=sink, cwd=tmp_path
        )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            assert process.poll() is None, (tmp_path / "serve.log").read_text()
            try:
                if httpx.get(f"{base}/health/ready", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.1)
        yield Instance(
            base, process, (values["client_id"], values["client_secret"]), tmp_path / "serve.log"
        )
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


async def test_the_stream_needs_a_client_starts_synced_and_beats(
    instance: Instance,
) -> None:
    base, auth = instance.base, instance.auth
    async with httpx.AsyncClient(timeout=10) as http:
        refused = await http.get(f"{base}/events/revocations", auth=(auth[0], "wrong"))
        assert refused.status_code == 401
        assert refused.json()["error"] == "invalid_client"
        async with http.stream("GET", f"{base}/events/revocations", auth=auth) as response:
            assert response.status_code == 200
            assert response.headers["cache-control"] == "no-store"
            stream = frames(response)
            first = await until_synced(stream)
            assert [f.type for f in first] == ["keys", "resync", "synced"]
            assert first[-1].data == {"heartbeat": 0.2}
            assert first[0].data == {"revoked": []}
            beat = await asyncio.wait_for(anext(stream), 2)
            assert beat.type == "comment" and beat.data["text"] == "hb"


async def test_a_client_gets_at_most_its_streams_then_429(
    instance: Instance,
) -> None:
    base, auth = instance.base, instance.auth
    async with httpx.AsyncClient(timeout=10) as http:
        url = f"{base}/events/revocations"
        async with http.stream("GET", url, auth=auth) as one, http.stream("GET", url, auth=auth):
            assert one.status_code == 200
            third = await http.get(url, auth=auth)
            assert third.status_code == 429
            assert third.json()["error"] == "rate_limited"
            assert int(third.headers["retry-after"]) >= 1
        # closed streams free their places (the server notices the disconnect)
        for _ in range(50):
            again = http.stream("GET", url, auth=auth)
            async with again as response:
                if response.status_code == 200:
                    break
            await asyncio.sleep(0.1)
        else:
            pytest.fail("the closed streams' places were never freed")


async def test_an_exit_signal_ends_open_streams_and_the_process_stops_at_once(
    instance: Instance,
) -> None:
    base, process, auth, log = instance.base, instance.process, instance.auth, instance.log
    async with (
        httpx.AsyncClient(timeout=10) as http,
        http.stream("GET", f"{base}/events/revocations", auth=auth) as response,
    ):
        await until_synced(frames(response))
        started = time.monotonic()
        process.send_signal(signal.SIGTERM)
        code = await asyncio.to_thread(process.wait, 10)
    assert time.monotonic() - started < 3  # uvicorn waited forever for the open stream
    # uvicorn re-raises the signal once it has shut down gracefully:
    assert code in (0, -signal.SIGTERM)
    assert "Application shutdown complete" in log.read_text()


async def _ends_within(stream: AsyncIterator[Frame], seconds: float) -> float:
    """Read the stream until the server ends it; how long that took."""
    started = time.monotonic()

    async def drain() -> None:
        async for _frame in stream:
            pass

    await asyncio.wait_for(drain(), seconds)
    return time.monotonic() - started


def _rotate(instance: Instance, env: dict[str, str], overlap: int) -> str:
    """``clients rotate-secret`` from the command line; the new secret."""
    done = subprocess.run(
        [BIN, "clients", "rotate-secret", instance.auth[0], "--overlap-seconds", str(overlap)],
        env=env,
        check=True,
        capture_output=True,
        text=True,
        cwd=instance.log.parent,
    ).stdout
    return dict(line.split("=", 1) for line in done.split() if "=" in line)["client_secret"]


async def test_a_stream_ends_within_seconds_once_its_secret_is_rotated_away(
    instance: Instance, stream_environment: dict[str, str]
) -> None:
    """It was authenticated once, when it opened, and went on receiving every revocation
    after its secret was rotated away (and after a previous secret's overlap ended)."""
    base, old = instance.base, instance.auth
    url = f"{base}/events/revocations"
    async with httpx.AsyncClient(timeout=10) as http:
        async with http.stream("GET", url, auth=old) as response:
            stream = frames(response)
            await until_synced(stream)
            new = (old[0], _rotate(instance, stream_environment, overlap=0))
            assert await _ends_within(stream, 5) < 5
        assert (await http.get(url, auth=old)).status_code == 401
        async with http.stream("GET", url, auth=new) as response:  # a previous secret's overlap
            await until_synced(frames(response))
        _rotate(instance, stream_environment, overlap=3)
        async with http.stream("GET", url, auth=new) as response:
            stream = frames(response)
            await until_synced(stream)  # still good within the overlap...
            assert await _ends_within(stream, 8) > 2  # ...and ended once it is over
