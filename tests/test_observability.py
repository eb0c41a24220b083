from __future__ import annotations

import json
import logging

from auth_service.logs import JsonFormatter, RequestIdFilter, TextFormatter, configure_logging
from auth_service.observability import Metrics, keys_by_status
from auth_service.request_context import RequestContext, enter_request, leave_request


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


def _access_record() -> logging.LogRecord:
    return logging.getLogger("uvicorn.access").makeRecord(
        "uvicorn.access",
        logging.INFO,
        __file__,
        1,
        '%s - "%s %s HTTP/%s" %d',
        ("127.0.0.1:5555", "GET", "/admin/users?email=alice%40example.com", "1.1", 200),
        None,
    )


def test_an_access_line_has_the_request_id_and_never_the_query_string() -> None:
    token = enter_request(RequestContext("rid-7"))
    try:
        record = _access_record()
        assert RequestIdFilter().filter(record)
    finally:
        leave_request(token)
    line = json.loads(JsonFormatter().format(record))
    assert line["request_id"] == "rid-7"
    assert (line["method"], line["path"], line["status"]) == ("GET", "/admin/users", 200)
    assert "alice" not in json.dumps(line)
    text = TextFormatter().format(record)
    assert '127.0.0.1:5555 - "GET /admin/users HTTP/1.1" 200 [rid-7]' in text
    assert "alice" not in text


def test_apscheduler_run_lines_only_show_at_debug() -> None:
    root = logging.getLogger()
    before, level = list(root.handlers), root.level
    try:
        configure_logging("INFO")
        assert not logging.getLogger("apscheduler.executors.default").isEnabledFor(logging.INFO)
        assert logging.getLogger("auth_service").isEnabledFor(logging.INFO)
        configure_logging("DEBUG")
        assert logging.getLogger("apscheduler.executors.default").isEnabledFor(logging.DEBUG)
    finally:
        root.handlers[:] = before
        root.setLevel(level)
        configure_logging("WARNING")
        root.handlers[:] = before


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
