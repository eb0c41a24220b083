"""The service's JWKS, fetched and cached the way the contract publishes it.

- Held for the response's ``Cache-Control: max-age`` (``no-store``/``no-cache``: 0; absent:
  ``default_max_age``); a lapsed copy is revalidated with ``If-None-Match`` (a ``304``
  keeps the keys and renews the lifetime).
- A kid the cache lacks triggers at most one refetch per ``refetch_interval`` (5 s),
  single-flight: concurrent misses share one request, a flood of random kids costs one
  request per interval. The service publishes its ``next`` key ahead of use, so a verifier
  that honours max-age never meets a fresh kid in normal operation.
- A failed fetch keeps the keys held (they are retried after ``refetch_interval``); with no
  keys at all it raises ``ServiceUnavailableError``.
- A lapsed copy is used for at most ``max_stale`` seconds (default 300) past its max-age while
  refetches fail (still one per ``refetch_interval``). Past that, ``get`` raises
  ``ServiceUnavailableError`` (fail closed: ``LocalVerifier.verify`` raises it too) until a
  refetch succeeds; an outage of the JWKS never keeps an old key in use indefinitely.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
from collections.abc import Callable, Mapping
from typing import Any

import httpx
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicKey
from jwt.algorithms import RSAAlgorithm

from auth_service_client.errors import ServiceUnavailableError

log = logging.getLogger(__name__)

JWKS_PATH = "/.well-known/jwks.json"
_MAX_AGE = re.compile(r"(?:^|[,\s])max-age\s*=\s*\"?(\d+)\"?", re.IGNORECASE)
_MAX_AGE_CAP = 86_400.0


def max_age(cache_control: str | None, default: float) -> float:
    """Seconds a response may be reused per its ``Cache-Control`` (RFC 9111 §5.2.2)."""
    if cache_control is None:
        return default
    lowered = cache_control.lower()
    if "no-store" in lowered or "no-cache" in lowered:
        return 0.0
    found = _MAX_AGE.search(cache_control)
    return min(float(found.group(1)), _MAX_AGE_CAP) if found else default


def parse_keys(document: object) -> dict[str, RSAPublicKey]:
    """The RS256 signing keys of a JWKS document, by kid; other entries are skipped."""
    if not isinstance(document, Mapping) or not isinstance(document.get("keys"), list):
        raise ValueError("not a JWK set")
    keys: dict[str, RSAPublicKey] = {}
    for jwk in document["keys"]:
        if not _is_rs256_signing_key(jwk):
            continue
        try:
            key = RSAAlgorithm.from_jwk(dict(jwk))
        except (ValueError, TypeError, KeyError) as exc:
            log.warning("JWKS key %r skipped: %s", jwk.get("kid"), exc)
            continue
        if isinstance(key, RSAPublicKey):
            keys[jwk["kid"]] = key
    return keys


def _is_rs256_signing_key(jwk: Any) -> bool:
    return (
        isinstance(jwk, Mapping)
        and jwk.get("kty") == "RSA"
        and isinstance(jwk.get("kid"), str)
        and jwk.get("use", "sig") == "sig"
        and jwk.get("alg", "RS256") == "RS256"
        and "d" not in jwk  # never take a private key from a published set
    )


class JwksCache:
    """The key set of one issuer. ``await get(kid)`` answers the key or None (not
    published, after at most one rate-limited refetch)."""

    def __init__(
        self,
        http: httpx.AsyncClient,
        url: str,
        *,
        refetch_interval: float = 5.0,
        default_max_age: float = 60.0,
        max_stale: float = 300.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._http = http
        self._url = url
        self._refetch_interval = refetch_interval
        self._default_max_age = default_max_age
        self._max_stale = max_stale
        self._clock = clock
        self._keys: dict[str, RSAPublicKey] = {}
        self._etag: str | None = None
        self._fresh_until = float("-inf")
        self._last_attempt = float("-inf")
        self._retry_after = float("-inf")  # after a failed fetch, no lapse refetch before
        self._loaded = False
        self._inflight: asyncio.Task[None] | None = None
        self._deferred: asyncio.Task[None] | None = None
        self.fetches = 0  # requests sent (tests and metrics)

    @property
    def kids(self) -> frozenset[str]:
        return frozenset(self._keys)

    def peek(self, kid: str) -> RSAPublicKey | None:
        """The key if the held set is fresh and has it (no I/O), else None."""
        if self._clock() < self._fresh_until:
            return self._keys.get(kid)
        return None

    async def get(self, kid: str) -> RSAPublicKey | None:
        """The key named ``kid``, refreshing a lapsed set first; a kid the set lacks costs
        at most one refetch per ``refetch_interval``."""
        now = self._clock()
        if now >= self._fresh_until and now >= self._retry_after:
            await self._fetch_once()
        key = self._keys.get(kid)
        if key is None and (
            self._inflight is not None
            or self._clock() - self._last_attempt >= self._refetch_interval
        ):
            await self._fetch_once()  # joins a fetch in flight rather than starting one
            key = self._keys.get(kid)
        if key is None and not self._loaded:
            raise ServiceUnavailableError("the JWKS could not be fetched")
        if self._clock() >= self._fresh_until + self._max_stale:
            raise ServiceUnavailableError("the JWKS copy lapsed and could not be refetched")
        return key

    async def refresh(self, *, min_interval: float = 1.0) -> None:
        """Refetch now (key events), or once ``min_interval`` after the last attempt if that
        was sooner: at most one a second, and the last change is never missed."""
        wait = self._last_attempt + min_interval - self._clock()
        if wait <= 0:
            await self._fetch_once()
        elif self._deferred is None or self._deferred.done():
            self._deferred = asyncio.create_task(self._fetch_later(wait))

    async def _fetch_later(self, delay: float) -> None:
        await asyncio.sleep(delay)
        await self._fetch_once()

    async def aclose(self) -> None:
        """Cancel a deferred refetch."""
        if self._deferred is not None:
            self._deferred.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._deferred

    async def _fetch_once(self) -> None:
        """One request, shared by every concurrent caller."""
        if self._inflight is None:
            self._last_attempt = self._clock()
            self._inflight = asyncio.ensure_future(self._fetch())
            self._inflight.add_done_callback(self._clear)
        await asyncio.shield(self._inflight)

    def _clear(self, task: asyncio.Task[None]) -> None:
        if self._inflight is task:
            self._inflight = None
        if not task.cancelled():
            task.exception()  # retrieved: _fetch logs its own failures

    async def _fetch(self) -> None:
        self.fetches += 1
        headers = {"Accept": "application/json"}
        if self._etag is not None and self._loaded:
            headers["If-None-Match"] = self._etag
        try:
            response = await self._http.get(self._url, headers=headers)
            if response.status_code == 304 and self._loaded:
                self._renew(response)
                return
            response.raise_for_status()
            keys = parse_keys(response.json())
        except (httpx.HTTPError, ValueError) as exc:
            log.warning("fetching the JWKS from %s failed: %s", self._url, exc)
            self._retry_after = self._clock() + self._refetch_interval
            return
        self._keys = keys
        self._etag = response.headers.get("etag")
        self._loaded = True
        self._renew(response)

    def _renew(self, response: httpx.Response) -> None:
        lifetime = max_age(response.headers.get("cache-control"), self._default_max_age)
        self._fresh_until = self._clock() + lifetime
