"""Time for tests: the frozen clock's start and a hand-moved monotonic source."""

from __future__ import annotations

from datetime import UTC, datetime

START = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)


class Ticks:
    """A hand-moved monotonic time source (for parts that take ``time_source``)."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now
