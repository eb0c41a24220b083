"""`make bench` (n): what the audit chain's serialised append costs, on PostgreSQL.

Every audited event takes the one ``audit_head`` row lock until its transaction commits, so
the appends of all instances queue on it. Measured here, in one process on its own database:
a bare write transaction (the floor), one append per transaction sequentially, and 32
concurrent appenders (the fleet's worst case: every request an audited event). The login
figure it matters against is (e): a login is an argon2 hash (~19 ms a core) plus its own
transaction, so the append's added latency is reported next to that hash time.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import sys
import time
from collections.abc import Awaitable, Callable

from benchkit import admin
from sqlalchemy import text

from auth_service.clock import SystemClock
from auth_service.crypto.audit_mac import AuditMac
from auth_service.db.migrate import upgrade_to_head
from auth_service.db.session import Database, create_engine
from auth_service.services.audit import Audit
from auth_service.services.webhooks import Outbox
from auth_service.settings import Settings

PG = "postgresql+asyncpg://postgres@127.0.0.1:5432"
SEQUENTIAL = 400
WORKERS, EACH = 32, 25


def _ms(samples: list[float]) -> tuple[float, float]:
    ordered = sorted(samples)
    return statistics.median(ordered) * 1000, ordered[int(len(ordered) * 0.99) - 1] * 1000


async def _timed(call: Callable[[], Awaitable[None]], count: int) -> list[float]:
    samples = []
    for _ in range(count):
        started = time.perf_counter()
        await call()
        samples.append(time.perf_counter() - started)
    return samples


async def measure(url: str) -> list[str]:
    settings = Settings(database_url=url, key_encryption_secret="b" * 64, db_pool_size=WORKERS)
    engine = create_engine(settings)
    db = Database.on(engine)
    audit = Audit(db, AuditMac(settings.secret_value()), SystemClock(), Outbox(SystemClock()))

    async def bare() -> None:  # one row written and committed: the same WAL flush
        async with db.transaction() as session:
            await session.execute(text("INSERT INTO bench_floor DEFAULT VALUES"))

    async def append() -> None:
        await audit.append("bench.event", subject="s", details={"reason": "bench"})

    try:
        await _timed(append, 20)  # warm the pool
        floor = _ms(await _timed(bare, SEQUENTIAL))
        alone = _ms(await _timed(append, SEQUENTIAL))
        started = time.perf_counter()
        floors = await asyncio.gather(*(_timed(bare, EACH) for _ in range(WORKERS)))
        floor_rate = WORKERS * EACH / (time.perf_counter() - started)
        crowded_floor = _ms([sample for batch in floors for sample in batch])
        started = time.perf_counter()
        batches = await asyncio.gather(*(_timed(append, EACH) for _ in range(WORKERS)))
        elapsed = time.perf_counter() - started
        crowded = _ms([sample for batch in batches for sample in batch])
        verdict = await audit.verify()
    finally:
        await engine.dispose()
    rate = WORKERS * EACH / elapsed
    return [
        "| audit (n), PostgreSQL | per s | p50 ms | p99 ms |",
        "|---|---:|---:|---:|",
        f"| a one-row write transaction, sequential | {1000 / floor[0]:,.0f} | {floor[0]:.2f} | "
        f"{floor[1]:.2f} |",
        f"| one append a transaction, sequential | {1000 / alone[0]:,.0f} | {alone[0]:.2f} | "
        f"{alone[1]:.2f} |",
        f"| {WORKERS} concurrent one-row writers | {floor_rate:,.0f} | {crowded_floor[0]:.2f} | "
        f"{crowded_floor[1]:.2f} |",
        f"| {WORKERS} concurrent appenders (one chain) | {rate:,.0f} | {crowded[0]:.2f} | "
        f"{crowded[1]:.2f} |",
        f"chain after the run: ok={verdict.ok}, {verdict.checked} events verified",
        f"an append adds {alone[0] - floor[0]:.2f} ms to a transaction alone and "
        f"{crowded[0]:.2f} ms p50 with {WORKERS} appenders queued on the head row; the chain "
        f"takes {rate:,.0f} audited events/s, against (e)'s ~35 logins/s a core",
    ]


def main() -> int:
    name = f"bench_audit_{os.getpid()}"
    admin(f"{PG}/postgres", f'DROP DATABASE IF EXISTS "{name}"', f'CREATE DATABASE "{name}"')
    url = f"{PG}/{name}"
    try:
        upgrade_to_head(url)
        admin(url, "CREATE TABLE bench_floor (id bigserial PRIMARY KEY)")
        print("\n".join(asyncio.run(measure(url))))
    finally:
        admin(f"{PG}/postgres", f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    return 0


if __name__ == "__main__":
    sys.exit(main())
