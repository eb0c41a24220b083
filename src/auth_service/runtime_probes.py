"""What stalls a worker, measured where it happens: garbage-collector pauses and event-loop lag.

- ``auth_gc_pause_seconds{generation}``: every collection's duration, timed by a
  ``gc.callbacks`` hook (two ``perf_counter`` calls and an append a collection, none a
  request), moved into the histogram by the lag probe (never from inside a collection).
- ``auth_event_loop_lag_seconds``: a task sleeps ``LAG_INTERVAL_SECONDS`` and records how
  late it woke; a request that holds the loop (CPU work that belongs in a thread) shows here.

``settle_heap`` runs once start-up is done: a full collection, then ``gc.freeze()``, so the
objects that live as long as the process (modules, settings, the app, the key cache) leave the
collector's generations and no later collection walks them again.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
from collections import deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from time import perf_counter
from typing import Any

from prometheus_client import Histogram

from auth_service.metrics import REGISTRY

LAG_INTERVAL_SECONDS = 0.25
_MAX_PENDING_PAUSES = 1024  # pauses between two publishes; beyond that the oldest are dropped
_PAUSE_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25)
_LAG_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)

GC_PAUSES = Histogram(
    "auth_gc_pause_seconds",
    "Garbage-collector pauses by generation (this worker's collections).",
    ["generation"],
    buckets=_PAUSE_BUCKETS,
    registry=REGISTRY,
)
LOOP_LAG = Histogram(
    "auth_event_loop_lag_seconds",
    f"How late a task sleeping {LAG_INTERVAL_SECONDS} s woke (event-loop stalls).",
    buckets=_LAG_BUCKETS,
    registry=REGISTRY,
)


class _GcTimer:
    """Times collections from ``gc.callbacks``, where it only appends to a bounded deque: a
    collection can start anywhere, also inside prometheus-client while it holds its values'
    lock (multiprocess mode: one non-reentrant lock), so observing there could deadlock the
    worker. ``publish`` (on the loop, from the lag probe) moves the pauses into the histogram."""

    def __init__(self) -> None:
        self._started = 0.0
        self._pauses: deque[tuple[int, float]] = deque(maxlen=_MAX_PENDING_PAUSES)
        self._children = [GC_PAUSES.labels(str(generation)) for generation in range(3)]

    def __call__(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._started = perf_counter()
        else:
            self._pauses.append(
                (min(int(info.get("generation", 2)), 2), perf_counter() - self._started)
            )

    def publish(self) -> None:
        while self._pauses:
            generation, seconds = self._pauses.popleft()
            self._children[generation].observe(seconds)


def settle_heap() -> None:
    """A full collection, then everything alive now is frozen out of later collections."""
    gc.collect()
    gc.freeze()


async def _watch_lag(interval: float, timer: _GcTimer) -> None:
    loop = asyncio.get_running_loop()
    while True:
        before = loop.time()
        await asyncio.sleep(interval)
        LOOP_LAG.observe(max(0.0, loop.time() - before - interval))
        timer.publish()


@asynccontextmanager
async def runtime_probes(interval: float = LAG_INTERVAL_SECONDS) -> AsyncIterator[None]:
    """The GC timer and the lag probe while the app serves (with metrics on)."""
    timer = _GcTimer()
    gc.callbacks.append(timer)
    task = asyncio.create_task(_watch_lag(interval, timer), name="auth-service loop-lag probe")
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        gc.callbacks.remove(timer)
        timer.publish()
