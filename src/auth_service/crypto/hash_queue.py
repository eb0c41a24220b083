"""Admission to the argon2 pool: at most one hash per core runs, the rest wait in two bounded
queues, and urgent work is served first.

Why: argon2 costs tens of milliseconds of CPU, so a flood of logins (made-up emails from many
addresses: no per-IP limit stops it) would otherwise queue work without end in the thread
pool, and every login, client authentication and registration behind it would wait for the
whole queue. Here a full queue refuses at once (``ServerBusyError``, 503 ``server_busy`` with
``Retry-After``), and urgent work — a service client that exists, an account logging in from
an address it logged in from before — has a queue of its own that is served first, so a flood
of strangers can neither starve it nor fill its queue. (One client cannot fill it either: a
login's urgency is capped per IP group, ``services/login.py``; a client id's by its failure
limits, ``services/clients.py``.)

Event-loop only (no thread locks): the admission is decided on the loop; the pool runs the hash.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque

from auth_service.errors import ServerBusyError


class HashQueue:
    def __init__(self, *, slots: int, limit: int) -> None:
        self._free = slots
        self._limit = limit
        self._urgent: deque[asyncio.Future[None]] = deque()
        self._normal: deque[asyncio.Future[None]] = deque()

    @property
    def waiting(self) -> int:
        return len(self._urgent) + len(self._normal)

    async def acquire(self, *, urgent: bool) -> None:
        """Take a slot, waiting in the urgent or the normal queue; ``ServerBusyError`` if that
        queue already holds ``limit`` waiters. Pair with ``release``."""
        if self._free > 0 and not self.waiting:
            self._free -= 1
            return
        queue = self._urgent if urgent else self._normal
        if len(queue) >= self._limit:
            raise ServerBusyError()
        ticket: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        queue.append(ticket)
        try:
            await ticket
        except asyncio.CancelledError:
            if ticket.done() and not ticket.cancelled():
                self.release()  # the slot was handed over just as the waiter went away
            else:
                with contextlib.suppress(ValueError):  # release() may have dropped it already
                    queue.remove(ticket)
            raise

    def release(self) -> None:
        """Hand the slot to the next waiter (urgent first), or free it."""
        for queue in (self._urgent, self._normal):
            while queue:
                ticket = queue.popleft()
                if not ticket.done():
                    ticket.set_result(None)
                    return
        self._free += 1


__all__ = ["HashQueue"]
