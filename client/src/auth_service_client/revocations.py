"""The revocation stream follower: ``GET /events/revocations`` (Server-Sent Events, the wire
format of docs/design/client-library.md) applied to bounded, TTL'd in-memory sets.

- Client Basic auth (RFC 6749 §2.3.1: id and secret form-urlencoded first).
- SSE frames are parsed here (``SseParser``), no extra dependency.
- Events: ``jti``, ``sid``, ``user`` (revoked_after), ``user_disabled``/``user_enabled``,
  ``client`` (deleted), ``keys`` (the revoked kids; JWKS refetched, at most once a second),
  ``resync`` (drop every entry held), ``synced`` (current from here on). Entries are
  forgotten after their ``until``.
- Healthy while a byte (an event or the heartbeat comment) came within ``heartbeat`` seconds
  (15 s, or the ``heartbeat`` the ``synced`` event's data names: a number in (0, 300]).
  ``stale_for()`` counts from the last byte + ``heartbeat`` (connected but silent) or from
  the last good moment (lost), so a frozen server is stale after ``heartbeat`` seconds.
- Lost stream: not current; reconnect with exponential back-off and ``Last-Event-ID``. No
  byte for twice the heartbeat counts as lost; so does a protocol error (an event over 1 MiB,
  a line over 1 MiB).
- ``revoked_reason(claims)`` uses the service's precedence: ``user_disabled``, then
  ``token_revoked`` (jti), ``session_revoked``, ``token_revoked`` (revoke-after); a service
  token: its jti or its deleted client → ``token_revoked``.
"""

from __future__ import annotations

import asyncio
import base64
import codecs
import contextlib
import json
import logging
import random
import re
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote_plus

import httpx

from auth_service_client.rules import is_service

log = logging.getLogger(__name__)

EVENTS_PATH = "/events/revocations"
_EOL = re.compile(r"\r\n|\r|\n")
_MAX_LINE = 1 << 20  # the unparsed buffer (one line without its end)
_MAX_EVENT = 1 << 20  # the data lines of one event, together
_MAX_HEARTBEAT = 300.0


def heartbeat_of(data: Mapping[str, Any]) -> float | None:
    """The ``heartbeat`` a ``synced`` event's data announces, if plausible (0 < s <= 300)."""
    value = data.get("heartbeat")
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if 0 < value <= _MAX_HEARTBEAT else None


def basic_auth(client_id: str, client_secret: str) -> str:
    """An ``Authorization`` value per RFC 6749 §2.3.1 (each part form-urlencoded)."""
    raw = f"{quote_plus(client_id)}:{quote_plus(client_secret)}".encode()
    return "Basic " + base64.b64encode(raw).decode("ascii")


@dataclass(frozen=True, slots=True)
class SseEvent:
    event: str
    data: str
    id: str | None


class SseParser:
    """Incremental text/event-stream parsing (HTML Living Standard §9.2.6). ``ValueError``
    (a protocol error) past ``_MAX_LINE`` unparsed or ``_MAX_EVENT`` of one event's data."""

    def __init__(self) -> None:
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._buffer = ""
        self._event = ""
        self._data: list[str] = []
        self._size = 0  # characters in _data (and its line ends)
        self._id: str | None = None

    def feed(self, chunk: bytes) -> list[SseEvent]:
        self._buffer += self._decoder.decode(chunk)
        events: list[SseEvent] = []
        while (found := _EOL.search(self._buffer)) is not None:
            if found.group() == "\r" and found.end() == len(self._buffer):
                break  # perhaps the first half of a CRLF
            line, self._buffer = self._buffer[: found.start()], self._buffer[found.end() :]
            event = self._line(line)
            if event is not None:
                events.append(event)
        if len(self._buffer) > _MAX_LINE:
            raise ValueError("an SSE line over 1 MiB")
        return events

    def _line(self, line: str) -> SseEvent | None:
        if not line:
            return self._dispatch()
        if line.startswith(":"):
            return None  # a comment (the heartbeat)
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "event":
            self._event = value
        elif name == "data":
            self._size += len(value) + 1
            if self._size > _MAX_EVENT:
                raise ValueError("an SSE event over 1 MiB")
            self._data.append(value)
        elif name == "id" and "\0" not in value:
            self._id = value
        return None

    def _dispatch(self) -> SseEvent | None:
        event, data, self._event, self._data = self._event or "message", self._data, "", []
        self._size = 0
        if not data:
            return None
        return SseEvent(event, "\n".join(data), self._id)

    def held(self) -> int:
        """Characters held: the unparsed buffer and the pending event's data."""
        return len(self._buffer) + self._size


class RevocationState:
    """The revocation entries held, each with its ``until`` (epoch seconds). At most
    ``max_entries``: past that (after forgetting the lapsed) the state is ``lossy`` until
    the next ``resync``, and a lossy state is never current."""

    def __init__(self, max_entries: int = 1_000_000) -> None:
        self.max_entries = max_entries
        self.jti: dict[str, float] = {}
        self.sid: dict[str, float] = {}
        self.clients: dict[str, float] = {}
        self.disabled: dict[str, float] = {}
        self.revoked_after: dict[str, tuple[float, float]] = {}  # user → (after, until)
        self.revoked_kids: frozenset[str] = frozenset()
        self.lossy = False

    def __len__(self) -> int:
        tables = (self.jti, self.sid, self.clients, self.disabled, self.revoked_after)
        return sum(len(table) for table in tables)

    def clear(self) -> None:
        for table in (self.jti, self.sid, self.clients, self.disabled, self.revoked_after):
            table.clear()
        self.lossy = False

    def prune(self, now: float) -> None:
        for table in (self.jti, self.sid, self.clients, self.disabled):
            for name in [name for name, until in table.items() if until <= now]:
                del table[name]
        for user in [u for u, (_, until) in self.revoked_after.items() if until <= now]:
            del self.revoked_after[user]

    def apply(self, event: str, data: Mapping[str, Any], now: float) -> bool:
        """Apply one revocation event; True if it is one this state holds."""
        until = float(data.get("until", now + 86_400))
        if event == "jti":
            self._put(self.jti, str(data["jti"]), until, now)
        elif event == "sid":
            self._put(self.sid, str(data["sid"]), until, now)
        elif event == "client":
            self._put(self.clients, str(data["client_id"]), until, now)
        elif event == "user_disabled":
            self._put(self.disabled, str(data["user"]), until, now)
        elif event == "user_enabled":
            self.disabled.pop(str(data["user"]), None)
        elif event == "user":
            user, after = str(data["user"]), float(data["revoked_after"])
            held = self.revoked_after.get(user)
            if held is None or held[0] <= after:
                self.revoked_after[user] = (after, max(until, held[1] if held else until))
                self._check_size(now)
        elif event == "keys":
            self.revoked_kids = frozenset(str(kid) for kid in data.get("revoked", []))
        else:
            return False
        return True

    def _put(self, table: dict[str, float], name: str, until: float, now: float) -> None:
        table[name] = max(until, table.get(name, until))
        self._check_size(now)

    def _check_size(self, now: float) -> None:
        if len(self) > self.max_entries:
            self.prune(now)
            if len(self) > self.max_entries:
                self.lossy = True

    def reason(self, claims: Mapping[str, Any], now: float) -> str | None:
        """The service's ``revocation_reason`` over the entries held."""
        jti = str(claims.get("jti"))
        if is_service(claims):
            client = claims.get("client_id")
            if self._live(self.jti, jti, now) or self._live(self.clients, client, now):
                return "token_revoked"
            return None
        user = str(claims.get("sub"))
        if self._live(self.disabled, user, now):
            return "user_disabled"
        if self._live(self.jti, jti, now):
            return "token_revoked"
        if self._live(self.sid, claims.get("sid"), now):
            return "session_revoked"
        after = self.revoked_after.get(user)
        if after is not None and after[1] > now and float(claims.get("iat", 0)) <= after[0]:
            return "token_revoked"
        return None

    @staticmethod
    def _live(table: dict[str, float], name: object, now: float) -> bool:
        until = table.get(name) if isinstance(name, str) else None
        return until is not None and until > now


class RevocationFollower:
    """Follows the stream in a background task (``start``/``aclose``); implements the
    ``types.RevocationSource`` protocol. ``current`` is True after a ``synced`` while a byte
    came within ``heartbeat`` seconds; ``stale_for()`` says for how long it has not been."""

    def __init__(
        self,
        http: httpx.AsyncClient,
        url: str,
        client_id: str,
        client_secret: str,
        *,
        heartbeat: float = 15.0,
        backoff: tuple[float, float] = (0.5, 30.0),
        on_keys: Callable[[], Awaitable[None]] | None = None,
        max_entries: int = 1_000_000,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._http, self._url = http, url
        self._auth = basic_auth(client_id, client_secret)
        self._heartbeat, self._backoff, self._on_keys = heartbeat, backoff, on_keys
        self._clock, self._monotonic = clock, monotonic
        self.state = RevocationState(max_entries)
        self.last_event_id: str | None = None
        self._synced = False
        self._lost_at = monotonic()  # once lost: the last moment the state was good
        self._last_byte = monotonic()
        self._ever_synced = False
        self._callbacks: list[Callable[[], None]] = []
        self._task: asyncio.Task[None] | None = None
        self._background: set[asyncio.Future[None]] = set()
        self._synced_event = asyncio.Event()

    @property
    def heartbeat(self) -> float:
        """The heartbeat interval in use (the service's, once a ``synced`` named it)."""
        return self._heartbeat

    @property
    def current(self) -> bool:
        return self.stale_for() == 0.0

    def stale_for(self) -> float:
        """Seconds not current (infinite before the first ``synced`` or while lossy): 0
        while a byte came within ``heartbeat``; else since last byte + ``heartbeat``, or,
        once lost, since the last good moment."""
        if not self._ever_synced or self.state.lossy:
            return float("inf")
        good_until = self._good_until() if self._synced else self._lost_at
        return max(0.0, self._monotonic() - good_until)

    def _good_until(self) -> float:
        return self._last_byte + self._heartbeat

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="auth-revocation-follower")

    async def aclose(self) -> None:
        tasks = [t for t in (self._task, *self._background) if t is not None]
        self._task = None
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._lose()

    async def wait_synced(self) -> None:
        """Until the stream is current (wrap in ``asyncio.timeout`` to bound it)."""
        await self._synced_event.wait()

    def revoked_reason(self, claims: Mapping[str, Any]) -> str | None:
        return self.state.reason(claims, self._clock())

    def on_revocation(self, callback: Callable[[], None]) -> Callable[[], None]:
        self._callbacks.append(callback)
        return lambda: self._callbacks.remove(callback) if callback in self._callbacks else None

    def _lose(self) -> None:
        if self._synced:
            self._lost_at = min(self._monotonic(), self._good_until())
        self._synced = False
        self._synced_event.clear()

    async def _run(self) -> None:
        delay = self._backoff[0]
        while True:
            try:
                if await self._follow():
                    delay = self._backoff[0]  # a stream that synced resets the back-off
            except (httpx.HTTPError, ValueError, TimeoutError) as exc:
                log.warning("the revocation stream was lost: %r", exc)
            except RejectedStream as exc:
                log.error("the revocation stream was refused: %s", exc)
                delay = max(delay, exc.retry_after)
            self._lose()
            await asyncio.sleep(delay * (0.5 + random.random() / 2))  # noqa: S311  (jitter)
            delay = min(delay * 2, self._backoff[1])

    async def _follow(self) -> bool:
        """One connection; True if it reached ``synced``."""
        headers = {"Accept": "text/event-stream", "Authorization": self._auth}
        if self.last_event_id:
            headers["Last-Event-ID"] = self.last_event_id
        timeout = httpx.Timeout(10.0, read=None)
        async with self._http.stream("GET", self._url, headers=headers, timeout=timeout) as resp:
            if resp.status_code != 200:
                retry = resp.headers.get("retry-after", "")
                raise RejectedStream(resp.status_code, float(retry) if retry.isdigit() else 0)
            parser, chunks = SseParser(), resp.aiter_bytes().__aiter__()
            while True:
                try:  # not wait_for: on 3.11 it can swallow a cancel (aclose would hang)
                    async with asyncio.timeout(2 * self._heartbeat):
                        chunk = await anext(chunks)
                except StopAsyncIteration:
                    return self._ever_synced and self._synced
                self._last_byte = self._monotonic()
                for event in parser.feed(chunk):
                    await self._handle(event)

    async def _handle(self, event: SseEvent) -> None:
        try:
            data = json.loads(event.data)
            if not isinstance(data, dict):
                raise ValueError("not an object")
            if event.event == "resync":
                self.state.clear()
            elif event.event == "synced":
                self.state.prune(self._clock())
                if (heartbeat := heartbeat_of(data)) is not None:
                    self._heartbeat = heartbeat
                self._synced = self._ever_synced = True
                self._synced_event.set()
            elif event.event == "keys":
                kids = self.state.revoked_kids
                self.state.apply(event.event, data, self._clock())
                if self._on_keys is not None:  # in the background: events keep flowing
                    self._spawn(self._on_keys())
                if self.state.revoked_kids != kids:
                    self._notify()
            elif self.state.apply(event.event, data, self._clock()):
                self._notify()
        except (ValueError, KeyError, TypeError) as exc:
            log.warning("revocation event %s ignored: %r", event.event, exc)
        if event.id is not None:
            self.last_event_id = event.id

    def _spawn(self, work: Awaitable[None]) -> None:
        task = asyncio.ensure_future(work)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    def _notify(self) -> None:
        for callback in list(self._callbacks):
            try:
                callback()
            except Exception:
                log.exception("a revocation callback failed")


class RejectedStream(Exception):
    """The service answered the stream with a non-200 status."""

    def __init__(self, status: int, retry_after: float) -> None:
        super().__init__(f"status {status}")
        self.status, self.retry_after = status, retry_after
