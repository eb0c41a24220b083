"""The revocation stream (``GET /events/revocations``): every revocation, as it happens, to
every local verifier that follows it (docs/design/client-library.md has the wire format).

Fed by the revocation mirror: each instance's mirror hears every announcement of every
instance on the store's pub/sub, and passes it to this feed, which translates the store key
into an event and queues it on each open stream. Key changes come from the key cache: after
each reload whose revoked kids or JWKS differ, a ``keys`` event. A new stream first gets
``keys``, then either the journal after its ``Last-Event-ID`` (same index epoch, still held)
or ``resync`` and a snapshot of the mirror, then ``synced``. It attaches before reading
either, so nothing announced meanwhile is missed (an event seen twice is harmless).

Bounded: at most ``per_client`` streams per client on an instance, ``queue_size`` queued
events per stream (a reader that falls further behind is closed and resumes from its last
id). When the mirror loses its subscription, when the client is deleted, and at shutdown,
streams are closed: a client reconnects, and resumes or resyncs.
"""

from __future__ import annotations

import asyncio
import json
import math
import time
from collections import deque
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from auth_service.db.models import KeyStatus
from auth_service.errors import ServiceUnavailableError
from auth_service.services.keyring import KeyRing, KeySnapshot
from auth_service.services.store_keys import parse_revocation_key, stream_connect_key
from auth_service.store.base import StoreUnavailableError
from auth_service.store.mirror import (
    Announcement,
    MirroredStore,
    event_epoch,
    event_time_ms,
)

CONNECTS_PER_MINUTE = 120
"""Stream connections per client per minute over all instances: each builds a snapshot (or
reads the journal), so a client reconnecting in a loop is refused instead of served."""

RESUME_OVERLAP_MS = 5_000
"""A resume replays this much before its last id too: instance clocks differ."""

_CURRENT_WAIT_SECONDS = 2.0


class TooManyStreamsError(Exception):
    """The client holds ``per_client`` streams on this instance, or connected too often."""

    def __init__(self, client_id: str, retry_after_seconds: int = 5) -> None:
        super().__init__(client_id)
        self.retry_after_seconds = retry_after_seconds


@dataclass(frozen=True, slots=True)
class Event:
    type: str
    data: dict[str, Any]
    id: str | None = None

    def frame(self) -> bytes:
        head = f"id: {self.id}\n" if self.id is not None else ""
        body = json.dumps(self.data, separators=(",", ":"))
        return f"{head}event: {self.type}\ndata: {body}\n\n".encode()


def event_for(announcement: Announcement, now: float, *, replayed: bool = False) -> Event | None:
    """The stream event for one mirror announcement, or None (not a revocation). A replayed
    one's ``until`` counts from when it was written (its id's time); a live one's from now."""
    parsed = parse_revocation_key(announcement.key)
    if parsed is None:
        return None
    kind, ident = parsed
    millis = event_time_ms(announcement.id) if replayed and announcement.id else None
    announced_at = now if millis is None else millis / 1000
    until = math.ceil(announced_at + announcement.ttl_ms / 1000)
    value, event_id = announcement.value, announcement.id
    if value is None:  # a removal: only re-enabling a user is one
        return Event("user_enabled", {"user": ident}, event_id) if kind == "disabled" else None
    if kind == "revoked_after":
        try:
            after = int(float(value))
        except ValueError:
            return None
        return Event("user", {"user": ident, "revoked_after": after, "until": until}, event_id)
    if kind == "disabled":
        return Event("user_disabled", {"user": ident, "until": until}, event_id)
    if kind == "client":
        return Event("client", {"client_id": ident, "until": until}, event_id)
    return Event(kind, {kind: ident, "until": until}, event_id)


@dataclass(eq=False)
class Stream:
    """One open stream's queue. ``next`` answers an event, None when closed, or raises
    TimeoutError when nothing came within the heartbeat interval."""

    client_id: str
    limit: int
    attached: float = field(default_factory=time.monotonic)
    _queue: deque[Event] = field(default_factory=deque)
    _ready: asyncio.Event = field(default_factory=asyncio.Event)
    closed: bool = False

    def push(self, event: Event) -> None:
        if self.closed:
            return
        if len(self._queue) >= self.limit:
            self.close()  # too far behind: it resumes from its last id
            return
        self._queue.append(event)
        self._ready.set()

    def close(self) -> None:
        self.closed = True
        self._queue.clear()
        self._ready.set()

    async def next(self, wait_seconds: float) -> Event | None:
        while not self._queue and not self.closed:
            self._ready.clear()
            await asyncio.wait_for(self._ready.wait(), wait_seconds)
        if self.closed:
            return None
        return self._queue.popleft()


class RevocationFeed:
    def __init__(
        self,
        mirror: MirroredStore,
        keyring: KeyRing,
        *,
        per_client: int,
        queue_size: int = 1000,
        heartbeat: float = 15.0,
    ) -> None:
        self._mirror = mirror
        self.heartbeat = heartbeat
        self._keyring = keyring
        self._per_client = per_client
        self._queue_size = queue_size
        self._streams: set[Stream] = set()
        self._keys_seen: tuple[str, tuple[str, ...]] | None = None
        self._shut_down = False
        self._reading: tuple[float, asyncio.Task[list[tuple[int, Announcement]]]] | None = None
        mirror.add_listener(self)
        keyring.watch(self._keys_replaced)

    # -- opening and closing ------------------------------------------------------------
    async def admit(self, client_id: str) -> Stream:
        """``open``, after counting the connection against ``CONNECTS_PER_MINUTE``."""
        try:
            counted = await self._mirror.hit(
                stream_connect_key(client_id), CONNECTS_PER_MINUTE, timedelta(minutes=1)
            )
        except StoreUnavailableError as exc:
            raise ServiceUnavailableError("the store is unavailable") from exc
        if not counted.allowed:
            raise TooManyStreamsError(client_id, counted.retry_after_seconds)
        return self.open(client_id)

    def open(self, client_id: str) -> Stream:
        if self._shut_down:
            raise ServiceUnavailableError("the instance is shutting down")
        held = sum(1 for s in self._streams if s.client_id == client_id and not s.closed)
        if held >= self._per_client:
            raise TooManyStreamsError(client_id)
        stream = Stream(client_id, self._queue_size)
        self._streams.add(stream)
        return stream

    def close(self, stream: Stream) -> None:
        stream.close()
        self._streams.discard(stream)

    def close_all(self) -> None:
        for stream in list(self._streams):
            self.close(stream)

    def shut_down(self) -> None:
        """The instance is stopping: end every stream and open no more."""
        self._shut_down = True
        self.close_all()

    async def opening(self, stream: Stream, last_event_id: str | None) -> list[Event]:
        """What a new stream is sent first (after ``open``, before live events)."""
        await self._await_current()
        events = [self.keys_event()]
        try:
            replay = await self._replay(stream, last_event_id)
        except StoreUnavailableError as exc:
            raise ServiceUnavailableError("the revocation backlog cannot be read") from exc
        if replay is None:
            events.append(Event("resync", {}))
            events.extend(self.snapshot())
        else:
            events.extend(replay)
        events.append(Event("synced", {"heartbeat": self.heartbeat}))
        return events

    async def _await_current(self) -> None:
        deadline = time.monotonic() + _CURRENT_WAIT_SECONDS
        while not self._mirror.current:
            if time.monotonic() >= deadline:
                raise ServiceUnavailableError("the revocation index is not current")
            await asyncio.sleep(0.05)

    async def _replay(self, stream: Stream, last_event_id: str | None) -> list[Event] | None:
        """The journal after ``last_event_id``, or None when it cannot be resumed from."""
        journal = self._mirror.journal
        millis = event_time_ms(last_event_id) if last_event_id else None
        if journal is None or last_event_id is None or millis is None:
            return None
        epoch = self._mirror.epoch
        oldest_held = (time.time() - journal.ttl.total_seconds()) * 1000
        if epoch is None or event_epoch(last_event_id) != epoch or millis < oldest_held:
            return None
        now, since = time.time(), millis - RESUME_OVERLAP_MS
        found = await self._journal(stream)
        return [
            e
            for at, a in found
            if at >= since and (e := event_for(a, now, replayed=True)) is not None
        ]

    async def _journal(self, stream: Stream) -> list[tuple[int, Announcement]]:
        """The journal, read once for every resume that attached before the read began: a
        herd of followers reconnecting at once (an instance restarted) costs one or two
        scans of the store, not one each. A read that began before this stream attached
        could miss what was announced in between, so it is not shared with it."""
        reading = self._reading
        if reading is None or reading[0] < stream.attached or reading[1].done():
            reading = (time.monotonic(), asyncio.ensure_future(self._mirror.read_journal()))
            self._reading = reading
        return await asyncio.shield(reading[1])

    def snapshot(self) -> list[Event]:
        """Every live revocation the mirror holds, as events (without ids)."""
        now = time.time()
        events: list[Event] = []
        for key, value, expires in self._mirror.entries():
            ttl_ms = max(1, int((expires - now) * 1000))
            event = event_for(Announcement(key, value, ttl_ms, None), now)
            if event is not None:
                events.append(event)
        return events

    def keys_event(self) -> Event:
        return Event("keys", {"revoked": self._revoked_kids(self._keyring.snapshot)})

    @staticmethod
    def _revoked_kids(snapshot: KeySnapshot) -> list[str]:
        return sorted(k.kid for k in snapshot.keys.values() if k.status == KeyStatus.REVOKED)

    # -- what the mirror and the key cache tell it --------------------------------------
    def announced(self, announcement: Announcement) -> None:
        event = event_for(announcement, time.time())
        if event is None:
            return
        if event.type == "client":  # a deleted client's streams end with it
            for stream in [s for s in self._streams if s.client_id == event.data["client_id"]]:
                self.close(stream)
        for stream in self._streams:
            stream.push(event)

    def lost(self) -> None:
        self.close_all()

    def _keys_replaced(self, snapshot: KeySnapshot) -> None:
        seen = (snapshot.jwks.etag, tuple(self._revoked_kids(snapshot)))
        if seen == self._keys_seen:
            return
        first = self._keys_seen is None
        self._keys_seen = seen
        if not first:
            event = Event("keys", {"revoked": list(seen[1])})
            for stream in self._streams:
                stream.push(event)
