"""The request core of ``AuthClient`` (remote.py) and ``SyncAuthClient`` (sync.py).

``RequestCore`` is everything the two clients share: the settings, the requests, the parsing
of answers into results or errors, the retry policy, the circuit breaker and the caches. The
two clients only add the I/O (send, sleep, concurrency).

Failure semantics (both clients):
- ``httpx.TransportError`` (connect error, timeout...) is retried ``retries`` times with
  exponential back-off (``backoff * 2**n``, equal jitter, at most 2 s a wait), then raises
  ``ServiceUnavailableError``.
- A 5xx raises ``ServiceUnavailableError`` at once, except a 503 with ``Retry-After`` of at
  most ``MAX_RETRY_AFTER_SECONDS``: the service's "busy, try again in 1 s" (its hashing
  queue is full); that one is retried once after the delay it names (not with
  ``retries=0``).
- A 4xx is never retried: 401 ``invalid_client`` raises ``InvalidClientError``, any other
  ``RequestRejectedError`` with the contract's ``error`` code (``http_<status>`` when the
  body has none).
- The breaker counts each call's final outcome: a transport error or 5xx is a failure, any
  answer below 500 a success (the service is up). While open, calls raise
  ``CircuitOpenError`` without touching the network.

The positive cache (``cache_seconds > 0``, off by default) keeps valid verdicts for
``min(cache_seconds, exp - now)``: a cache of N seconds means a revocation (logout, disabled
user, revoked key) can take N seconds to be seen by this client. That is why it is off by
default and bounded by ``MAX_CACHE_SECONDS`` (5 s; more raises ``ValueError``). It holds at
most ``cache_max_entries`` tokens (least recently used evicted). Invalid verdicts are never
cached. Cached verdicts are shared: do not mutate their claims.
"""

from __future__ import annotations

import contextlib
import random
import threading
from base64 import b64encode
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import quote_plus

import httpx

from auth_service_client.breaker import CircuitBreaker, Permit
from auth_service_client.errors import (
    InvalidClientError,
    RequestRejectedError,
    ServiceUnavailableError,
)
from auth_service_client.types import Verdict

MAX_CACHE_SECONDS: Final = 5.0
MAX_RETRY_AFTER_SECONDS: Final = 2.0
BATCH_SIZE: Final = 100  # /validate/batch takes 1 to 100 tokens
MAX_TOKEN_CHARS: Final = 16_384  # the service refuses longer ones (422): they cannot be valid
_MAX_BACKOFF: Final = 2.0
_TOO_LONG: Final = Verdict(False, None, "malformed")


def basic_authorization(client_id: str, client_secret: str) -> str:
    """RFC 6749 §2.3.1: each part form-urlencoded, then ``id:secret`` in base64."""
    pair = f"{quote_plus(client_id)}:{quote_plus(client_secret)}"
    return "Basic " + b64encode(pair.encode()).decode("ascii")


@dataclass(frozen=True, slots=True)
class Call:
    """One POST to the service: a JSON body or a form."""

    path: str
    json: Any = None
    form: Mapping[str, str] | None = None


class ServerError(ServiceUnavailableError):
    """A 5xx answer; ``retry_after`` in seconds when the service named one."""

    def __init__(self, status: int, code: str, retry_after: float | None) -> None:
        super().__init__(f"{status} {code}")
        self.status = status
        self.code = code
        self.retry_after = retry_after

    @property
    def busy(self) -> float | None:
        """The seconds a 503 with ``Retry-After`` asks to wait, else None."""
        return self.retry_after if self.status == 503 else None


class VerdictCache:
    """Valid verdicts by token, each until ``min(seconds, exp - now)``; LRU-bounded.

    Deadlines are on ``time_source`` (monotonic); ``wall_time`` only reads ``exp``. The hit
    path is a dict lookup and one clock read."""

    def __init__(
        self,
        seconds: float,
        max_entries: int,
        time_source: Callable[[], float],
        wall_time: Callable[[], float],
    ) -> None:
        if max_entries < 1:
            raise ValueError("cache_max_entries must be at least 1")
        self.seconds = seconds
        self.max_entries = max_entries
        self._now = time_source
        self._wall = wall_time
        self._entries: OrderedDict[str, tuple[Verdict, float]] = OrderedDict()
        self._lock = threading.Lock()  # SyncAuthClient's threads share it

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, token: str) -> Verdict | None:
        with self._lock:
            entry = self._entries.get(token)
            if entry is None:
                return None
            if entry[1] <= self._now():
                del self._entries[token]
                return None
            self._entries.move_to_end(token)
            return entry[0]

    def put(self, token: str, verdict: Verdict) -> None:
        exp = verdict.claims.get("exp") if verdict.valid and verdict.claims else None
        if not isinstance(exp, int | float) or isinstance(exp, bool):
            return  # invalid, or no exp to bound it by: never cached
        life = min(self.seconds, exp - self._wall())
        if life <= 0:
            return
        with self._lock:
            self._entries[token] = (verdict, self._now() + life)
            self._entries.move_to_end(token)
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)


class Attempts:
    """The retry policy for one call. ``delay_after(error)`` is the wait before the next
    attempt, or raises the call's final error (and reports the outcome to the breaker)."""

    __slots__ = ("_busy_retried", "_core", "_permit", "_transport_tries")

    def __init__(self, core: RequestCore, permit: Permit) -> None:
        self._core = core
        self._permit = permit
        self._transport_tries = 0
        self._busy_retried = False

    def delay_after(self, error: Exception) -> float:
        core = self._core
        if isinstance(error, httpx.TransportError):
            if self._transport_tries < core.retries:
                self._transport_tries += 1
                return core.backoff_delay(self._transport_tries - 1)
            self._permit.failure()
            tries = self._transport_tries + 1
            raise ServiceUnavailableError(
                f"{type(error).__name__} after {tries} attempt(s): {error}"
            ) from error
        wait = error.busy if isinstance(error, ServerError) else None
        if wait is not None and core.retries > 0 and not self._busy_retried:
            self._busy_retried = True
            return wait
        if isinstance(error, RequestRejectedError):
            self._permit.success()  # it answered: the service is up
        elif isinstance(error, ServiceUnavailableError):
            self._permit.failure()
        raise error


class RequestCore:
    """Settings, requests, answers and policies shared by ``AuthClient`` and
    ``SyncAuthClient``; no I/O here."""

    def __init__(
        self,
        base_url: str,
        client_id: str,
        client_secret: str,
        *,
        timeout: float | httpx.Timeout,
        retries: int,
        backoff: float,
        breaker_failures: int,
        breaker_reset_seconds: float,
        cache_seconds: float,
        cache_max_entries: int,
        time_source: Callable[[], float],
        wall_time: Callable[[], float],
    ) -> None:
        if retries < 0 or backoff < 0:
            raise ValueError("retries and backoff must not be negative")
        if not 0 <= cache_seconds <= MAX_CACHE_SECONDS:
            raise ValueError(
                f"cache_seconds must be 0 (off) to {MAX_CACHE_SECONDS}: a cache of N seconds "
                "lets a revoked token pass for N seconds"
            )
        self.retries = retries
        self.backoff = backoff
        self.http_options: dict[str, Any] = {
            "base_url": base_url.rstrip("/"),
            "headers": {
                "Authorization": basic_authorization(client_id, client_secret),
                "Accept": "application/json",
                "User-Agent": "auth-service-client/0.1",
            },
            "timeout": timeout if isinstance(timeout, httpx.Timeout) else httpx.Timeout(timeout),
            "follow_redirects": False,
        }
        self.breaker = CircuitBreaker(
            breaker_failures, breaker_reset_seconds, time_source=time_source
        )
        self.cache = (
            VerdictCache(cache_seconds, cache_max_entries, time_source, wall_time)
            if cache_seconds > 0
            else None
        )
        self._now = time_source
        self._tokens: dict[str, tuple[str, float]] = {}

    # -- requests ---------------------------------------------------------------------------
    @staticmethod
    def validate_call(token: str) -> Call:
        return Call("/validate", json={"token": token})

    @staticmethod
    def batch_call(tokens: Sequence[str]) -> Call:
        return Call("/validate/batch", json={"tokens": list(tokens)})

    @staticmethod
    def introspect_call(token: str) -> Call:
        return Call("/oauth/introspect", form={"token": token})

    @staticmethod
    def token_call(scope: str | None) -> Call:
        form = {"grant_type": "client_credentials"}
        if scope:
            form["scope"] = scope
        return Call("/oauth/token", form=form)

    def backoff_delay(self, retry: int) -> float:
        """Before retry ``retry`` (0-based): ``backoff * 2**retry`` capped, half of it random
        (equal jitter: clients that failed together do not all come back together)."""
        ceiling = min(self.backoff * 2.0**retry, _MAX_BACKOFF)
        return ceiling / 2 + random.random() * ceiling / 2  # noqa: S311 (not a secret)

    # -- answers ----------------------------------------------------------------------------
    @staticmethod
    def parse(response: httpx.Response) -> dict[str, Any]:
        """The JSON object of a 2xx; raises ``ServerError``, ``InvalidClientError`` or
        ``RequestRejectedError`` for the others."""
        status = response.status_code
        body: Any = None
        with contextlib.suppress(ValueError):
            body = response.json()
        if 200 <= status < 300:
            if isinstance(body, dict):
                return body
            raise ServiceUnavailableError(f"{status} with a body that is not a JSON object")
        fields = body if isinstance(body, dict) else {}
        code = fields.get("error")
        code = code if isinstance(code, str) and code else f"http_{status}"
        if status >= 500:
            raise ServerError(status, code, _retry_after(response))
        message = fields.get("error_description")
        message = message if isinstance(message, str) else ""
        if status == 401 and code == "invalid_client":
            raise InvalidClientError(status, code, message)
        raise RequestRejectedError(status, code, message)

    @staticmethod
    def verdicts(body: Mapping[str, Any], count: int) -> list[Verdict]:
        results = body.get("results")
        if not isinstance(results, list) or len(results) != count:
            raise ServiceUnavailableError("/validate/batch answered a wrong number of results")
        return [Verdict.from_json(r if isinstance(r, Mapping) else {}) for r in results]

    # -- validate_many: the cache, the size limit and chunks ---------------------------------
    def local_verdict(self, token: str) -> Verdict | None:
        """A verdict without asking: a cache hit, or ``malformed`` for an overlong token."""
        if len(token) > MAX_TOKEN_CHARS:
            return _TOO_LONG
        return self.cache.get(token) if self.cache is not None else None

    def plan(self, tokens: Sequence[str]) -> tuple[list[Verdict | None], list[list[str]]]:
        """The verdicts known locally (None where the service must be asked) and the chunks
        of at most ``BATCH_SIZE`` tokens to ask for, in order."""
        known = [self.local_verdict(token) for token in tokens]
        missing = [t for t, verdict in zip(tokens, known, strict=True) if verdict is None]
        return known, [missing[i : i + BATCH_SIZE] for i in range(0, len(missing), BATCH_SIZE)]

    def merge(
        self, tokens: Sequence[str], known: list[Verdict | None], asked: list[list[Verdict]]
    ) -> list[Verdict]:
        answers = iter([verdict for chunk in asked for verdict in chunk])
        merged: list[Verdict] = []
        for token, verdict in zip(tokens, known, strict=True):
            if verdict is None:
                verdict = next(answers)
                self.remember(token, verdict)
            merged.append(verdict)
        return merged

    def remember(self, token: str, verdict: Verdict) -> None:
        if self.cache is not None:
            self.cache.put(token, verdict)

    # -- client-credentials tokens ------------------------------------------------------------
    def cached_token(self, scope: str | None) -> str | None:
        entry = self._tokens.get(scope or "")
        return entry[0] if entry is not None and entry[1] > self._now() else None

    def remember_token(self, scope: str | None, body: Mapping[str, Any]) -> str:
        """Keep the token until ``expires_in`` minus 10% (at most 30 s) of it."""
        token, expires_in = body.get("access_token"), body.get("expires_in")
        if not isinstance(expires_in, int | float) or isinstance(expires_in, bool):
            expires_in = None
        if not (isinstance(token, str) and token and expires_in is not None):
            raise ServiceUnavailableError("/oauth/token answered without a token or expires_in")
        lifetime = float(expires_in)
        self._tokens[scope or ""] = (token, self._now() + lifetime - min(lifetime / 10, 30.0))
        return token


def _retry_after(response: httpx.Response) -> float | None:
    """``Retry-After`` in delta-seconds, when at most ``MAX_RETRY_AFTER_SECONDS``."""
    value = response.headers.get("retry-after", "")
    if not value.isdigit() or float(value) > MAX_RETRY_AFTER_SECONDS:
        return None
    return float(value)
