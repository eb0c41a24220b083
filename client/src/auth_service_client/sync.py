"""``SyncAuthClient``: ``AuthClient``'s twin for synchronous code (WSGI apps, scripts, workers).

Same methods, same semantics (retries, circuit breaker, caches: ``RequestCore`` in
remote_core.py holds them all); this module adds blocking I/O over one pooled
``httpx.Client``. It is thread-safe: share one per process. ``validate_many`` sends its
chunks of 100 from a few threads at once; ``client_credentials_token`` is single-flight
under a ``threading.Lock`` (concurrent threads wait for the one request).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from types import TracebackType
from typing import Any

import httpx

from auth_service_client.breaker import CircuitBreaker
from auth_service_client.errors import AuthServiceError
from auth_service_client.remote_core import Attempts, Call, RequestCore
from auth_service_client.types import Verdict


class _Flight:
    """One token request that other threads wait for."""

    __slots__ = ("done", "error", "token")

    def __init__(self) -> None:
        self.done = threading.Event()
        self.token: str | None = None
        self.error: BaseException | None = None


class SyncAuthClient:
    """Validate tokens and get service tokens from the auth service (blocking).

    Use as ``with SyncAuthClient(url, id, secret) as auth: auth.validate(t)``, or call
    ``close()``. The arguments are ``AuthClient``'s; ``batch_threads`` bounds the threads of
    one ``validate_many``.
    """

    def __init__(
        self,
        base_url: str,
        client_id: str,
        client_secret: str,
        *,
        timeout: float | httpx.Timeout = 5.0,
        retries: int = 2,
        backoff: float = 0.1,
        breaker_failures: int = 5,
        breaker_reset_seconds: float = 10.0,
        cache_seconds: float = 0.0,
        cache_max_entries: int = 10_000,
        batch_threads: int = 8,
        transport: httpx.BaseTransport | None = None,
        time_source: Callable[[], float] = time.monotonic,
        wall_time: Callable[[], float] = time.time,
    ) -> None:
        if batch_threads < 1:
            raise ValueError("batch_threads must be at least 1")
        self._core = RequestCore(
            base_url,
            client_id,
            client_secret,
            timeout=timeout,
            retries=retries,
            backoff=backoff,
            breaker_failures=breaker_failures,
            breaker_reset_seconds=breaker_reset_seconds,
            cache_seconds=cache_seconds,
            cache_max_entries=cache_max_entries,
            time_source=time_source,
            wall_time=wall_time,
        )
        self._http = httpx.Client(transport=transport, **self._core.http_options)
        self._batch_threads = batch_threads
        self._token_lock = threading.Lock()
        self._flights: dict[str, _Flight] = {}

    @property
    def breaker(self) -> CircuitBreaker:
        return self._core.breaker

    def __enter__(self) -> SyncAuthClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def validate(self, token: str) -> Verdict:
        """The service's verdict on one access token; see ``AuthClient.validate``."""
        known = self._core.local_verdict(token)
        if known is not None:
            return known
        verdict = Verdict.from_json(self._send(RequestCore.validate_call(token)))
        self._core.remember(token, verdict)
        return verdict

    def validate_many(self, tokens: Sequence[str]) -> list[Verdict]:
        """Verdicts in the order given; chunks of 100 sent from up to ``batch_threads``
        threads at once (the first failure is raised; chunks not yet sent are dropped)."""
        known, chunks = self._core.plan(tokens)
        if len(chunks) <= 1:
            asked = [self._batch(chunk) for chunk in chunks]
        else:
            threads = min(len(chunks), self._batch_threads)
            with ThreadPoolExecutor(threads, thread_name_prefix="auth-batch") as pool:
                asked = list(pool.map(self._batch, chunks))
        return self._core.merge(tokens, known, asked)

    def introspect(self, token: str) -> dict[str, Any]:
        """RFC 7662: ``{active: true, sub, exp, ...}`` or ``{active: false}``."""
        return self._send(RequestCore.introspect_call(token))

    def client_credentials_token(self, scope: str | None = None) -> str:
        """A service token for this client; see ``AuthClient.client_credentials_token``."""
        cached = self._core.cached_token(scope)
        if cached is not None:
            return cached
        key = scope or ""
        with self._token_lock:
            cached = self._core.cached_token(scope)
            if cached is not None:
                return cached
            flight = self._flights.get(key)
            leading = flight is None
            if flight is None:
                flight = self._flights[key] = _Flight()
        if not leading:
            flight.done.wait()
            if flight.error is not None:
                raise flight.error
            assert flight.token is not None
            return flight.token
        try:
            body = self._send(RequestCore.token_call(scope))
            flight.token = self._core.remember_token(scope, body)
            return flight.token
        except BaseException as error:
            flight.error = error  # shared with the waiters, not remembered after
            raise
        finally:
            with self._token_lock:
                del self._flights[key]
            flight.done.set()

    def _batch(self, chunk: list[str]) -> list[Verdict]:
        return RequestCore.verdicts(self._send(RequestCore.batch_call(chunk)), len(chunk))

    def _send(self, call: Call) -> dict[str, Any]:
        """One call through the breaker, with the core's retry policy."""
        with self._core.breaker.acquire() as permit:
            attempts = Attempts(self._core, permit)
            while True:
                try:
                    response = self._http.post(call.path, json=call.json, data=call.form)
                    body = RequestCore.parse(response)
                except (httpx.TransportError, AuthServiceError) as error:
                    time.sleep(attempts.delay_after(error))
                else:
                    permit.success()
                    return body
