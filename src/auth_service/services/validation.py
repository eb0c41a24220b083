"""Token validation, the hot path: no database, one store round trip per call (or per batch).

Order (API.md "A token is valid only if ALL hold"): header (size, shape, alg allow-list, kid
charset) → ``typ`` → kid in the in-memory key cache (``unknown_key``, ``key_revoked``; a kid
the cache lacks reloads it once, rate-limited, in case the key is a moment old) →
signature and the claims that do not depend on the time (their outcome remembered in an
LRU keyed by the token string, bounded in bytes and in entries, so a token's RSA verify runs
once; key status, times and revocation are still checked on every call) → times against the
injected clock → revocation (jti, sid, user revoke-after, user disabled) in ONE pipelined
store read. A store failure fails closed: ``ServiceUnavailableError``, never valid.

That read also fetches the index marker (one key per call or batch, answered from memory by
the mirror with the rest): a store without it may have lost revocations (restart, flush), so
the call awaits the rebuild from the database (``services/revocation_index.py``, shared by
concurrent calls) and reads again; if the index cannot be completed: 503, never valid.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from auth_service.clock import Clock
from auth_service.crypto.jwt import (
    TimeBounds,
    TokenRejected,
    check_static_claims,
    check_token_type,
    parse_token,
    verify_parsed,
)
from auth_service.db.models import KeyStatus
from auth_service.errors import ServiceUnavailableError
from auth_service.services.keyring import KeyRing, VerificationKey
from auth_service.services.revocation import (
    INDEX_MARKER_KEY,
    revocation_keys,
    revocation_reason,
)
from auth_service.services.revocation_index import RevocationIndexError
from auth_service.settings import Settings
from auth_service.store.base import Store, StoreUnavailableError


@dataclass(frozen=True, slots=True)
class Verdict:
    valid: bool
    claims: dict[str, Any] | None = None
    error: str | None = None


# (kid the signature verified against, claims, their time bounds or the static check's
# rejection reason: malformed, invalid_issuer or invalid_audience)
Verified = tuple[str, dict[str, Any], TimeBounds | str]


CLAIMS_FACTOR = 7
"""Bytes a cached entry holds per byte of its JSON claims (the dict, its keys and values, the
``TimeBounds`` and its datetimes), measured with tracemalloc: docs/design/cache-memory.md."""
ENTRY_OVERHEAD = 300
"""Bytes an entry holds whatever its size: the str header, the LRU's links, the tuple."""


def entry_cost(token: str) -> int:
    """The bytes a cached entry of ``token`` is charged: the token string, its decoded claims
    (``CLAIMS_FACTOR`` per byte of their JSON, which is 3/4 of the payload segment, as it is
    unpadded base64url) and ``ENTRY_OVERHEAD``. Computed from the string alone, so eviction
    recomputes what ``put`` charged. For a token ``parse_token`` accepted (three segments)."""
    first = token.index(".")
    payload_chars = token.index(".", first + 1) - first - 1
    return len(token) + CLAIMS_FACTOR * (payload_chars * 3 // 4) + ENTRY_OVERHEAD


class SignatureCache:
    """A bounded LRU of token string → ``Verified``, within ``max_bytes`` (each entry charged
    ``entry_cost``) and ``size`` entries; either 0 disables it. An entry larger than
    ``max_bytes`` on its own is not cached.

    An entry exists only for a token whose header passed every check and whose signature
    verified, so a hit skips header parsing, RSA and the static claim checks; key status,
    times and revocation are still checked on every call.
    """

    def __init__(self, size: int, max_bytes: int) -> None:
        self._size = size if max_bytes > 0 else 0  # the one test on the hit path
        self._max_bytes = max_bytes
        self._entries: OrderedDict[str, Verified] = OrderedDict()  # event-loop use only
        self.charged = 0  # the sum of entry_cost over the entries

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, token: str) -> Verified | None:
        if not self._size:
            return None
        entry = self._entries.get(token)
        if entry is not None:
            self._entries.move_to_end(token)
        return entry

    def put(self, token: str, entry: Verified) -> None:
        if not self._size:
            return
        cost = entry_cost(token)
        if cost > self._max_bytes:
            return
        entries = self._entries
        if entries.pop(token, None) is not None:
            self.charged -= cost
        entries[token] = entry
        self.charged += cost
        while self.charged > self._max_bytes or len(entries) > self._size:
            oldest, _ = entries.popitem(last=False)
            self.charged -= entry_cost(oldest)


class UnknownKidReloader:
    """Reload the key cache when a token names a kid it lacks (a key created a moment ago on
    another instance), at most once per ``every`` and single-flight: a flood of random kids
    costs one database read per interval, and concurrent misses share that read."""

    def __init__(self, reload: Callable[[], Awaitable[bool]], clock: Clock, every: float) -> None:
        self._reload = reload
        self._clock = clock
        self._every = timedelta(seconds=every)
        self._last: datetime | None = None
        self._inflight: asyncio.Task[bool] | None = None
        self.reloads = 0

    async def __call__(self) -> bool:
        if self._inflight is None:
            now = self._clock.now()
            if self._last is not None and now - self._last < self._every:
                return False
            self._last = now
            self.reloads += 1
            self._inflight = asyncio.ensure_future(self._reload())
            self._inflight.add_done_callback(self._clear)
        return await asyncio.shield(self._inflight)

    def _clear(self, task: asyncio.Task[bool]) -> None:
        if self._inflight is task:
            self._inflight = None


class _UnknownKid(TokenRejected):
    def __init__(self) -> None:
        super().__init__("unknown_key")


_KID_MISSING = Verdict(valid=False, error="unknown_key")  # compared by identity

_INDEX_WAIT_SECONDS = 5.0
"""How long a call waits for the revocation index rebuild before answering 503."""


@dataclass(frozen=True, slots=True)
class ValidationPolicy:
    issuer: str
    audience: tuple[str, ...]
    allowed_algorithms: tuple[str, ...]
    leeway: timedelta
    cache_size: int
    cache_max_bytes: int
    unknown_kid_reload_seconds: float

    @classmethod
    def from_settings(cls, settings: Settings) -> ValidationPolicy:
        return cls(
            issuer=settings.issuer,
            audience=tuple(settings.audience),
            allowed_algorithms=tuple(settings.allowed_algorithms),
            leeway=settings.clock_leeway,
            cache_size=settings.validation_cache_size,
            cache_max_bytes=settings.validation_cache_max_bytes,
            unknown_kid_reload_seconds=settings.unknown_kid_reload_seconds,
        )


class TokenValidator:
    def __init__(
        self,
        keyring: KeyRing,
        store: Store,
        policy: ValidationPolicy,
        clock: Clock,
        *,
        reload_keys: Callable[[], Awaitable[bool]] | None = None,
        ensure_index: Callable[[], Awaitable[None]] | None = None,
        index_wait_seconds: float = _INDEX_WAIT_SECONDS,
    ) -> None:
        self._keyring = keyring
        self._store = store
        self._policy = policy
        self._clock = clock
        self._leeway = policy.leeway
        self._cache = SignatureCache(policy.cache_size, policy.cache_max_bytes)
        self.kid_reloader = (
            UnknownKidReloader(reload_keys, clock, policy.unknown_kid_reload_seconds)
            if reload_keys is not None
            else None
        )
        self._ensure_index = ensure_index
        self._index_wait = index_wait_seconds

    async def validate(self, token: str) -> Verdict:
        return (await self.validate_many([token]))[0]

    async def validate_many(self, tokens: Sequence[str]) -> list[Verdict]:
        now = self._clock.now()
        staged: list[Verdict | dict[str, Any]] = [self._verify_offline(t, now) for t in tokens]
        if any(item is _KID_MISSING for item in staged) and await self._reload_for_unknown_kid():
            staged = [
                self._verify_offline(token, now) if item is _KID_MISSING else item
                for token, item in zip(tokens, staged, strict=True)
            ]
        per_token = [_keys_for(item) if isinstance(item, dict) else [] for item in staged]
        keys = [key for token_keys in per_token for key in token_keys]
        values: list[str | None] = []
        if keys:
            keys.append(INDEX_MARKER_KEY)  # last: one key per call, not per token
            try:
                values = await self._store.get_many(keys)
            except StoreUnavailableError as exc:
                raise ServiceUnavailableError("revocations cannot be checked right now") from exc
            if values[-1] is None:
                values = await self._read_complete(keys)
        verdicts: list[Verdict] = []
        offset = 0
        for item, token_keys in zip(staged, per_token, strict=True):
            if isinstance(item, Verdict):
                verdicts.append(item)
                continue
            count = len(token_keys)
            reason = revocation_reason(
                values[offset : offset + count], iat=float(item["iat"]), service=is_service(item)
            )
            offset += count
            verdicts.append(Verdict(valid=False, error=reason) if reason else Verdict(True, item))
        return verdicts

    async def _read_complete(self, keys: list[str]) -> list[str | None]:
        """The store lacks the index marker: wait for the rebuild, read again (or fail
        closed: 503, never valid)."""
        if self._ensure_index is None:
            raise ServiceUnavailableError("the revocation index is incomplete")
        try:
            await asyncio.wait_for(self._ensure_index(), self._index_wait)
            values = await self._store.get_many(keys)
        except (RevocationIndexError, StoreUnavailableError, TimeoutError) as exc:
            raise ServiceUnavailableError("revocations cannot be checked right now") from exc
        if values[-1] is None:
            raise ServiceUnavailableError("the revocation index is being rebuilt")
        return values

    def _verify_offline(self, token: str, now: datetime) -> Verdict | dict[str, Any]:
        try:
            cached = self._cache.get(token)
            if cached is None:
                cached = self._verify_new(token, now)
                self._cache.put(token, cached)
            else:
                self._usable_key(cached[0], now)
            _, claims, outcome = cached
            if isinstance(outcome, str):
                raise TokenRejected(outcome)
            outcome.check(now, self._leeway)
        except _UnknownKid:
            return _KID_MISSING
        except TokenRejected as exc:
            return Verdict(valid=False, error=exc.reason)
        return claims

    def _verify_new(self, token: str, now: datetime) -> Verified:
        """Header, key, signature; then the static claim checks, whose outcome is kept."""
        policy = self._policy
        parsed = parse_token(token, allowed_algorithms=policy.allowed_algorithms)
        check_token_type(parsed.header)
        key = self._usable_key(parsed.header.kid, now)
        claims = verify_parsed(parsed, key.public_key)
        try:
            _check_shape(claims)
            bounds = check_static_claims(claims, issuer=policy.issuer, audiences=policy.audience)
        except TokenRejected as exc:
            return key.kid, claims, exc.reason
        return key.kid, claims, bounds

    async def _reload_for_unknown_kid(self) -> bool:
        return self.kid_reloader is not None and await self.kid_reloader()

    def _usable_key(self, kid: str, now: datetime) -> VerificationKey:
        key = self._keyring.lookup(kid)
        if key is None:
            raise _UnknownKid
        if key.status == KeyStatus.EXPIRED:
            raise TokenRejected("unknown_key")
        if key.status == KeyStatus.REVOKED:
            raise TokenRejected("key_revoked")
        if key.expires_at is not None and now >= key.expires_at:
            raise TokenRejected("unknown_key")
        return key


def _check_shape(claims: dict[str, Any]) -> None:
    """Our own claims: a user token names its session, a service token its client."""
    sid, client_id, roles = claims.get("sid"), claims.get("client_id"), claims.get("roles", [])
    if not isinstance(sid, str) and not isinstance(client_id, str):
        raise TokenRejected("malformed")
    if not isinstance(roles, list) or not all(isinstance(role, str) for role in roles):
        raise TokenRejected("malformed")


def is_service(claims: dict[str, Any]) -> bool:
    """A service token (client credentials) names its client and no session."""
    return not isinstance(claims.get("sid"), str)


def _keys_for(claims: dict[str, Any]) -> list[str]:
    sid = claims.get("sid")
    service = is_service(claims)
    return revocation_keys(
        jti=str(claims["jti"]),
        sid=sid if isinstance(sid, str) else None,
        subject=str(claims["client_id"] if service else claims["sub"]),
        service=service,
    )
