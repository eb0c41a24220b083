"""The access log: one line a request, the project's own record (uvicorn's is turned off).

A line is built with one f-string after the answer is sent and appended to a buffer; a timer
on the loop (``FLUSH_SECONDS``) or a full buffer writes the buffer, in chunks of whole lines of
at most ``CHUNK_BYTES`` (one ``write`` a chunk: atomic on a pipe, so the lines of two workers
sharing one stderr never interleave mid-line). No ``logging`` record a request: that (a record,
a filter, a formatter, a locked write and flush) is what cost uvicorn's line an eighth of the
throughput.

A line carries the route *template*, never the query string, and no token, header or body:
``at``, ``level``, ``logger``, ``message``, ``request_id``, ``method``, ``route``,
``status``, ``duration_ms``, ``client`` (the address the rate limits see), ``client_id``
once a client authenticated, and for a request no route matched (``route`` is
``unmatched``: a CORS preflight, a 404) its ``path``, escaped and cut to 100 characters.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from time import time
from typing import Any, Protocol

from starlette.types import Scope

LOGGER = "auth_service.access"
FLUSH_SECONDS = 0.1
BUFFER_BYTES = 32 * 1024
CHUNK_BYTES = 4096  # PIPE_BUF on Linux: a write of at most this much to a pipe is atomic
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
_PLAIN = re.compile(r"[0-9A-Za-z:._-]{1,64}")  # an address or a client id; else JSON-escaped
_PLAIN_PATH = re.compile(r"/[A-Za-z0-9/._~-]*")
MAX_PATH = 100
_MEMO_SIZE = 1024  # remembered line parts (addresses, client ids, routes) at most
_MEMO_VALUE_CHARS = 64  # and only short ones (an address, a client id)
_NO_STATE: dict[str, Any] = {}

log = logging.getLogger(LOGGER)


class Sink(Protocol):
    def write(self, text: str, /) -> Any: ...

    def flush(self) -> Any: ...


def _stderr() -> Sink:
    return sys.stderr  # looked up at each write: a test or an embedder may have replaced it


class AccessLog:
    """Buffers access lines and writes them off the request path (event-loop use only)."""

    def __init__(
        self,
        *,
        json_lines: bool,
        sink: Callable[[], Sink] = _stderr,
        now: Callable[[], float] = time,
    ) -> None:
        self._json = json_lines
        self.sink = sink  # where lines go (stderr, looked up at each write)
        self._now = now
        self._lines: list[str] = []
        self._size = 0
        self._timer: asyncio.TimerHandle | None = None
        self._second = -1
        self._millisecond = -1
        self._stamp = ""
        self._at = ""
        self._heads: dict[tuple[str, str], tuple[str, str]] = {}
        self._quoted: dict[str | None, str] = {}
        self.dropped = 0

    def record(
        self,
        scope: Scope,
        status: int,
        seconds: float,
        request_id: str,
        client: str | None,
    ) -> None:
        route = scope.get("route")
        template = getattr(route, "path", None)
        path = ""  # only for a request no route matched (a CORS preflight, a 404)
        if template is None:
            template = "unmatched"
            path = _path(scope.get("path", ""), bare=not self._json)
        method = scope.get("method", "GET")
        client_id = scope.get("state", _NO_STATE).get("client_id")
        head = self._heads.get((method, template))
        if head is None:
            head = self._head(method, template)
        now = self._now()
        if int(now * 1000) != self._millisecond:
            self._set_at(now)
        millis = f"{seconds * 1000:.2f}"
        quoted = self._quoted
        address = quoted.get(client) or self._quote(client)
        if self._json:
            line = (
                f'{{"at":"{self._at}",{head[0]} {status}","request_id":"{request_id}",'
                f'{head[1]}"status":{status},"duration_ms":{millis},"client":{address}'
                + (
                    f',"client_id":{quoted.get(client_id) or self._quote(client_id)}'
                    if client_id is not None
                    else ""
                )
                + (f',"path":{path}' if path else "")
                + "}\n"
            )
        else:
            line = (
                f'{self._at} {head[0]}{address} {head[1]}{" " if path else ""}{path}" {status} '
                f"{millis}ms"
                + (
                    f" client_id={quoted.get(client_id) or self._quote(client_id)}"
                    if client_id is not None
                    else ""
                )
                + f" [{request_id}]\n"
            )
        self._lines.append(line)
        self._size += len(line)
        if self._size >= BUFFER_BYTES:
            self.flush()
        elif self._timer is None:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:  # not on a loop (a synchronous caller): write now
                self.flush()
                return
            self._timer = loop.call_later(FLUSH_SECONDS, self.flush)

    def flush(self) -> None:
        """Write every buffered line now (also when the app stops)."""
        timer, self._timer = self._timer, None
        if timer is not None:
            timer.cancel()
        lines, self._lines, self._size = self._lines, [], 0
        if not lines:
            return
        try:
            sink = self.sink()
            for chunk in _chunks(lines):
                sink.write(chunk)
                sink.flush()
        except (OSError, ValueError) as exc:  # a closed or broken stderr: never a request's error
            self.dropped += len(lines)
            log.warning("access log lines could not be written: %s", type(exc).__name__)

    def _head(self, method: str, template: str) -> tuple[str, str]:
        """The parts of a line that only the method and route decide, built once each."""
        shown = method if method in _METHODS else "other"
        if self._json:
            head = (
                f'"level":"info","logger":"{LOGGER}","message":"{shown} {template}',
                f'"method":"{shown}","route":"{template}",',
            )
        else:
            head = (f"INFO {LOGGER}: ", f'"{shown} {template}')
        if template != "unmatched" and len(self._heads) < _MEMO_SIZE:
            self._heads[(method, template)] = head
        return head

    def _quote(self, value: str | None) -> str:
        """``value`` as the line shows it (``_quoted``), remembered: a client's address and
        id repeat from line to line."""
        shown = "-" if value is None and not self._json else _quoted(value, bare=not self._json)
        if value is not None and len(value) > _MEMO_VALUE_CHARS:
            return shown  # a forwarded hop can be a long header: never remembered
        if len(self._quoted) >= _MEMO_SIZE:
            self._quoted.clear()  # a flood of distinct forwarded addresses: start again
        self._quoted[value] = shown
        return shown

    def _set_at(self, now: float) -> None:
        """The time as the other lines give it (ISO 8601 UTC): text to the millisecond (one
        computation a millisecond, not a line), JSON to the microsecond as the JSON lines."""
        millisecond = int(now * 1000)
        second = millisecond // 1000
        if second != self._second:
            self._second = second
            moment = datetime.fromtimestamp(second, UTC)
            shape = "%Y-%m-%dT%H:%M:%S" if self._json else "%Y-%m-%d %H:%M:%S"
            self._stamp = moment.strftime(shape)
        if self._json:
            self._millisecond = -1  # every line its own microseconds
            self._at = f"{self._stamp}.{int((now - second) * 1_000_000):06d}+00:00"
        else:
            self._millisecond = millisecond
            self._at = f"{self._stamp},{millisecond - second * 1000:03d}"


def _quoted(value: str | None, *, bare: bool = False) -> str:
    """``value`` as a JSON string (``bare``: without the quotes when it is plain); a value from
    a header (an X-Forwarded-For hop) may hold anything, so anything else is escaped."""
    if value is not None and _PLAIN.fullmatch(value):
        return value if bare else f'"{value}"'
    return json.dumps(value)


def _path(raw: str, *, bare: bool) -> str:
    """An unmatched request's path as a JSON string (``bare``: without the quotes when it is
    plain), cut to ``MAX_PATH`` characters: the request line's (decoded) path may hold
    anything, so anything unusual is escaped."""
    cut = raw[:MAX_PATH]
    if _PLAIN_PATH.fullmatch(cut):
        return cut if bare else f'"{cut}"'
    return json.dumps(cut)


def _chunks(lines: list[str]) -> list[str]:
    """Whole lines joined into chunks of at most ``CHUNK_BYTES`` (a longer line alone)."""
    chunks: list[str] = []
    current: list[str] = []
    size = 0
    for line in lines:
        if current and size + len(line) > CHUNK_BYTES:
            chunks.append("".join(current))
            current, size = [], 0
        current.append(line)
        size += len(line)
    if current:
        chunks.append("".join(current))
    return chunks


def access_log_enabled(setting: bool) -> bool:
    """On by the setting, and while INFO reaches uvicorn's access logger (``serve --log-level
    warning`` and ``AUTH_LOG_LEVEL=WARNING`` keep turning access lines off, as before)."""
    return setting and logging.getLogger("uvicorn.access").isEnabledFor(logging.INFO)
