"""Structured logging (one JSON object a line) and metric counters (exported later)."""

from __future__ import annotations

import json
import logging
from collections import Counter
from collections.abc import Iterable
from datetime import UTC, datetime

from auth_service.db.models import KeyStatus

_HANDLER_NAME = "auth-service"
KEY_STATUSES = tuple(KeyStatus)


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "at": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry)


def configure_logging(level: str = "INFO", *, json_lines: bool = False) -> None:
    handler: logging.Handler = logging.StreamHandler()
    handler.set_name(_HANDLER_NAME)
    if json_lines:
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [h for h in root.handlers if h.get_name() != _HANDLER_NAME] + [handler]
    root.setLevel(level)
    logging.getLogger("alembic.runtime.plugins").setLevel(logging.WARNING)


class Metrics:
    """Plain counters until the operations issue exports them (Prometheus): key rotations by
    trigger and outcome. Gauges (keys by status) are read from the key cache when asked."""

    def __init__(self) -> None:
        self.rotations: Counter[tuple[str, str]] = Counter()

    def count_rotation(self, trigger: str, outcome: str) -> None:
        """``trigger``: scheduled | manual | revocation; ``outcome``: rotated | not_due |
        busy (lock held, or the next key too young) | failed (store or database down)."""
        self.rotations[(trigger, outcome)] += 1


def keys_by_status(statuses: Iterable[str]) -> dict[str, int]:
    counts = Counter(statuses)
    return {status: counts.get(status, 0) for status in KEY_STATUSES}
