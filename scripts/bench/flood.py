"""Scenario (f) of scripts/bench.py: a login flood, and what it does to everyone else.

The flood: wrk (flood.lua) at ``FLOOD_CONNECTIONS`` connections logs in with made-up emails,
each request from a random ``X-Forwarded-For`` address (the service trusts 127.0.0.1 as its
proxy), so no per-IP limit stops it; the argon2 cost is production's. Meanwhile, and on the
idle service first, two probes run sequentially from the load core:

- a real user's login: a registered user who logged in once before from ``USER_IP`` (a known
  client) logs in ``USER_LOGINS`` times from it;
- ``/validate`` by a service client whose secret the service has not verified yet: a new
  client (``auth-service clients create``) for each of the ``VALIDATE_SAMPLES`` samples.

The defect it measures: the database pool exhausted (503 ``service_unavailable``), a real
user's login taking 9.8 s and an uncached client's ``/validate`` 5.6 s. The designed answer to
a flood is 503 ``server_busy`` (a full hashing queue) for the strangers, and priority for known
clients. The server is its own process, with the bench's lifted attempt limits back at their
defaults (``AUTH_LOGIN_IP_LIMIT`` 100: the real user's own logins stay well under it) and a
Redis prefix of its own, so no counter of the other scenarios carries over.
"""

from __future__ import annotations

import os
import secrets
import statistics
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from benchkit import WRK_CPU, Result, Server, Wrk, can_pin
from scenarios import create_client

from auth_service.settings import Settings

FLOOD_CONNECTIONS = 128
USER_LOGINS = 20
VALIDATE_SAMPLES = 10
USER_IP = "192.0.2.10"  # TEST-NET-1: the real user's own address, as its proxy reports it
WARM_UP_SECONDS = 3  # the flood fills the hashing queue before the first sample
PROBE_DEADLINE_SECONDS = 150  # samples not taken this long into the flood count as failures
PROBE_TIMEOUT_SECONDS = 60
# Longer than the database pool's timeout (AUTH_DB_POOL_TIMEOUT_SECONDS, 10 s): a request that
# waited that long for a connection is answered 503 service_unavailable, not a wrk timeout.
FLOOD_TIMEOUT_SECONDS = 30
SLOWDOWN_TARGET = 3  # a probe's median under the flood against its idle median
ERROR_NAMES = ("service_unavailable", "server_busy")


@dataclass
class Probe:
    """Latencies (ms) of one probe's sequential requests, and the answers that were not right."""

    wanted: int
    ms: list[float] = field(default_factory=list)
    failures: Counter[str] = field(default_factory=Counter)

    @property
    def median(self) -> float:
        return float(statistics.median(self.ms)) if self.ms else float("nan")

    @property
    def max(self) -> float:
        return max(self.ms) if self.ms else float("nan")

    def failed(self) -> int:
        return sum(self.failures.values()) + self.wanted - len(self.ms)

    def describe_failures(self) -> str:
        parts = [f"{label} x{n}" for label, n in sorted(self.failures.items())]
        if len(self.ms) < self.wanted:
            parts.append(f"{self.wanted - len(self.ms)} not taken (deadline)")
        return ", ".join(parts) or "none"


@dataclass
class FloodResult:
    flood: Result
    probes: dict[str, Probe]  # login-idle, login-flood, validate-idle, validate-flood
    connections: int
    limits: dict[str, str]


def limit_defaults(bench_settings: dict[str, str]) -> dict[str, str]:
    """The production default of every attempt limit the bench lifts (AUTH_*_LIMIT)."""
    fields = Settings.model_fields
    return {
        key: str(fields[key.removeprefix("AUTH_").lower()].default)
        for key in bench_settings
        if key.endswith("_LIMIT")
    }


def _answer(reply: httpx.Response) -> str:
    try:
        body = reply.json()
    except ValueError:
        body = {}
    code = body.get("error") if isinstance(body, dict) else None
    return f"{reply.status_code} {code}" if code else str(reply.status_code)


def _sample(probe: Probe, send: Callable[[], httpx.Response], ok: Callable[[dict], bool]) -> None:
    started = time.perf_counter()
    try:
        reply = send()
    except httpx.HTTPError as exc:
        label = type(exc).__name__
    else:
        good = reply.status_code == 200 and ok(reply.json())
        label = "" if good else _answer(reply)
    probe.ms.append((time.perf_counter() - started) * 1000)
    if label:
        probe.failures[label] += 1


def _probe(
    base: str, user: tuple[str, str], token: str, clients: list[str], deadline: float
) -> tuple[Probe, Probe]:
    """USER_LOGINS logins and one /validate by a new client after every other login, in turn,
    from the load core (the server's core is left to the server)."""
    login, validate = Probe(USER_LOGINS), Probe(len(clients))
    email, password = user
    before = os.sched_getaffinity(0)
    if can_pin():
        os.sched_setaffinity(0, {WRK_CPU})
    try:
        with httpx.Client(base_url=base, timeout=PROBE_TIMEOUT_SECONDS) as http:
            pending = list(clients)
            for i in range(USER_LOGINS):
                if time.monotonic() > deadline:
                    break
                _sample(
                    login,
                    lambda: http.post(
                        "/auth/login",
                        json={"email": email, "password": password},
                        headers={"X-Forwarded-For": USER_IP},
                    ),
                    lambda body: "access_token" in body,
                )
                steps_left = USER_LOGINS - i - 1
                while pending and len(pending) * 2 > steps_left:
                    basic = pending.pop(0)
                    _sample(
                        validate,
                        lambda basic=basic: http.post(
                            "/validate", json={"token": token}, headers={"Authorization": basic}
                        ),
                        lambda body: body.get("valid") is True,
                    )
    finally:
        os.sched_setaffinity(0, before)
    return login, validate


def _real_user(base: str) -> tuple[tuple[str, str], str]:
    """Register a user and log it in once from USER_IP; its credentials and an access token."""
    run = secrets.token_hex(4)
    user = (f"flood-user-{run}@example.com", f"Flood {run} real user {secrets.token_hex(6)}")
    headers = {"X-Forwarded-For": USER_IP}
    body = {"email": user[0], "password": user[1]}
    with httpx.Client(base_url=base, timeout=60, headers=headers) as http:
        reply = http.post("/auth/register", json=body)
        if reply.status_code != 201:
            raise RuntimeError(f"(f) register: {reply.status_code} {reply.text[:300]}")
        reply = http.post("/auth/login", json=body)
        if reply.status_code != 200:
            raise RuntimeError(f"(f) first login: {reply.status_code} {reply.text[:300]}")
    return user, str(reply.json()["access_token"])


def run_flood(env: dict[str, str], bench_settings: dict[str, str], seconds: int) -> FloodResult:
    """Scenario (f): its own server; the probes idle, then under a flood of at least
    ``seconds`` (longer if the probes take longer, up to the deadline)."""
    limits = {**limit_defaults(bench_settings), "AUTH_TRUSTED_PROXIES": "127.0.0.1"}
    prefix = env["AUTH_REDIS_KEY_PREFIX"] + "flood:"
    log = Path(tempfile.mkdtemp(prefix="auth-bench-flood-")) / "flood.log"  # its access lines
    server = Server(env, log=log, AUTH_REDIS_KEY_PREFIX=prefix, **limits)
    wrk: Wrk | None = None
    try:
        base = server.start().base
        print(f"(f) setup: a user, {2 * VALIDATE_SAMPLES + 1} new service clients ...", flush=True)
        with ThreadPoolExecutor(4) as pool:
            names = [f"flood-{i}" for i in range(2 * VALIDATE_SAMPLES + 1)]
            clients = list(pool.map(lambda name: create_client(env, name), names))
        user, token = _real_user(base)
        warm = Probe(1)
        _sample(
            warm,
            lambda: httpx.post(
                f"{base}/validate",
                json={"token": token},
                headers={"Authorization": clients[0]},
                timeout=30,
            ),
            lambda body: body.get("valid") is True,
        )
        if warm.failures:
            raise RuntimeError(f"(f) /validate on the idle service: {warm.describe_failures()}")
        idle_clients, flood_clients = clients[1 : VALIDATE_SAMPLES + 1], clients[-VALIDATE_SAMPLES:]
        print("running (f) probes on the idle service ...", flush=True)
        login_idle, validate_idle = _probe(base, user, token, idle_clients, float("inf"))
        print(f"running (f) login flood, -c{FLOOD_CONNECTIONS}, probes alongside ...", flush=True)
        started = time.monotonic()
        wrk = Wrk(
            "(f) login flood: unknown emails, random X-Forwarded-For",
            f"{base}/auth/login",
            seconds=seconds + PROBE_DEADLINE_SECONDS + PROBE_TIMEOUT_SECONDS + 10,
            connections=FLOOD_CONNECTIONS,
            script="flood.lua",
            timeout=FLOOD_TIMEOUT_SECONDS,
        )
        time.sleep(WARM_UP_SECONDS)
        deadline = started + PROBE_DEADLINE_SECONDS
        login_flood, validate_flood = _probe(base, user, token, flood_clients, deadline)
        time.sleep(max(0.0, started + seconds - time.monotonic()))
        flood = wrk.interrupt()
        wrk = None
    finally:
        if wrk is not None:
            wrk.stop()
        server.stop()
    expected = sum(flood.counts.get(k, 0) for k in ("s401", "s429", "server_busy"))
    expected += flood.counts.get("service_unavailable", 0) + flood.counts.get("s503_other", 0)
    flood.errors -= expected  # left: socket errors and answers no flood request should get
    return FloodResult(
        flood=flood,
        probes={
            "login-idle": login_idle,
            "login-flood": login_flood,
            "validate-idle": validate_idle,
            "validate-flood": validate_flood,
        },
        connections=FLOOD_CONNECTIONS,
        limits=limits,
    )


def table(result: FloodResult) -> list[str]:
    p, r, c = result.probes, result.flood, result.flood.counts
    limits = ", ".join(f"{k}={v}" for k, v in result.limits.items())
    lines = [
        f"\n(f) login flood, own server ({limits}): wrk -c{result.connections} POST "
        f"/auth/login, made-up emails, random X-Forwarded-For; {r.requests:,} requests, "
        f"{r.requests_per_second:,.0f}/s, p50 {r.p50_ms:.1f} ms, p99 {r.p99_ms:.1f} ms",
        f"flood answers: 200 {c.get('s200', 0):,}, 401 {c.get('s401', 0):,}, "
        f"429 {c.get('s429', 0):,}, 503 server_busy {c.get('server_busy', 0):,}, "
        f"503 service_unavailable {c.get('service_unavailable', 0):,}, "
        f"503 other {c.get('s503_other', 0):,}, other {c.get('other', 0):,}; "
        f"socket errors (connect {c.get('connect', 0)}, read {c.get('read', 0)}, write "
        f"{c.get('write', 0)}, timeout > {FLOOD_TIMEOUT_SECONDS} s {c.get('timeout', 0)}) "
        f"and other answers: {r.errors:,}",
        "| (f) probe, sequential | idle median ms | idle max ms | flood median ms "
        "| flood max ms | median ratio | not 200 idle | not 200 flood |",
        "|---|---:|---:|---:|---:|---:|---|---|",
    ]
    rows = [
        ("login", f"real user's login from a known IP, x{USER_LOGINS}"),
        ("validate", f"/validate, a new (unverified) client each, x{VALIDATE_SAMPLES}"),
    ]
    for key, label in rows:
        idle, flood = p[f"{key}-idle"], p[f"{key}-flood"]
        lines.append(
            f"| {label} | {idle.median:.1f} | {idle.max:.1f} | {flood.median:.1f} | "
            f"{flood.max:.1f} | {flood.median / idle.median:.2f} | "
            f"{idle.describe_failures()} | {flood.describe_failures()} |"
        )
    return lines


def verdicts(result: FloodResult) -> list[tuple[str, bool, str]]:
    p, c = result.probes, result.flood.counts
    out = []
    for key, label in (("login", "real user's login"), ("validate", "/validate, new client")):
        idle, flood = p[f"{key}-idle"], p[f"{key}-flood"]
        out.append(
            (
                f"(f) {label}: flood median <= {SLOWDOWN_TARGET} x idle median",
                flood.median <= SLOWDOWN_TARGET * idle.median,
                f"{flood.median:.1f} ms vs {SLOWDOWN_TARGET} x {idle.median:.1f} ms = "
                f"{SLOWDOWN_TARGET * idle.median:.1f} ms (max {flood.max:.1f} ms)",
            )
        )
    unavailable = c.get("service_unavailable", 0)
    out.append(
        (
            "(f) no 503 service_unavailable in the flood",
            unavailable == 0 and c.get("s503_other", 0) == 0,
            f"{unavailable:,} service_unavailable, {c.get('s503_other', 0):,} other 503, "
            f"{c.get('server_busy', 0):,} server_busy of {result.flood.requests:,}",
        )
    )
    failed = {key: probe for key, probe in p.items() if probe.failed()}
    total = sum(probe.wanted for probe in p.values())
    out.append(
        (
            "(f) every real-user login and /validate answered 200, idle and under the flood",
            not failed,
            "; ".join(f"{k}: {v.describe_failures()}" for k, v in failed.items())
            or f"all {total} did",
        )
    )
    return out
