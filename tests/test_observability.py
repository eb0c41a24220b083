from __future__ import annotations

import json
import logging

from auth_service.observability import JsonFormatter, Metrics, configure_logging, keys_by_status


def test_json_lines_carry_level_logger_message_and_exception() -> None:
    try:
        raise ValueError("boom")
    except ValueError:
        record = logging.getLogger("x").makeRecord(
            "x", logging.ERROR, __file__, 1, "failed %s", ("here",), exc_info=True
        )
        import sys

        record.exc_info = sys.exc_info()
    line = json.loads(JsonFormatter().format(record))
    assert line["level"] == "error"
    assert line["logger"] == "x"
    assert line["message"] == "failed here"
    assert "ValueError: boom" in line["exception"]
    assert line["at"].endswith("+00:00")


def test_configure_logging_replaces_only_its_own_handler() -> None:
    root = logging.getLogger()
    before = list(root.handlers)
    level = root.level
    try:
        configure_logging("WARNING", json_lines=True)
        configure_logging("INFO")
        ours = [h for h in root.handlers if h.get_name() == "auth-service"]
        assert len(ours) == 1
        assert all(h in root.handlers for h in before if h.get_name() != "auth-service")
        assert root.level == logging.INFO
    finally:
        root.handlers[:] = before
        root.setLevel(level)


def test_rotation_counters_and_the_keys_by_status_gauge() -> None:
    metrics = Metrics()
    metrics.count_rotation("scheduled", "not_due")
    metrics.count_rotation("scheduled", "not_due")
    metrics.count_rotation("manual", "busy")
    assert metrics.rotations == {("scheduled", "not_due"): 2, ("manual", "busy"): 1}
    assert keys_by_status(["active", "next", "retired", "retired"]) == {
        "next": 1,
        "active": 1,
        "retired": 2,
        "expired": 0,
        "revoked": 0,
    }
