"""Plumbing for scripts/bench.py: the database, service processes, wrk runs, argon2 timing."""

from __future__ import annotations

import asyncio
import json
import os
import resource
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

from auth_service.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
BIN = ROOT / ".venv" / "bin"
LUA_DIR = Path(__file__).resolve().parent
SERVER_CPU = 0
WRK_CPU = 1
BARE_APP = "plain_app:bare_ping"  # the ceiling: a bare FastAPI GET /ping
ONE_WRITE = "auth_service.http_protocol:CoalescingHttpToolsProtocol"  # serve's HTTP protocol


@dataclass
class Result:
    name: str
    requests_per_second: float
    p50_ms: float
    p99_ms: float
    errors: int
    requests: int
    notes: list[str] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)  # a script's "COUNTS {...}" line
    # For a scenario measured in rounds beside another: the median of the per-round ratios
    # (other / this), which a host's slow drift moves less than a ratio of two medians.
    paired_ratio: float | None = None
    load_cpu_seconds: float = 0.0  # wrk's own CPU time (what the load took from the cores)
    server_cpu_us: float = 0.0  # the server's CPU a request (robust to a shared host)


async def _admin(url: str, statements: tuple[str, ...]) -> None:
    engine = create_async_engine(url, poolclass=NullPool, isolation_level="AUTOCOMMIT")
    try:
        async with engine.connect() as connection:
            for statement in statements:
                await connection.execute(text(statement))
    finally:
        await engine.dispose()


def admin(url: str, *statements: str) -> None:
    asyncio.run(_admin(url, statements))


def drop_redis_prefix(url: str, prefix: str) -> int:
    """Delete every key under ``prefix`` (the run's own namespace); returns how many."""
    import redis

    client = redis.Redis.from_url(url)
    try:
        keys = list(client.scan_iter(match=prefix + "*", count=1000))
        for start in range(0, len(keys), 500):
            client.delete(*keys[start : start + 500])
        return len(keys)
    finally:
        client.close()


def cpu_seconds(pid: int) -> float:
    """CPU time (user + system) of ``pid`` and its direct children (uvicorn's workers), from
    /proc: what a server spent, whatever else shares the host. 0 when it is gone."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if stat.parent.name == str(pid) or fields[1] == str(pid):  # fields[1]: the parent
            total += (int(fields[11]) + int(fields[12])) / ticks
    return total


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def can_pin() -> bool:
    return bool(shutil.which("taskset")) and (os.cpu_count() or 1) > 1


def pin(cpu: int) -> list[str]:
    return ["taskset", "-c", str(cpu)] if can_pin() else []


class Server:
    """One `auth-service serve` process pinned to the server core, as shipped: no
    `--log-level`, so INFO and the access log are on; its stderr goes to ``log`` (what a
    container runtime does with it), or the bench's own stderr when there is none.

    ``workers`` > 1 serves on every core (``cpus``); ``app_factory`` ("module:function" in
    scripts/bench) runs that app under uvicorn instead, as `serve` runs ours.
    """

    def __init__(
        self,
        env: dict[str, str],
        *,
        app_factory: str | None = None,
        log: Path | None = None,
        workers: int = 1,
        cpus: str = str(SERVER_CPU),
        http: str | None = None,
        **overrides: str,
    ) -> None:
        self.env = {**env, **overrides}
        self.app_factory = app_factory
        # uvicorn's protocol for an app_factory: serve's own for (m); the bare ceiling keeps
        # uvicorn's unless asked (bare1: the same app on serve's protocol, for information)
        self.http = http or ("httptools" if app_factory == BARE_APP else ONE_WRITE)
        self.log = log
        self.workers = workers
        self.cpus = cpus
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 60) -> Server:
        pinned = ["taskset", "-c", self.cpus] if can_pin() else []
        command = [
            *pinned,
            str(BIN / "auth-service"),
            "serve",
            "--port",
            str(self.port),
            "--workers",
            str(self.workers),
        ]
        env = self.env
        if self.app_factory is not None:  # the bare ceiling: uvicorn alone, no access log
            here = str(Path(__file__).resolve().parent)
            env = {**env, "PYTHONPATH": here}
            command = [
                *pinned,
                str(BIN / "python"),
                "-m",
                "uvicorn",
                "--factory",
                self.app_factory,
                "--port",
                str(self.port),
                "--log-level",
                "warning" if self.app_factory == BARE_APP else "info",  # (m): our access log on
                "--no-access-log",  # uvicorn's: the service writes its own
                "--no-server-header",
                "--http",
                self.http,
            ]
        stderr = None if self.log is None else self.log.open("ab")
        try:
            self.process = subprocess.Popen(command, env=env, stderr=stderr)
        finally:
            if stderr is not None:
                stderr.close()  # the child has its own descriptor
        deadline = time.monotonic() + timeout
        ready = "/ping" if self.app_factory == BARE_APP else "/health/ready"
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"the service exited with status {self.process.returncode}")
            try:
                if httpx.get(f"{self.base}{ready}", timeout=1).status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("the service did not become ready")
            time.sleep(0.2)

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)


class Wrk:
    """One wrk process (one thread) pinned to the load core; ``result()`` waits for it."""

    def __init__(
        self,
        name: str,
        url: str,
        *,
        seconds: int,
        connections: int,
        script: str = "report.lua",
        headers: dict[str, str] | None = None,
        script_args: tuple[str, ...] = (),
        timeout: int = 10,
        cpus: str = str(WRK_CPU),
    ) -> None:
        self.name = name
        command = [
            *(["taskset", "-c", cpus] if can_pin() else []),
            "wrk",
            "-t1",
            f"-c{connections}",
            f"-d{seconds}s",
            "--timeout",
            f"{timeout}s",
            "--latency",
            "-s",
            str(LUA_DIR / script),
        ]
        for key, value in (headers or {}).items():
            command += ["-H", f"{key}: {value}"]
        command.append(url)
        if script_args:
            command += ["--", *script_args]
        self.process: subprocess.Popen[str] | None = subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )

    def result(self) -> Result:
        process = self.process
        if process is None:
            raise RuntimeError(f"wrk for {self.name} was stopped")
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        stdout, stderr = process.communicate()
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        self.process = None
        cpu = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
        lines = [line for line in stdout.splitlines() if line.startswith("BENCH ")]
        if process.returncode != 0 or not lines:
            raise RuntimeError(f"wrk failed for {self.name} ({process.returncode}): {stderr}")
        data = json.loads(lines[-1].removeprefix("BENCH "))
        counts = [line for line in stdout.splitlines() if line.startswith("COUNTS ")]
        return Result(
            name=self.name,
            requests_per_second=data["requests"] / (data["duration_us"] / 1e6),
            p50_ms=data["p50_us"] / 1000,
            p99_ms=data["p99_us"] / 1000,
            errors=data["socket_errors"] + data["non_2xx"] + data.get("invalid", 0),
            requests=data["requests"],
            counts=json.loads(counts[-1].removeprefix("COUNTS ")) if counts else {},
            load_cpu_seconds=cpu,
        )

    def interrupt(self) -> Result:
        """End the run now (wrk stops on SIGINT and reports what it did so far)."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
        return self.result()

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is not None and process.poll() is None:
            process.kill()
            process.communicate()


def median_of(name: str, rounds: list[Result], *, paired: bool = True) -> Result:
    """One result from repeated runs of a scenario: the median of each figure, the rounds'
    req/s and p99 in the notes (a burst of noise on a shared host moves one round, not all)."""
    import statistics

    def median(values: list[float]) -> float:
        return float(statistics.median(values))

    return Result(
        name=name,
        requests_per_second=median([r.requests_per_second for r in rounds]),
        p50_ms=median([r.p50_ms for r in rounds]),
        p99_ms=median([r.p99_ms for r in rounds]),
        errors=sum(r.errors for r in rounds),
        requests=sum(r.requests for r in rounds),
        server_cpu_us=median([r.server_cpu_us for r in rounds]),
        notes=[
            f"median of {len(rounds)} rounds"
            + (", alternating with its pair: " if paired else ": ")
            + ", ".join(f"{r.requests_per_second:,.0f}/s p99 {r.p99_ms:.1f}" for r in rounds)
        ],
    )


def run_wrk(name: str, url: str, *, server: Server | None = None, **options: object) -> Result:
    """One wrk run; with ``server``, also the server's CPU time a request."""
    pid = server.process.pid if server is not None and server.process is not None else None
    before = cpu_seconds(pid) if pid is not None else 0.0
    wrk = Wrk(name, url, **options)  # type: ignore[arg-type]
    try:
        result = wrk.result()
    finally:
        wrk.stop()
    if pid is not None and result.requests:
        result.server_cpu_us = (cpu_seconds(pid) - before) / result.requests * 1e6
    return result


def hash_parameters() -> dict[str, int]:
    """The production argon2id cost: the settings' defaults."""
    fields = Settings.model_fields
    return {
        "memory_kib": int(fields["password_hash_memory_kib"].default),
        "time_cost": int(fields["password_hash_time_cost"].default),
        "parallelism": int(fields["password_hash_parallelism"].default),
    }


def argon2_hash_seconds(
    *, memory_kib: int, time_cost: int, parallelism: int, samples: int = 20
) -> float:
    """Mean time of one argon2id hash at these parameters, on the server's core, in-process."""
    import argon2

    hasher = argon2.PasswordHasher(
        time_cost=time_cost, memory_cost=memory_kib, parallelism=parallelism, type=argon2.Type.ID
    )
    before = os.sched_getaffinity(0)
    if can_pin():
        os.sched_setaffinity(0, {SERVER_CPU})
    try:
        hasher.hash("warm-up password")
        started = time.perf_counter()
        for i in range(samples):
            hasher.hash(f"benchmark password {i}")
        return (time.perf_counter() - started) / samples
    finally:
        os.sched_setaffinity(0, before)


def machine() -> str:
    """CPU model, cores, Python and the commit benchmarked (read-only git)."""
    import platform

    model = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    commit = subprocess.run(
        ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True, text=True
    ).stdout.strip()
    return (
        f"{model}, {os.cpu_count()} cores, Python {platform.python_version()}, "
        f"commit {commit or 'unknown'}"
    )
