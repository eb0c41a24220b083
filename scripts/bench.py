"""`make bench`: the service as a real uvicorn process (one worker) on PostgreSQL + Redis,
driven by wrk from another core. Prints requests/s and p50/p99 latency for each scenario.

Scenarios so far (issue 2): (a) a bare JSON endpoint of the same app, the ceiling; the JWKS
document (conditional and full). Later issues add /validate, batch, refresh and login.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import httpx
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

ROOT = Path(__file__).resolve().parents[1]
BIN = ROOT / ".venv" / "bin"
LUA = ROOT / "scripts" / "bench" / "report.lua"
PG_ADMIN = os.environ.get(
    "AUTH_BENCH_DATABASE_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/postgres"
)
REDIS = os.environ.get("AUTH_BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")


@dataclass
class Result:
    name: str
    requests_per_second: float
    p50_ms: float
    p99_ms: float
    errors: int


async def _admin(*statements: str) -> None:
    engine = create_async_engine(PG_ADMIN, poolclass=NullPool, isolation_level="AUTOCOMMIT")
    try:
        async with engine.connect() as connection:
            for statement in statements:
                await connection.execute(text(statement))
    finally:
        await engine.dispose()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _pin(cpu: int) -> list[str]:
    return (
        ["taskset", "-c", str(cpu)] if shutil.which("taskset") and (os.cpu_count() or 1) > 1 else []
    )


def run_wrk(name: str, url: str, seconds: int, connections: int, headers: dict[str, str]) -> Result:
    command = [
        *_pin(1),
        "wrk",
        "-t1",
        f"-c{connections}",
        f"-d{seconds}s",
        "--latency",
        "-s",
        str(LUA),
    ]
    for key, value in headers.items():
        command += ["-H", f"{key}: {value}"]
    output = subprocess.run([*command, url], check=True, capture_output=True, text=True).stdout
    line = next(line for line in output.splitlines() if line.startswith("BENCH "))
    data = json.loads(line.removeprefix("BENCH "))
    return Result(
        name=name,
        requests_per_second=data["requests"] / (data["duration_us"] / 1e6),
        p50_ms=data["p50_us"] / 1000,
        p99_ms=data["p99_us"] / 1000,
        errors=data["socket_errors"] + data["non_2xx"],
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--connections", type=int, default=32)
    args = parser.parse_args()

    database = f"auth_bench_{uuid.uuid4().hex[:8]}"
    asyncio.run(_admin(f'CREATE DATABASE "{database}"'))
    url = PG_ADMIN.rsplit("/", 1)[0] + "/" + database
    env = {k: v for k, v in os.environ.items() if not k.startswith("AUTH_")}
    env.update(
        AUTH_DATABASE_URL=url,
        AUTH_REDIS_URL=REDIS,
        AUTH_REDIS_KEY_PREFIX=f"authbench:{database}:",
        AUTH_KEY_ENCRYPTION_SECRET=subprocess.run(
            [BIN / "auth-service", "gen-secret"], check=True, capture_output=True, text=True
        ).stdout.strip(),
        AUTH_SCHEDULER_ENABLED="false",
        AUTH_LOG_LEVEL="WARNING",
    )
    port = _free_port()
    server = None
    try:
        subprocess.run([BIN / "auth-service", "migrate"], env=env, check=True, capture_output=True)
        server = subprocess.Popen(
            [
                *_pin(0),
                BIN / "auth-service",
                "serve",
                "--port",
                str(port),
                "--log-level",
                "warning",
            ],
            env=env,
        )
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"{base}/health/ready", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise SystemExit("the service did not become ready")
            time.sleep(0.2)
        etag = httpx.get(f"{base}/.well-known/jwks.json").headers["etag"]
        scenarios = [
            ("(a) bare JSON: GET /health/live", f"{base}/health/live", {}),
            ("JWKS: GET /.well-known/jwks.json", f"{base}/.well-known/jwks.json", {}),
            ("JWKS 304: If-None-Match", f"{base}/.well-known/jwks.json", {"If-None-Match": etag}),
        ]
        results = [run_wrk(name, u, args.seconds, args.connections, h) for name, u, h in scenarios]
    finally:
        if server is not None:
            server.terminate()
            server.wait(timeout=15)
        asyncio.run(_admin(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)'))

    ceiling = results[0].requests_per_second
    print(
        f"\nauth-service benchmark, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, "
        f"{os.cpu_count()} cores, "
        f"1 uvicorn worker on core 0, wrk -t1 -c{args.connections} -d{args.seconds}s on core 1"
    )
    print("| scenario | req/s | ratio to (a) | p50 ms | p99 ms | errors |")
    print("|---|---:|---:|---:|---:|---:|")
    for r in results:
        print(
            f"| {r.name} | {r.requests_per_second:,.0f} | {r.requests_per_second / ceiling:.2f} | "
            f"{r.p50_ms:.2f} | {r.p99_ms:.2f} | {r.errors} |"
        )
    return 0 if all(r.errors == 0 for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
