"""The runtime probes (auth_service/runtime_probes.py): a GC pause and an event-loop stall are
each measured and exported; ``settle_heap`` freezes what is alive at start-up."""

from __future__ import annotations

import asyncio
import gc
import time

from auth_service.metrics import REGISTRY
from auth_service.runtime_probes import runtime_probes, settle_heap


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


async def test_a_collection_is_timed_by_generation() -> None:
    before = sample("auth_gc_pause_seconds_count", generation="2")
    async with runtime_probes():
        gc.collect()
    assert sample("auth_gc_pause_seconds_count", generation="2") == before + 1
    gc.collect()  # the hook is gone once the probes stop
    assert sample("auth_gc_pause_seconds_count", generation="2") == before + 1


def test_a_collection_never_takes_a_metrics_lock() -> None:
    """Inside ``gc.callbacks`` nothing is observed: a collection can start while
    prometheus-client holds its (multiprocess: one, non-reentrant) values lock, and observing
    there deadlocked the worker (attack review). The pause is published later, on the loop."""
    from auth_service.runtime_probes import _GcTimer

    timer = _GcTimer()
    before = sample("auth_gc_pause_seconds_count", generation="1")
    timer("start", {"generation": 1})
    timer("stop", {"generation": 1})
    assert sample("auth_gc_pause_seconds_count", generation="1") == before
    timer.publish()
    assert sample("auth_gc_pause_seconds_count", generation="1") == before + 1
    for _ in range(5000):  # bounded while nothing publishes
        timer("start", {"generation": 0})
        timer("stop", {"generation": 0})
    assert len(timer._pauses) <= 1024


async def test_a_blocked_loop_shows_as_lag() -> None:
    before_count = sample("auth_event_loop_lag_seconds_count")
    before_fast = sample("auth_event_loop_lag_seconds_bucket", le="0.025")
    async with runtime_probes(interval=0.01):
        await asyncio.sleep(0.05)
        time.sleep(0.1)  # CPU work on the loop: the probe wakes ~100 ms late
        await asyncio.sleep(0.05)
    count = sample("auth_event_loop_lag_seconds_count") - before_count
    fast = sample("auth_event_loop_lag_seconds_bucket", le="0.025") - before_fast
    assert count >= 2
    assert fast <= count - 1  # at least one wake-up was later than 25 ms


def test_settle_heap_freezes_what_is_alive() -> None:
    try:
        settle_heap()
        assert gc.get_freeze_count() > 1000
    finally:
        gc.unfreeze()
