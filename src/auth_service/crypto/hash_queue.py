"""Admission to the argon2 pools: two lanes, each with one running hash per core and a
bounded queue; a full queue refuses at once.

Why: argon2 costs tens of milliseconds of CPU, so a flood of logins (made-up emails from many
addresses: no per-IP limit stops it) would otherwise queue work without end, and every login,
client authentication and registration behind it would wait for the whole queue. Here:

- the *normal* lane (strangers: unknown emails, new devices, registrations) runs at most one
  hash per core and lets ``limit`` more wait; beyond that ``ServerBusyError`` (503
  ``server_busy`` with ``Retry-After``) at once;
- the *urgent* lane (a service client that exists, an account logging in from an address it
  logged in from before) has slots and a queue of its own, so it never waits behind the
  normal lane's work, and its threads run at normal priority while the normal lane's run
  niced (``crypto/passwords.py``): a flood of strangers can neither starve it nor fill its
  queue. One client cannot fill it either: a login's urgency is capped per IP group
  (``services/login.py``), a client id's by its failure limits (``services/clients.py``).

Event-loop only (no thread locks): admission is decided on the loop; the pools run the hash.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque

from auth_service.errors import ServerBusyError


class _Lane:
    def __init__(self, slots: int, limit: int) -> None:
        self.free = slots
        self.limit = limit
        self.waiters: deque[asyncio.Future[None]] = deque()

    @property
    def full(self) -> bool:
        return self.free <= 0 and len(self.waiters) >= self.limit

    async def acquire(self) -> None:
        if self.free > 0 and not self.waiters:
            self.free -= 1
            return
        if len(self.waiters) >= self.limit:
            raise ServerBusyError()
        ticket: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.waiters.append(ticket)
        try:
            await ticket
        except asyncio.CancelledError:
            if ticket.done() and not ticket.cancelled():
                self.release()  # the slot was handed over just as the waiter went away
            else:
                with contextlib.suppress(ValueError):  # release() may have dropped it already
                    self.waiters.remove(ticket)
            raise

    def release(self) -> None:
        while self.waiters:
            ticket = self.waiters.popleft()
            if not ticket.done():
                ticket.set_result(None)
                return
        self.free += 1


class HashQueue:
    def __init__(self, *, slots: int, limit: int) -> None:
        self._lanes = {True: _Lane(slots, limit), False: _Lane(slots, limit)}

    @property
    def waiting(self) -> int:
        return sum(len(lane.waiters) for lane in self._lanes.values())

    def depths(self) -> dict[str, int]:
        """Hashes waiting per lane (the metrics' gauge)."""
        return {
            "urgent": len(self._lanes[True].waiters),
            "normal": len(self._lanes[False].waiters),
        }

    def full(self, *, urgent: bool) -> bool:
        """Whether work of this lane would be refused right now (for shedding a request
        before it does any other work)."""
        return self._lanes[urgent].full

    async def acquire(self, *, urgent: bool) -> None:
        """Take a slot of the lane, waiting in its queue; ``ServerBusyError`` if that queue
        already holds ``limit`` waiters. Pair with ``release`` of the same lane."""
        await self._lanes[urgent].acquire()

    def release(self, *, urgent: bool) -> None:
        """Hand the slot to the lane's next waiter, or free it."""
        self._lanes[urgent].release()


__all__ = ["HashQueue"]
