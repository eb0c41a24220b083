"""A circuit breaker: stop asking a service that keeps failing, and probe it once in a while.

Why: when the auth service is down, every caller would otherwise wait for its own connect
timeouts and retries, piling up work on both sides. After ``failures`` consecutive failures
the breaker *opens*: calls fail at once with ``CircuitOpenError``. After ``reset_seconds``
exactly one call (the *probe*) is let through; while it runs, everyone else still fails
fast. The probe's success closes the breaker; its failure reopens it for another cool-down.

It knows nothing of HTTP: the caller decides what a failure is (the remote clients count
transport errors and 5xx answers, never a 4xx) and reports it on the ``Permit``::

    with breaker.acquire() as permit:   # CircuitOpenError while open
        try:
            answer = call()
        except ServiceDown:
            permit.failure()
            raise
        permit.success()

A permit left without an outcome (cancelled, or an unexpected exception) changes nothing, but
frees the probe slot so that the next caller probes. Outcomes of calls that started before the
breaker last changed state are ignored (a slow success from before an outage does not close
it). Thread-safe; the lock is never held while the call runs, so it suits asyncio too.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from types import TracebackType
from typing import Literal

from auth_service_client.errors import CircuitOpenError

State = Literal["closed", "open", "half_open"]


class Permit:
    """Leave to make one call; report its outcome once with ``success()`` or ``failure()``."""

    __slots__ = ("_breaker", "_generation", "_settled", "probe")

    def __init__(self, breaker: CircuitBreaker, generation: int, probe: bool) -> None:
        self._breaker = breaker
        self._generation = generation
        self._settled = False
        self.probe = probe

    def success(self) -> None:
        """The service answered (a 4xx counts: it is up)."""
        if not self._settled:
            self._settled = True
            self._breaker._settle(self, ok=True)

    def failure(self) -> None:
        """The service could not be reached or failed (transport error, 5xx)."""
        if not self._settled:
            self._settled = True
            self._breaker._settle(self, ok=False)

    def __enter__(self) -> Permit:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if not self._settled:
            self._settled = True
            self._breaker._abandon(self)


class CircuitBreaker:
    """Closed → (``failures`` consecutive failures) → open → (``reset_seconds``) → one probe
    → closed on success, open again on failure."""

    def __init__(
        self,
        failures: int = 5,
        reset_seconds: float = 10.0,
        *,
        time_source: Callable[[], float] = time.monotonic,
    ) -> None:
        if failures < 1:
            raise ValueError("failures must be at least 1")
        if reset_seconds <= 0:
            raise ValueError("reset_seconds must be positive")
        self.failures = failures
        self.reset_seconds = reset_seconds
        self._now = time_source
        self._lock = threading.Lock()
        self._state: State = "closed"
        self._consecutive = 0
        self._opened_at = 0.0
        self._probing = False
        self._generation = 0  # bumped on every state change: stale permits are ignored

    @property
    def state(self) -> State:
        """``closed``, ``open`` or ``half_open`` (cool-down over: the next call probes, or a
        probe is running)."""
        with self._lock:
            if self._state == "open" and self._now() - self._opened_at >= self.reset_seconds:
                return "half_open"
            return self._state

    def acquire(self) -> Permit:
        """A permit to call the service, or ``CircuitOpenError`` at once while open (and while
        another caller's half-open probe is running)."""
        with self._lock:
            if self._state == "closed":
                return Permit(self, self._generation, probe=False)
            if self._state == "open":
                remaining = self.reset_seconds - (self._now() - self._opened_at)
                if remaining > 0:
                    raise CircuitOpenError(
                        f"the service failed {self.failures} times in a row; "
                        f"next probe in {remaining:.1f} s"
                    )
                self._move("half_open")
            if self._probing:
                raise CircuitOpenError("the service is being probed; try again shortly")
            self._probing = True
            return Permit(self, self._generation, probe=True)

    def _move(self, state: State) -> None:
        self._state = state
        self._generation += 1
        self._probing = False
        self._consecutive = 0
        if state == "open":
            self._opened_at = self._now()

    def _settle(self, permit: Permit, *, ok: bool) -> None:
        with self._lock:
            if permit._generation != self._generation:
                return
            if self._state == "half_open":
                self._move("closed" if ok else "open")
            elif ok:
                self._consecutive = 0
            else:
                self._consecutive += 1
                if self._consecutive >= self.failures:
                    self._move("open")

    def _abandon(self, permit: Permit) -> None:
        with self._lock:
            if permit.probe and permit._generation == self._generation:
                self._probing = False  # the next caller probes instead
