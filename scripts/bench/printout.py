"""What `make bench` prints: the header, the tables, and every target's verdict."""

from __future__ import annotations

import argparse
from datetime import UTC, datetime

import flood
from benchkit import Result, can_pin, hash_parameters, machine
from targets import verdicts

ORDER = [
    "bare",
    "bare1",
    "a",
    "jwks",
    "jwks304",
    "b",
    "m",
    "p",
    "q",
    "g",
    "h",
    "b-cold",
    "b-cold-store",
    "c",
    "d",
    "e",
    "b-under-e",
    "w1",
    "w2",
]


def report(
    args: argparse.Namespace,
    results: dict[str, Result],
    hash_seconds: float,
    token_size: int,
    flooded: flood.FloodResult | None,
    connections: dict[str, int],
) -> None:
    cost = hash_parameters()
    print(
        f"\nauth-service benchmark, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {machine()}; "
        "1 uvicorn worker on core 0, wrk -t1 on core 1"
        + ("" if can_pin() else " (taskset unavailable: not pinned)")
        + f", {args.seconds} s per scenario ({args.refresh_seconds} s for (d); (bare), (a), "
        f"(b), (g), (m), (p), (q) and (w): {args.rounds} alternating rounds each, medians), "
        f"-c{args.connections} ("
        + ", ".join(f"({key}) -c{count}" for key, count in connections.items())
        + f", (f) -c{flood.FLOOD_CONNECTIONS}); the service as shipped: INFO, metrics and "
        "access log on" + ("" if args.only is None else f"; only {args.only}")
    )
    print(
        f"argon2id m={cost['memory_kib']} t={cost['time_cost']} p={cost['parallelism']}: "
        f"{hash_seconds * 1000:.1f} ms a hash (mean of 20, in-process, core 0)"
        + (f"; access tokens {token_size} bytes" if token_size else "")
    )
    checks = verdicts(results, hash_seconds) if "bare" in results else []
    if "bare" in results:
        ceiling = results["bare"].requests_per_second
        bare_cpu = results["bare"].server_cpu_us
        print(
            "| scenario | req/s | of bare | p50 ms | p99 ms | errors | server CPU us a request "
            "| bare's CPU / this | notes |"
        )
        print("|---|---:|---:|---:|---:|---:|---:|---:|---|")
        for r in (results[key] for key in ORDER if key in results):
            cpu = f"{r.server_cpu_us:,.0f}" if r.server_cpu_us else "-"
            share = f"{bare_cpu / r.server_cpu_us:.3f}" if r.server_cpu_us and bare_cpu else "-"
            print(
                f"| {r.name} | {r.requests_per_second:,.0f} | "
                f"{r.requests_per_second / ceiling:.3f} | {r.p50_ms:.2f} | {r.p99_ms:.2f} | "
                f"{r.errors} | {cpu} | {share} | {'; '.join(r.notes)} |"
            )
    if "r" in results:
        print(f"\n{results['r'].name}: {'; '.join(results['r'].notes)}")
    if "i" in results:
        print("\n| client library (on core 1) | per s | p50 ms | p99 ms | notes |")
        print("|---|---:|---:|---:|---|")
        for r in (results[key] for key in ("i", "j", "k", "l")):
            rate = f"{r.requests_per_second:,.0f}" if r.requests_per_second else "-"
            print(f"| {r.name} | {rate} | {r.p50_ms:.1f} | {r.p99_ms:.1f} | {'; '.join(r.notes)} |")
    if flooded is not None:
        print("\n".join(flood.table(flooded)))
        checks += flood.verdicts(flooded)
    print("\nTargets:")
    for label, passed, detail in checks:
        print(f"- {'PASS' if passed else 'FAIL'} {label}: {detail}")
