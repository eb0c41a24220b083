"""A bench scenario (issue 17): one worker's RSS before and after validating 1,000,000 distinct
tokens, against the target after <= 250 MB. ``run_rss(base, pid, basic)`` returns an
``RssResult`` (a benchkit ``Result`` with the figures, and ``verdict()`` for the targets list).

What the worker sees: ``TOTAL`` distinct tokens through ``POST /validate/batch``, ``BATCH`` a
request, ``CONCURRENCY`` requests in flight, from the load core. Three kinds, each batch
holding its even share of each, so the cache churns from the first batch to the last:

- **valid**, ~40,000: service tokens minted first through ``POST /oauth/token`` (client
  credentials: the service RSA-signs a fresh token, new ``jti``, per call), as many as fill
  the verification cache's default byte bound ``FILLS`` (3) times over, each charged as the
  service charges it (``entry_cost``). Each is verified, cached and in time evicted; all must
  answer ``valid: true``. They are what can grow the cache, and the dearest part: ~1 ms of
  the server's core each to mint.
- **forged**, ``FORGED`` (200,000, a fifth): the real header (RS256, ``at+jwt``, the signing
  kid), a random payload and a random signature of a real token's lengths, so each is parsed,
  its key looked up and its RSA verification run, and fails it: all must answer
  ``invalid_signature``, and none may be cached. ~70 us of server CPU each.
- **malformed**, the rest (~760,000): the same with the signature cut to a length base64url
  cannot have, so the header is parsed and the payload decoded before ``malformed``. ~20 us
  each: the uncached path's parsing without RSA, which keeps the run short (all 1M forged
  would take ~70 s of the server's core alone).

Server CPU: ~40 s minting, ~15 s forged, ~15 s malformed. Measured on the bench host while
other work shared it: the validating part 49 s (20,000 tokens/s; httpx on the load core is
part of it), the mint 0.8-1 ms of the server's core a token.

RSS is ``VmRSS`` of ``/proc/<pid>/status`` (``VmHWM`` for the peak, which counts from the
process's start), in MB of 10^6 bytes. ``pid`` must be the worker's: ``benchkit.Server``'s
process, as ``taskset`` execs the server (checked: ``/proc/<pid>/cmdline`` names no taskset),
one worker (``serve --workers 1`` runs uvicorn in-process).
"""

from __future__ import annotations

import asyncio
import base64
import json
import math
import os
import secrets
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import httpx
from benchkit import WRK_CPU, Result, can_pin

from auth_service.services.validation import entry_cost
from auth_service.settings import Settings

TOTAL = 1_000_000
BATCH = 100
FILLS = 3
FORGED = 200_000
CONCURRENCY = 4
MINT_CONCURRENCY = 8
TARGET_MB = 250.0
NAME = "(r) worker RSS after validating 1,000,000 distinct tokens"


@dataclass
class RssResult(Result):
    before_mb: float = 0.0
    after_mb: float = 0.0
    peak_mb: float = 0.0
    target_mb: float = TARGET_MB

    def verdict(self) -> tuple[str, bool, str]:
        """``(label, passed, detail)``, as targets.verdicts lists them."""
        return (
            f"(r) RSS after {TOTAL:,} distinct tokens <= {self.target_mb:.0f} MB",
            self.after_mb <= self.target_mb,
            f"{self.after_mb:.1f} MB (before {self.before_mb:.1f}, peak {self.peak_mb:.1f})",
        )


def default_cache_bytes() -> int:
    return int(Settings.model_fields["validation_cache_max_bytes"].default)


def memory_mb(pid: int) -> dict[str, float]:
    """``VmRSS`` and ``VmHWM`` of ``pid``, in MB."""
    figures: dict[str, float] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in ("VmRSS", "VmHWM"):
            figures[name] = int(value.split()[0]) * 1024 / 1e6  # the kernel's "kB" is KiB
    return figures


def check_worker(pid: int) -> None:
    """``pid`` runs the service itself, not a ``taskset`` waiting on it."""
    argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    if os.path.basename(argv[0]) == b"taskset" or not ({b"serve", b"uvicorn"} & set(argv)):
        raise RuntimeError(f"pid {pid} is not the service worker: {argv!r}")


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


async def mint(client: httpx.AsyncClient, basic: str, count: int) -> list[str]:
    """``count`` distinct service tokens from ``POST /oauth/token``."""
    tokens: list[str] = []
    headers = {"Authorization": basic}
    form = {"grant_type": "client_credentials"}

    async def worker(share: int) -> None:
        for _ in range(share):
            reply = await client.post("/oauth/token", data=form, headers=headers)
            if reply.status_code != 200:
                raise RuntimeError(f"/oauth/token: {reply.status_code} {reply.text[:300]}")
            tokens.append(reply.json()["access_token"])

    shares = [
        count // MINT_CONCURRENCY + (i < count % MINT_CONCURRENCY) for i in range(MINT_CONCURRENCY)
    ]
    await asyncio.gather(*(worker(share) for share in shares))
    if len(set(tokens)) != count:
        raise RuntimeError("/oauth/token gave the same token twice")
    return tokens


class Forger:
    """Distinct tokens shaped like ``sample``: its header (so its kid), then a payload and a
    signature of its lengths, random. ``forged(k)`` verifies against the real key and fails
    (``invalid_signature``); ``malformed(k)`` has its signature cut to a length base64url
    cannot have (``malformed`` once the header and payload are decoded). Token ``k`` pairs
    payload ``k % POOL`` with signature ``k // POOL``: distinct strings for k < POOL**2."""

    POOL = 1000

    def __init__(self, sample: str) -> None:
        self.header, payload, signature = sample.split(".")
        cut = len(signature) - (len(signature) - 1) % 4  # a length of 1 mod 4
        self.payloads = [_b64(secrets.token_bytes(len(payload) * 3 // 4)) for _ in range(self.POOL)]
        self.signatures = [
            _b64(secrets.token_bytes(len(signature) * 3 // 4)) for _ in range(self.POOL)
        ]
        self.cut = [signature[:cut] for signature in self.signatures]

    def forged(self, k: int) -> str:
        return f"{self.header}.{self.payloads[k % self.POOL]}.{self.signatures[k // self.POOL]}"

    def malformed(self, k: int) -> str:
        return f"{self.header}.{self.payloads[k % self.POOL]}.{self.cut[k // self.POOL]}"


def _share(items: int, batches: int, i: int) -> range:
    """Batch ``i``'s even share of ``items`` indices."""
    return range(i * items // batches, (i + 1) * items // batches)


async def _validate_all(
    client: httpx.AsyncClient, basic: str, valid: list[str], forge: Forger, total: int, forged: int
) -> tuple[list[float], Counter[str]]:
    """Every batch: its share of the valid and of the forged tokens (spread evenly), the rest
    malformed; each answer is checked against the kind of its token."""
    batches = math.ceil(total / BATCH)
    headers = {"Authorization": basic, "Content-Type": "application/json"}
    latencies: list[float] = []
    outcomes: Counter[str] = Counter()
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(batches):
        queue.put_nowait(i)

    async def worker() -> None:
        while not queue.empty():
            i = queue.get_nowait()
            mine = [valid[k] for k in _share(len(valid), batches, i)]
            forgeries = _share(forged, batches, i)
            first = i * BATCH + len(mine) + len(forgeries)  # malformed k: the batch's places
            malformed = range(first, min((i + 1) * BATCH, total))
            tokens = [*mine, *map(forge.forged, forgeries), *map(forge.malformed, malformed)]
            expected = (
                ["valid"] * len(mine)
                + ["invalid_signature"] * len(forgeries)
                + ["malformed"] * len(malformed)
            )
            body = json.dumps({"tokens": tokens})
            started = time.perf_counter()
            reply = await client.post("/validate/batch", content=body, headers=headers)
            latencies.append(time.perf_counter() - started)
            if reply.status_code != 200:
                outcomes[f"http {reply.status_code}"] += 1
                continue
            for want, result in zip(expected, reply.json()["results"], strict=True):
                got = "valid" if result["valid"] else result["error"]
                outcomes[got if got == want else f"wrong: {want} -> {got}"] += 1

    await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))
    return latencies, outcomes


async def _run(
    base: str, pid: int, basic: str, valid_count: int | None, total: int, cache_bytes: int
) -> RssResult:
    forged = FORGED * total // TOTAL
    limits = httpx.Limits(max_connections=MINT_CONCURRENCY)
    async with httpx.AsyncClient(base_url=base, timeout=60, limits=limits) as client:
        sample = (await mint(client, basic, 1))[0]
        before = memory_mb(pid)
        started = time.perf_counter()
        count = valid_count or math.ceil(FILLS * cache_bytes / entry_cost(sample))
        if count + forged > total:
            raise ValueError(f"{count:,} valid and {forged:,} forged tokens exceed {total:,}")
        valid = [sample, *await mint(client, basic, count - 1)]
        mint_seconds = time.perf_counter() - started
        started = time.perf_counter()
        latencies, outcomes = await _validate_all(
            client, basic, valid, Forger(sample), total, forged
        )
        seconds = time.perf_counter() - started
    after = memory_mb(pid)
    latencies.sort()
    right = ("valid", "invalid_signature", "malformed")
    errors = sum(n for name, n in outcomes.items() if name not in right)
    result = RssResult(
        name=NAME,
        requests_per_second=len(latencies) / seconds,
        p50_ms=latencies[len(latencies) // 2] * 1000,
        p99_ms=latencies[int(len(latencies) * 0.99)] * 1000,
        errors=errors,
        requests=len(latencies),
        counts=dict(outcomes),
        before_mb=before["VmRSS"],
        after_mb=after["VmRSS"],
        peak_mb=after["VmHWM"],
    )
    result.notes += [
        f"RSS before {result.before_mb:.1f} MB, after {result.after_mb:.1f} MB, peak "
        f"{result.peak_mb:.1f} MB (target after <= {TARGET_MB:.0f} MB)",
        f"{count:,} valid tokens ({count * entry_cost(sample) / cache_bytes:.1f}x a "
        f"{cache_bytes / 2**20:.0f} MiB cache; minted in {mint_seconds:.0f} s), {forged:,} "
        f"forged, {total - count - forged:,} malformed ({total / seconds:,.0f} tokens/s, "
        f"{seconds:.0f} s)",
    ]
    return result


def run_rss(
    base: str,
    pid: int,
    basic: str,
    *,
    valid_count: int | None = None,
    total: int = TOTAL,
    cache_bytes: int | None = None,
) -> RssResult:
    """Run the scenario against the served worker ``pid`` at ``base``, as the client whose
    HTTP Basic header is ``basic``. ``valid_count`` defaults to ``FILLS`` times what fills a
    cache of ``cache_bytes`` (default: the setting's default), which should be the server's.
    The client side runs on the load core."""
    check_worker(pid)
    before = os.sched_getaffinity(0)
    if can_pin():
        os.sched_setaffinity(0, {WRK_CPU})
    try:
        return asyncio.run(
            _run(base, pid, basic, valid_count, total, cache_bytes or default_cache_bytes())
        )
    finally:
        os.sched_setaffinity(0, before)
