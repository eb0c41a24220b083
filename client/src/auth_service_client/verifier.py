"""``LocalVerifier``: the service's ``/validate`` answered in-process, from the JWKS and
(optionally) the revocation stream, with the service's reasons and their precedence.

Checks, in the service's order: header (``malformed``, ``algorithm_not_allowed``) → ``typ``
(``wrong_token_type``) → key (``key_revoked`` if the stream lists the kid, ``unknown_key``
if the JWKS lacks it after at most one rate-limited refetch) → signature
(``invalid_signature``) → claims (``malformed``, ``invalid_issuer``, ``invalid_audience``) →
times (``expired``, ``not_yet_valid``) → revocation (``user_disabled``, ``token_revoked``,
``session_revoked``). A token whose signature verified is remembered (bounded LRU keyed by
the token string), so a repeat skips parsing and RSA; its key, times and revocations are
checked again on every call.

Revocation: with ``revocations=False`` nothing is revoked locally: a logged-out token stays
valid until it expires, and a revoked key's tokens are refused only once the JWKS copy lapses,
and then as ``unknown_key`` (the JWKS does not list revoked keys; ``/validate`` says
``key_revoked``): the stream is what gives ``key_revoked``, and immediately. With
``revocations=True`` a background task follows ``GET /events/revocations``. While that state
is not current (before the first ``synced``, or not current for longer than ``stale_after``),
a token that passes every local check is decided by ``fallback`` (e.g.
``AuthClient.validate``); without a fallback, ``verify`` raises ``ServiceUnavailableError``
instead of risking a revoked token. The stream is current while a byte came within its
``heartbeat``, so the stale bound is ``heartbeat + stale_after`` after the last byte.

Other differences from ``/validate``: a token over 16 KiB is ``malformed`` here, where
``/validate`` answers ``422``; a JWKS copy past its max-age + ``max_stale`` (refetches failing)
makes ``verify`` raise ``ServiceUnavailableError``.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from types import TracebackType
from typing import Any

import httpx
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicKey

from auth_service_client import rules
from auth_service_client.errors import ServiceUnavailableError
from auth_service_client.jwks import JWKS_PATH, JwksCache
from auth_service_client.revocations import EVENTS_PATH, RevocationFollower
from auth_service_client.types import Check, Verdict, freeze

# kid the signature verified against, the claims, their time bounds or the claim rejection
_Entry = tuple[str, dict[str, Any], rules.TimeBounds | str]


def _noop() -> None:
    return None


class LocalVerifier:
    """Verify access tokens locally. Use as ``async with LocalVerifier(...) as verifier``
    (or ``await start()`` / ``await aclose()``); ``verify`` starts it lazily too.

    ``issuer`` and ``audience`` are the service's ``AUTH_ISSUER`` and (one of) its
    ``AUTH_AUDIENCE``; ``leeway`` its ``AUTH_CLOCK_LEEWAY_SECONDS``. ``algorithms`` is the
    allow-list (only RS256 can be allowed). ``client_id``/``client_secret`` authenticate the
    revocation stream. ``clock`` (epoch seconds) and ``monotonic`` are injectable.
    """

    def __init__(
        self,
        base_url: str,
        *,
        issuer: str,
        audience: str | Sequence[str],
        leeway: float = 10.0,
        algorithms: Sequence[str] = ("RS256",),
        revocations: bool = False,
        client_id: str | None = None,
        client_secret: str | None = None,
        stale_after: float = 5.0,
        fallback: Check | None = None,
        cache_size: int = 10_000,
        refetch_interval: float = 5.0,
        max_stale: float = 300.0,
        heartbeat: float = 15.0,
        backoff: tuple[float, float] = (0.5, 30.0),
        http: httpx.AsyncClient | None = None,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        if not issuer:
            raise ValueError("issuer must be the service's AUTH_ISSUER")
        audiences = frozenset([audience] if isinstance(audience, str) else audience)
        if not audiences:
            raise ValueError("audience must name at least one audience")
        self._issuer, self._audiences, self._leeway = issuer.rstrip("/"), audiences, leeway
        self._allowed = rules.allow_list(algorithms)
        self._clock, self._stale_after, self._fallback = clock, stale_after, fallback
        self._own_http = http is None
        self._http = http or httpx.AsyncClient(timeout=httpx.Timeout(10.0))
        base = base_url.rstrip("/")
        self.jwks = JwksCache(
            self._http,
            base + JWKS_PATH,
            refetch_interval=refetch_interval,
            max_stale=max_stale,
            clock=monotonic,
        )
        self.follower: RevocationFollower | None = None
        if revocations:
            if not client_id or not client_secret:
                raise ValueError("revocations=True needs client_id and client_secret")
            self.follower = RevocationFollower(
                self._http,
                base + EVENTS_PATH,
                client_id,
                client_secret,
                heartbeat=heartbeat,
                backoff=backoff,
                on_keys=self.jwks.refresh,
                clock=clock,
                monotonic=monotonic,
            )
        self._size = cache_size
        self._cache: OrderedDict[str, _Entry] = OrderedDict()
        self._kid_of: OrderedDict[str, str] = OrderedDict()  # jti → kid, for revoked_reason
        self._started = False

    # -- lifecycle ----------------------------------------------------------------------------
    async def start(self, *, wait_synced: float | None = None) -> None:
        """Start following the stream; with ``wait_synced``, wait that many seconds at most
        for the first ``synced`` (``TimeoutError`` if it does not come)."""
        self._started = True
        if self.follower is not None:
            self.follower.start()
            if wait_synced is not None:
                async with asyncio.timeout(wait_synced):
                    await self.follower.wait_synced()

    async def aclose(self) -> None:
        if self.follower is not None:
            await self.follower.aclose()
        await self.jwks.aclose()
        if self._own_http:
            await self._http.aclose()

    async def __aenter__(self) -> LocalVerifier:
        await self.start()
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    # -- verifying ----------------------------------------------------------------------------
    async def verify(self, token: str) -> Verdict:
        """The verdict ``/validate`` would give. Raises ``ServiceUnavailableError`` when no
        JWKS was ever fetched, or when the revocation state is stale and there is no
        ``fallback`` (a fallback's own errors propagate)."""
        if not self._started:
            await self.start()
        try:
            _, claims, outcome = await self._verified(token)
            if isinstance(outcome, str):
                raise rules.Rejected(outcome)
            outcome.check(self._clock(), self._leeway)
        except rules.Rejected as exc:
            return Verdict(False, None, exc.reason)
        follower = self.follower
        if follower is None:
            return Verdict(True, claims)
        if follower.stale_for() > self._stale_after:
            if self._fallback is None:
                raise ServiceUnavailableError("the revocation stream is not current")
            return await self._fallback(token)
        reason = follower.revoked_reason(claims)
        return Verdict(False, None, reason) if reason else Verdict(True, claims)

    async def verify_many(self, tokens: Sequence[str]) -> list[Verdict]:
        """``verify`` for each token, in order (unknown kids share one refetch)."""
        return [await self.verify(token) for token in tokens]

    async def _verified(self, token: str) -> _Entry:
        if not isinstance(token, str):
            raise rules.Rejected("malformed")
        entry = self._cache.get(token)
        if entry is not None:
            self._cache.move_to_end(token)
            await self._key(entry[0])
            return entry
        parsed = rules.parse(token, self._allowed)
        rules.check_type(parsed)
        claims = rules.verify_signature(parsed, await self._key(parsed.kid))
        try:
            outcome: rules.TimeBounds | str = rules.check_claims(
                claims, issuer=self._issuer, audiences=self._audiences
            )
        except rules.Rejected as exc:
            outcome = exc.reason
        entry = (parsed.kid, freeze(claims), outcome)
        if self._size:
            self._cache[token] = entry
            if isinstance(jti := claims.get("jti"), str):
                self._kid_of[jti] = parsed.kid
            while len(self._cache) > self._size:
                self._cache.popitem(last=False)
            while len(self._kid_of) > self._size:
                self._kid_of.popitem(last=False)
        return entry

    async def _key(self, kid: str) -> RSAPublicKey:
        if self.follower is not None and kid in self.follower.state.revoked_kids:
            raise rules.Rejected("key_revoked")
        key = self.jwks.peek(kid) or await self.jwks.get(kid)
        if key is None:
            raise rules.Rejected("unknown_key")
        return key

    # -- types.RevocationSource ---------------------------------------------------------------
    def revoked_reason(self, claims: Mapping[str, Any]) -> str | None:
        """Why the current state refuses these (verified) claims: ``key_revoked`` for a
        token this verifier saw under a now revoked kid, else the stream's reason."""
        if self.follower is None:
            return None
        kid = self._kid_of.get(str(claims.get("jti")))
        if kid is not None and kid in self.follower.state.revoked_kids:
            return "key_revoked"
        return self.follower.revoked_reason(claims)

    def on_revocation(self, callback: Callable[[], None]) -> Callable[[], None]:
        """``callback`` after each revocation event applied (none without the stream)."""
        if self.follower is None:
            return _noop
        return self.follower.on_revocation(callback)
