"""``AuthClient``: ask the auth service (``/validate``, ``/validate/batch``, ``/oauth/token``,
``/oauth/introspect``) over one pooled ``httpx.AsyncClient``.

The requests, answers, retry policy, circuit breaker and caches are ``RequestCore``'s
(remote_core.py, shared with ``SyncAuthClient``; its docstring has the failure and cache
semantics); this module adds the async I/O.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from functools import partial
from types import TracebackType
from typing import Any

import httpx

from auth_service_client.breaker import CircuitBreaker
from auth_service_client.errors import AuthServiceError
from auth_service_client.remote_core import Attempts, Call, RequestCore
from auth_service_client.types import Verdict


class AuthClient:
    """Validate tokens and get service tokens from the auth service (async).

    Use as ``async with AuthClient(url, id, secret) as auth: await auth.validate(t)``, or
    call ``aclose()``. ``transport`` is for tests (``httpx.MockTransport``); ``time_source``
    (monotonic) and ``wall_time`` (epoch seconds, compared with ``exp``) let tests move time.
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
        transport: httpx.AsyncBaseTransport | None = None,
        time_source: Callable[[], float] = time.monotonic,
        wall_time: Callable[[], float] = time.time,
    ) -> None:
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
        self._http = httpx.AsyncClient(transport=transport, **self._core.http_options)
        self._flights: dict[str, asyncio.Task[str]] = {}

    @property
    def breaker(self) -> CircuitBreaker:
        return self._core.breaker

    async def __aenter__(self) -> AuthClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        for flight in self._flights.values():
            flight.cancel()
        await self._http.aclose()

    async def validate(self, token: str) -> Verdict:
        """The service's verdict on one access token (``valid: false`` is a Verdict, never an
        exception); ``ServiceUnavailableError``/``CircuitOpenError`` when none could be had."""
        known = self._core.local_verdict(token)
        if known is not None:
            return known
        verdict = Verdict.from_json(await self._send(RequestCore.validate_call(token)))
        self._core.remember(token, verdict)
        return verdict

    async def validate_many(self, tokens: Sequence[str]) -> list[Verdict]:
        """Verdicts in the order given; chunks of 100 sent concurrently (the first failure
        cancels the others and is raised)."""
        known, chunks = self._core.plan(tokens)
        if not chunks:
            return [verdict for verdict in known if verdict is not None]
        try:
            async with asyncio.TaskGroup() as group:
                tasks = [group.create_task(self._batch(chunk)) for chunk in chunks]
        except BaseExceptionGroup as failed:
            raise failed.exceptions[0] from None
        return self._core.merge(tokens, known, [task.result() for task in tasks])

    async def introspect(self, token: str) -> dict[str, Any]:
        """RFC 7662: ``{active: true, sub, exp, ...}`` or ``{active: false}``."""
        return await self._send(RequestCore.introspect_call(token))

    async def client_credentials_token(self, scope: str | None = None) -> str:
        """A service token for this client (cached per scope until shortly before it
        expires; concurrent callers share one request; a failure is not remembered)."""
        cached = self._core.cached_token(scope)
        if cached is not None:
            return cached
        key = scope or ""
        flight = self._flights.get(key)
        if flight is None:
            flight = asyncio.get_running_loop().create_task(self._fetch_token(scope))
            self._flights[key] = flight
            flight.add_done_callback(partial(self._landed, key))
        return await asyncio.shield(flight)  # a cancelled caller does not cancel the others

    async def _fetch_token(self, scope: str | None) -> str:
        body = await self._send(RequestCore.token_call(scope))
        return self._core.remember_token(scope, body)

    def _landed(self, key: str, flight: asyncio.Task[str]) -> None:
        if self._flights.get(key) is flight:
            del self._flights[key]
        if not flight.cancelled():
            flight.exception()  # retrieved: no "exception was never retrieved" if none waits

    async def _batch(self, chunk: list[str]) -> list[Verdict]:
        return RequestCore.verdicts(await self._send(RequestCore.batch_call(chunk)), len(chunk))

    async def _send(self, call: Call) -> dict[str, Any]:
        """One call through the breaker, with the core's retry policy."""
        with self._core.breaker.acquire() as permit:
            attempts = Attempts(self._core, permit)
            while True:
                try:
                    response = await self._http.post(call.path, json=call.json, data=call.form)
                    body = RequestCore.parse(response)
                except (httpx.TransportError, AuthServiceError) as error:
                    await asyncio.sleep(attempts.delay_after(error))
                else:
                    permit.success()
                    return body
