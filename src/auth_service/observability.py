"""Metric counters (exported later); logging is ``auth_service.logs``."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable

from auth_service.db.models import KeyStatus
from auth_service.metrics import ROTATIONS

KEY_STATUSES = tuple(KeyStatus)


class Metrics:
    """Plain counters until the operations issue exports them (Prometheus): key rotations by
    trigger and outcome. Gauges (keys by status) are read from the key cache when asked."""

    def __init__(self) -> None:
        self.rotations: Counter[tuple[str, str]] = Counter()

    def count_rotation(self, trigger: str, outcome: str) -> None:
        """``trigger``: scheduled | manual | revocation; ``outcome``: rotated | not_due |
        busy (lock held, or the next key too young) | failed (store or database down)."""
        self.rotations[(trigger, outcome)] += 1
        ROTATIONS.labels(trigger, outcome).inc()


def keys_by_status(statuses: Iterable[str]) -> dict[str, int]:
    counts = Counter(statuses)
    return {status: counts.get(status, 0) for status in KEY_STATUSES}
