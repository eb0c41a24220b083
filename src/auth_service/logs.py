"""One logging configuration for the service and for uvicorn (``logging_config``): every line,
uvicorn's start-up and access lines included, goes through one handler on the root logger, as
text or one JSON object a line (``AUTH_LOG_FORMAT``), with the id of the request it belongs to.

An access line never carries the query string (it may hold an email address: ``/admin/users
?email=``); APScheduler's per-run INFO lines are DEBUG noise and are only shown at DEBUG.
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from typing import Any

from auth_service.request_context import current_request

ACCESS_LOGGER = "uvicorn.access"
HANDLER_NAME = "auth-service"
# APScheduler logs "Running job ..." and "... executed successfully" at INFO for every run.
_QUIET_BELOW_DEBUG = ("apscheduler.executors.default", "apscheduler.scheduler")
# Drivers whose DEBUG lines print each statement's parameters (emails, token hashes,
# password hashes): never below WARNING, whatever AUTH_LOG_LEVEL says.
_NEVER_DEBUG = ("aiosqlite", "sqlalchemy.engine", "sqlalchemy.pool")


class RequestIdFilter(logging.Filter):
    """Stamps each record with the current request's id (None outside a request)."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = current_request().request_id
        return True


def _access_fields(record: logging.LogRecord) -> dict[str, Any] | None:
    """uvicorn's access record as fields, the query string dropped; None if it is not one."""
    args = record.args
    if record.name != ACCESS_LOGGER or not isinstance(args, tuple) or len(args) != 5:
        return None
    client, method, full_path, http_version, status = args
    return {
        "client": str(client),
        "method": str(method),
        "path": str(full_path).split("?", 1)[0],
        "http_version": str(http_version),
        "status": int(str(status)) if str(status).isdigit() else status,
    }


class TextFormatter(logging.Formatter):
    """``time LEVEL logger: message [request id]``; an access line keeps uvicorn's shape,
    ``client - "GET /path HTTP/1.1" 200``, without the query string."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        access = _access_fields(record)
        if access is not None:
            record = logging.makeLogRecord(record.__dict__)
            record.msg = '%s - "%s %s HTTP/%s" %s'
            record.args = (
                access["client"],
                access["method"],
                access["path"],
                access["http_version"],
                access["status"],
            )
        line = super().format(record)
        request_id = getattr(record, "request_id", None)
        return f"{line} [{request_id}]" if request_id else line


class JsonFormatter(logging.Formatter):
    """One JSON object a line: at, level, logger, message, request_id, and for an access line
    client, method, path (no query string), status."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "at": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "level": record.levelname.lower(),
            "logger": record.name,
        }
        access = _access_fields(record)
        if access is not None:
            entry["message"] = f"{access['method']} {access['path']} {access['status']}"
            entry.update(access)
        else:
            entry["message"] = record.getMessage()
        request_id = getattr(record, "request_id", None)
        if request_id:
            entry["request_id"] = request_id
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def logging_config(level: str = "INFO", *, json_lines: bool = False) -> dict[str, Any]:
    """A ``logging.config.dictConfig`` dict, also handed to uvicorn (``log_config``), so its
    workers log exactly as the service does."""
    level = level.upper()
    formatter = JsonFormatter if json_lines else TextFormatter
    quiet = "DEBUG" if level == "DEBUG" else "WARNING"
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {"request_id": {"()": f"{__name__}.RequestIdFilter"}},
        "formatters": {"line": {"()": f"{formatter.__module__}.{formatter.__qualname__}"}},
        "handlers": {
            HANDLER_NAME: {
                "class": "logging.StreamHandler",
                "formatter": "line",
                "filters": ["request_id"],
                "stream": "ext://sys.stderr",
            }
        },
        "loggers": {
            # uvicorn's own loggers keep no handler of their own: everything reaches the root's.
            "uvicorn": {"handlers": [], "propagate": True, "level": level},
            "uvicorn.error": {"handlers": [], "propagate": True, "level": level},
            ACCESS_LOGGER: {"handlers": [], "propagate": True, "level": level},
            "alembic.runtime.plugins": {"level": "WARNING"},
            **{name: {"level": quiet} for name in _QUIET_BELOW_DEBUG},
            **{name: {"level": "WARNING"} for name in _NEVER_DEBUG},
        },
        "root": {"handlers": [HANDLER_NAME], "level": level},
    }


def configure_logging(level: str = "INFO", *, json_lines: bool = False) -> None:
    """``logging_config`` applied in this process, replacing only our own root handler (a
    test's capturing handler, or an embedding application's, stays)."""
    config = logging_config(level, json_lines=json_lines)
    handler = logging.StreamHandler()
    handler.set_name(HANDLER_NAME)
    handler.setFormatter(JsonFormatter() if json_lines else TextFormatter())
    handler.addFilter(RequestIdFilter())
    root = logging.getLogger()
    root.handlers[:] = [h for h in root.handlers if h.get_name() != HANDLER_NAME] + [handler]
    root.setLevel(config["root"]["level"])
    for name, options in config["loggers"].items():
        logger = logging.getLogger(name)
        logger.setLevel(options["level"])
        if "handlers" in options:
            logger.handlers = []
            logger.propagate = True
