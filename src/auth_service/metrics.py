"""Prometheus metrics (``GET /metrics``; docs/design/operations.md).

The counters and histograms live in this module's registry, one set per process. With
``serve --workers N`` the CLI sets ``PROMETHEUS_MULTIPROC_DIR`` before the workers start, so
every worker writes its values to files there and a scrape, whichever worker answers it, sums
them all (prometheus-client's multiprocess mode). The gauges read live state at scrape time
(keys by status, the hash queue, the revocation mirror) from the answering worker.

Every label value comes from a bounded set: route templates (never raw paths), the usual
methods, status codes, error codes, limiter names (``store_keys.limiter_name``).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector
from sqlalchemy import func, select
from starlette.types import Scope

from auth_service.db.models import KeyStatus, SigningKey
from auth_service.errors import AuthError

if TYPE_CHECKING:
    from auth_service.crypto.hash_queue import HashQueue
    from auth_service.db.session import Database
    from auth_service.store.mirror import MirroredStore

MULTIPROCESS_DIR_ENV = "PROMETHEUS_MULTIPROC_DIR"
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
_METHODS = frozenset({"GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"})
_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)

if os.environ.get(MULTIPROCESS_DIR_ENV):  # each worker writes its values into files there
    Path(os.environ[MULTIPROCESS_DIR_ENV]).mkdir(parents=True, exist_ok=True)
REGISTRY = CollectorRegistry(auto_describe=True)
HTTP_REQUESTS = Counter(
    "auth_http_requests",
    "HTTP requests answered, by route template, method and status.",
    ["route", "method", "status"],
    registry=REGISTRY,
)
HTTP_LATENCY = Histogram(
    "auth_http_request_duration_seconds",
    "Time to answer, by route template and method.",
    ["route", "method"],
    buckets=_LATENCY_BUCKETS,
    registry=REGISTRY,
)
LOGINS = Counter(
    "auth_logins",
    "Login steps by outcome (success, mfa_required, or the error code).",
    ["step", "outcome"],
    registry=REGISTRY,
)
VALIDATIONS = Counter(
    "auth_validations",
    "Token verdicts of /validate, batch and introspection, by reason.",
    ["verdict"],
    registry=REGISTRY,
)
REFRESH_REUSE = Counter(
    "auth_refresh_reuse_detections",
    "Refresh tokens presented again (a session revoked).",
    registry=REGISTRY,
)
RATE_LIMITED = Counter(
    "auth_rate_limited",
    "Requests refused by a rate limit, by limiter.",
    ["limiter"],
    registry=REGISTRY,
)
ROTATIONS = Counter(
    "auth_key_rotations",
    "Key rotation attempts by trigger and result.",
    ["trigger", "result"],
    registry=REGISTRY,
)
BACKEND_ERRORS = Counter(
    "auth_backend_errors",
    "Requests answered 503 because the store or database failed.",
    ["backend"],
    registry=REGISTRY,
)


@contextmanager
def counting_login(step: str) -> Iterator[list[str]]:
    """Counts one login step: ``success`` unless the block appends another outcome (e.g.
    ``mfa_required``) or raises (the error's code, e.g. ``invalid_credentials``)."""
    outcome: list[str] = []
    try:
        yield outcome
    except AuthError as exc:
        LOGINS.labels(step, exc.code.value).inc()
        raise
    LOGINS.labels(step, outcome[0] if outcome else "success").inc()


_VERDICTS: dict[str, Any] = {}


def count_verdict(valid: bool, error: str | None) -> None:
    """On the hot path: the label child is looked up once per verdict (reasons are a closed
    set of codes)."""
    verdict = "valid" if valid else (error or "invalid")
    child = _VERDICTS.get(verdict)
    if child is None:
        child = _VERDICTS[verdict] = VALIDATIONS.labels(verdict)
    child.inc()


class RequestRecorder:
    """Counts and times every request by its route template, called by the request-context
    middleware once the answer is sent (no ASGI layer of its own; the label children are
    cached, so a request costs two dict lookups, an increment and an observation)."""

    def __init__(self) -> None:
        self._counters: dict[tuple[str, str, int], Any] = {}
        self._timers: dict[tuple[str, str], Any] = {}

    def record(self, scope: Scope, status: int, seconds: float) -> None:
        route = scope.get("route")
        template = getattr(route, "path", None) or "unmatched"
        method = scope.get("method", "GET")
        method = method if method in _METHODS else "other"
        key = (template, method, status)
        counter = self._counters.get(key)
        if counter is None:
            counter = self._counters[key] = HTTP_REQUESTS.labels(template, method, str(status))
        counter.inc()
        timer = self._timers.get(key[:2])
        if timer is None:
            timer = self._timers[key[:2]] = HTTP_LATENCY.labels(template, method)
        timer.observe(seconds)


class _LiveGauges(Collector):
    """State read when scraped, in this worker."""

    def __init__(self, exporter: Exporter, key_statuses: dict[str, int]) -> None:
        self._exporter = exporter
        self._key_statuses = key_statuses

    def collect(self) -> Iterator[Metric]:
        keys = GaugeMetricFamily("auth_signing_keys", "Signing keys by status.", labels=["status"])
        for status, count in self._key_statuses.items():
            keys.add_metric([status], count)
        yield keys
        queue = GaugeMetricFamily(
            "auth_password_hash_queue_depth",
            "Password hashes waiting for a core, by queue (this worker).",
            labels=["queue"],
        )
        for name, depth in self._exporter.hash_queue.depths().items():
            queue.add_metric([name], depth)
        yield queue
        mirror = self._exporter.mirror
        if mirror is not None:
            yield GaugeMetricFamily(
                "auth_revocation_mirror_current",
                "1 while the revocation mirror answers from memory (this worker).",
                value=1 if mirror.current else 0,
            )
            yield GaugeMetricFamily(
                "auth_revocation_mirror_lag_seconds",
                "Publish-to-apply delay of the last revocation event (this worker).",
                value=mirror.last_lag_seconds,
            )
            yield CounterMetricFamily(
                "auth_revocation_mirror_resyncs",
                "Full reloads of the revocation mirror from the store (this worker).",
                value=mirror.resyncs,
            )


class Exporter:
    """Renders ``GET /metrics``."""

    def __init__(self, db: Database, hash_queue: HashQueue, mirror: MirroredStore | None) -> None:
        self._db = db
        self.hash_queue = hash_queue
        self.mirror = mirror

    async def render(self) -> bytes:
        """The exposition text: this process's (or, in multiprocess mode, every worker's)
        counters, then the live gauges (keys by status read from the database, the record)."""
        async with self._db.read() as db:
            rows = await db.execute(
                select(SigningKey.status, func.count()).group_by(SigningKey.status)
            )
            counted = {str(status): int(count) for status, count in rows.all()}
        statuses = {str(status): counted.get(str(status), 0) for status in KeyStatus}
        if os.environ.get(MULTIPROCESS_DIR_ENV):
            registry = CollectorRegistry()
            MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        else:
            registry = REGISTRY
        live = CollectorRegistry(auto_describe=False)
        live.register(_LiveGauges(self, statuses))
        return bytes(generate_latest(registry) + generate_latest(live))
