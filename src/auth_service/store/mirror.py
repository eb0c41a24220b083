"""``MirroredStore``: revocation entries answered from memory, kept current by pub/sub.

Every write under a mirrored prefix (``prefixes``, given by the caller: the service passes
``services.store_keys.MIRRORED_PREFIXES``) goes to the store, is applied
to this instance's mirror at once, and is announced on ``revocations`` so every other
instance applies it within milliseconds. A reader (``get_many``) is answered from memory
only while the mirror is known to be current: subscribed, and resynchronised from a full
``scan`` after (re)subscribing. Otherwise — before the first sync, while reconnecting, or
for any key outside the mirrored prefixes — it asks the store, as without the mirror.
Entries expire locally with the TTL they have in the store, so memory stays bounded.

The store itself is an index that can come back empty (a Redis restart without
persistence, a flush). ``follow`` takes the service's answer to that: ``before_resync``
(called after subscribing, before the scan: it makes the index complete, rebuilding it from
the database if need be) and ``marker_key`` (the key a complete index holds). The mirror
never marks itself current from a scan that lacks the marker, and while current it checks
the store's marker every ``watch_seconds``: a flush sends no event, so a vanished marker
makes it resubscribe (and so rebuild) instead of serving on while the store stays empty.

With a ``Journal`` each announcement also gets an id (``<epoch>.<ms>-<n>``: the index
marker's value, wall-clock milliseconds, a per-instance counter and a random suffix) and is
kept in the store under the journal prefix for the journal TTL: the backlog the revocation
stream resumes from. Listeners (``add_listener``) see every event the subscription delivers
(this instance's own announcements come back through it too) and every loss of it.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import re
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Protocol

from auth_service.store.base import RateLimitResult, Store, StoreUnavailableError
from auth_service.store.following import follow_channel

log = logging.getLogger(__name__)

CHANNEL = "revocations"
_EVENT_ID = re.compile(r"[A-Za-z0-9_-]{1,64}\.[0-9]{1,15}-[0-9]{1,20}[0-9a-f]{4}")
"""What ``_next_id`` makes, and nothing else: an id goes into a Server-Sent Events frame, so
one from the channel that is not of this shape (a newline would end the frame and start
another) is dropped; the announcement is still applied, without an id."""
_RETRY_SECONDS = (0.2, 0.5, 1.0, 2.0)


@dataclass(frozen=True, slots=True)
class Journal:
    """Where announcements are kept for resuming streams, for how long, and which mirrored
    key names the index epoch that prefixes every id."""

    prefix: str
    ttl: timedelta
    epoch_key: str


@dataclass(frozen=True, slots=True)
class Announcement:
    key: str
    value: str | None
    ttl_ms: int
    id: str | None

    @classmethod
    def parse(cls, message: str) -> Announcement | None:
        try:
            event: dict[str, Any] = json.loads(message)
            key, value, ttl_ms, event_id = (
                event["k"],
                event.get("v"),
                event.get("ms", 0),
                event.get("id"),
            )
            if not isinstance(key, str):
                return None
            return cls(
                key,
                value if isinstance(value, str) else None,
                int(ttl_ms),
                event_id if isinstance(event_id, str) and _EVENT_ID.fullmatch(event_id) else None,
            )
        except (ValueError, KeyError, TypeError, AttributeError):
            return None

    def message(self) -> str:
        body: dict[str, Any] = {"k": self.key, "v": self.value, "ms": self.ttl_ms}
        if self.id is not None:
            body["id"] = self.id
        return json.dumps(body, separators=(",", ":"))


class MirrorListener(Protocol):
    def announced(self, announcement: Announcement) -> None:
        """An event the subscription delivered (already applied to the mirror)."""

    def lost(self) -> None:
        """The subscription ended: events may be missed until the mirror is current again."""


def event_time_ms(event_id: str) -> int | None:
    """The milliseconds of a journal id, or None if it is not one."""
    _epoch, dot, rest = event_id.partition(".")
    millis, dash, _n = rest.partition("-")
    return int(millis) if dot and dash and millis.isdigit() and len(millis) < 16 else None


def event_epoch(event_id: str) -> str:
    return event_id.partition(".")[0]


async def _completing(before_resync: Callable[[], Awaitable[None]]) -> None:
    try:
        await before_resync()
    except StoreUnavailableError:
        raise
    except Exception as exc:
        raise StoreUnavailableError(f"the revocation index is not complete: {exc}") from exc


class MirroredStore:
    def __init__(
        self,
        inner: Store,
        *,
        prefixes: Sequence[str],
        time_source: Callable[[], float] = time.monotonic,
        journal: Journal | None = None,
        outage_grace: float = 0.0,
    ) -> None:
        if not prefixes or not all(prefixes):
            raise ValueError("MirroredStore needs at least one non-empty key prefix to mirror")
        self.inner = inner
        self.prefixes = tuple(prefixes)
        self._now = time_source
        self._entries: dict[str, tuple[str, float]] = {}
        self._current = False
        self._outage_grace = outage_grace
        self._stale_since: float | None = None
        self.journal = journal
        self.resyncs = 0  # full reloads from the store (the metrics)
        self.last_lag_seconds = 0.0  # publish-to-apply delay of the last journaled event
        self._listeners: list[MirrorListener] = []
        self._sequence = itertools.count(1)
        self._suffix = secrets.token_hex(2)  # ids from two instances never collide

    def add_listener(self, listener: MirrorListener) -> None:
        self._listeners.append(listener)

    @property
    def epoch(self) -> str | None:
        """The index marker's value as this mirror holds it (None before the first sync)."""
        if self.journal is None:
            return None
        return self._lookup([self.journal.epoch_key])[0]

    def entries(self) -> list[tuple[str, str, float]]:
        """Every live mirrored entry: (key, value, expiry as epoch seconds)."""
        now, wall = self._now(), time.time()
        return [
            (key, value, wall + (expires - now))
            for key, (value, expires) in list(self._entries.items())
            if expires > now
        ]

    async def read_journal(self) -> list[tuple[int, Announcement]]:
        """Every announcement the journal holds, with its milliseconds, oldest first."""
        if self.journal is None:
            return []
        found: list[tuple[int, str, Announcement]] = []
        for _key, message, _ttl in await self.inner.scan(self.journal.prefix):
            announcement = Announcement.parse(message)
            millis = event_time_ms(announcement.id) if announcement and announcement.id else None
            if announcement is not None and millis is not None:
                found.append((millis, str(announcement.id), announcement))
        found.sort(key=lambda entry: (entry[0], entry[1]))
        return [(millis, announcement) for millis, _id, announcement in found]

    def is_mirrored(self, key: str) -> bool:
        return key.startswith(self.prefixes)

    @property
    def current(self) -> bool:
        return self._current

    def mark_stale(self) -> None:
        """Stop answering from memory (until the follower has resynchronised)."""
        self._current, self._stale_since = False, None

    # -- the mirror ---------------------------------------------------------------------
    def _apply(self, key: str, value: str | None, ttl_ms: int) -> None:
        if value is None or ttl_ms <= 0:
            self._entries.pop(key, None)
        else:
            self._entries[key] = (value, self._now() + ttl_ms / 1000)

    def _apply_message(self, message: str) -> None:
        announcement = Announcement.parse(message)
        if announcement is None or not self.is_mirrored(announcement.key):
            log.warning("ignoring a malformed revocation event")
            return
        self._apply(announcement.key, announcement.value, announcement.ttl_ms)
        published = event_time_ms(announcement.id) if announcement.id else None
        if published is not None:
            self.last_lag_seconds = max(0.0, time.time() - published / 1000)
        for listener in self._listeners:
            listener.announced(announcement)

    def _lookup(self, keys: Sequence[str]) -> list[str | None]:
        now = self._now()
        values: list[str | None] = []
        for key in keys:
            entry = self._entries.get(key)
            if entry is not None and entry[1] <= now:
                del self._entries[key]
                entry = None
            values.append(entry[0] if entry else None)
        return values

    async def _resync(self) -> None:
        self.resyncs += 1
        fresh: dict[str, tuple[str, float]] = {}
        now = self._now()
        for prefix in self.prefixes:
            for key, value, ttl in await self.inner.scan(prefix):
                fresh[key] = (value, now + ttl.total_seconds())
        self._entries = fresh

    async def follow(
        self,
        *,
        before_resync: Callable[[], Awaitable[None]] | None = None,
        marker_key: str | None = None,
        watch_seconds: float = 1.0,
    ) -> None:
        """Run until cancelled: subscribe, (make the index complete,) resync, apply events
        (and watch the marker); on any loss, start over. See the module docstring."""

        async def serve(messages: AsyncIterator[str], healthy: Callable[[], None]) -> None:
            if before_resync is not None:
                await _completing(before_resync)
            await self._resync()  # events published meanwhile wait in the subscription
            if marker_key is not None and marker_key not in self._entries:
                raise StoreUnavailableError("the store lost its index marker meanwhile")
            self._current, self._stale_since = True, None
            healthy()
            await self._serve(messages, marker_key, watch_seconds)

        await follow_channel(
            self.inner,
            CHANNEL,
            serve,
            name="the revocation mirror (reading the store directly meanwhile)",
            retry_seconds=_RETRY_SECONDS,
            after_loss=self._lost,
        )

    def _lost(self) -> None:
        self._stop_serving()
        for listener in self._listeners:
            listener.lost()

    async def _serve(
        self, messages: AsyncIterator[str], marker_key: str | None, watch_seconds: float
    ) -> None:
        """Apply events until the subscription ends or (if watched) the marker vanishes."""
        tasks = {asyncio.ensure_future(self._apply_all(messages))}
        if marker_key is not None:
            tasks.add(asyncio.ensure_future(self._watch(marker_key, watch_seconds)))
        try:
            done, _pending = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        for task in done:
            task.result()

    async def _apply_all(self, messages: AsyncIterator[str]) -> None:
        async for message in messages:
            self._apply_message(message)

    async def _watch(self, marker_key: str, every: float) -> None:
        """Run while the store holds ``marker_key``; raise once it does not."""
        while True:
            await asyncio.sleep(every)
            if (await self.inner.get_many([marker_key]))[0] is None:
                self._stop_serving()  # at once: the next read asks the store
                raise StoreUnavailableError("the store lost its revocation index (flushed?)")

    def _next_id(self) -> str:
        return f"{self.epoch or '0'}.{int(time.time() * 1000)}-{next(self._sequence)}{self._suffix}"

    async def _announce(
        self, key: str, value: str | None, ttl_ms: int, journaled: bool = True
    ) -> None:
        self._apply(key, value, ttl_ms)
        journal = self.journal
        journaled = journaled and journal is not None and key != journal.epoch_key
        announcement = Announcement(key, value, ttl_ms, self._next_id() if journaled else None)
        message = announcement.message()
        try:
            journal_failure: StoreUnavailableError | None = None
            if journal is not None and announcement.id is not None:
                try:
                    await self.inner.put(journal.prefix + announcement.id, message, journal.ttl)
                except StoreUnavailableError as exc:  # still tell the live followers
                    journal_failure = exc
            await self.inner.publish(CHANNEL, message)
            if journal_failure is not None:
                raise journal_failure
        except StoreUnavailableError:
            # Others may have missed it: they resync when their subscription comes back.
            self._stop_serving()
            raise

    # -- the Store protocol -----------------------------------------------------------------
    async def put(self, key: str, value: str, ttl: timedelta) -> None:
        await self.inner.put(key, value, ttl)
        if self.is_mirrored(key):
            await self._announce(key, value, max(1, int(ttl.total_seconds() * 1000)))

    async def put_if_absent(self, key: str, value: str, ttl: timedelta) -> bool:
        stored = await self.inner.put_if_absent(key, value, ttl)
        if stored and self.is_mirrored(key):
            # Only the index rebuild writes this way: it is announced (mirrors need it) but not
            # journaled, as the rebuild gives the index a new epoch, so followers resync anyway.
            await self._announce(key, value, max(1, int(ttl.total_seconds() * 1000)), False)
        return stored

    async def get_many(self, keys: Sequence[str]) -> list[str | None]:
        mirrored = all(self.is_mirrored(key) for key in keys)
        if self._current and mirrored:
            return self._lookup(keys)
        try:
            return await self.inner.get_many(keys)
        except StoreUnavailableError:
            if mirrored and self.in_outage_grace():
                return self._lookup(keys)
            raise

    def in_outage_grace(self) -> bool:
        """A read the store cannot answer is answered from memory if the mirror was current
        less than ``outage_grace`` s ago (every revocation is written to the store first, so
        an outage all instances share revokes nothing the mirror lacks; SECURITY.md)."""
        since = self._stale_since
        return since is not None and self._now() - since <= self._outage_grace

    def _stop_serving(self) -> None:
        if self._current:
            self._stale_since = self._now()
        self._current = False

    async def scan(self, prefix: str) -> list[tuple[str, str, timedelta]]:
        return await self.inner.scan(prefix)

    async def delete(self, key: str) -> bool:
        existed = await self.inner.delete(key)
        if self.is_mirrored(key):
            if existed:
                await self._announce(key, None, 0)
            else:  # nothing to tell the others; forget any stale local copy
                self._apply(key, None, 0)
        return existed

    async def hit(self, key: str, limit: int, window: timedelta) -> RateLimitResult:
        return await self.inner.hit(key, limit, window)

    async def reset_counter(self, key: str) -> None:
        await self.inner.reset_counter(key)

    async def acquire_lock(self, name: str, ttl: timedelta) -> str | None:
        return await self.inner.acquire_lock(name, ttl)

    async def release_lock(self, name: str, token: str) -> bool:
        return await self.inner.release_lock(name, token)

    async def extend_lock(self, name: str, token: str, ttl: timedelta) -> bool:
        return await self.inner.extend_lock(name, token, ttl)

    async def publish(self, channel: str, message: str) -> None:
        await self.inner.publish(channel, message)

    def subscribe(self, channel: str) -> AbstractAsyncContextManager[AsyncIterator[str]]:
        return self.inner.subscribe(channel)

    async def ping(self) -> None:
        await self.inner.ping()

    async def close(self) -> None:
        self._current, self._stale_since = False, None
        await self.inner.close()
