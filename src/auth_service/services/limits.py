"""Attempt limits shared by the login, second-factor and password endpoints (store counters).

Every key that names an account is built from the normalised email (``accounts
.normalize_email``: one spelling, one counter), every key that names a client IP from
``ip_group`` (an IPv6 /64 is one client). Fixed windows of ``LOGIN_WINDOW``:

- ``login:from:<ip group>``: every password attempt from one IP, whatever the account, the
  unknown and the malformed emails too (``AUTH_LOGIN_IP_LIMIT``); never reset by a success.
- ``login:pair:<email>:<ip group>``: attempts on one account from one IP
  (``AUTH_LOGIN_FAILURE_LIMIT``); a success resets it.
- ``login:acct:<email>``: attempts on one account from all IPs
  (``AUTH_LOGIN_ACCOUNT_FAILURE_LIMIT``; also password change, TOTP setup and disable); a
  success resets it. An (account, IP) pair that logged in within ``AUTH_KNOWN_CLIENT_DAYS``
  is not held back by it (a sprayer cannot lock the owner out), only by its pair limit.
- ``mfa:user:<id>``: second-factor attempts of one user across mfa tokens and the TOTP
  disable endpoint.

A store that cannot be reached refuses the request (503): limits that cannot be enforced are
not skipped.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Awaitable, Sequence
from datetime import timedelta
from functools import lru_cache
from typing import TypeVar

from auth_service.errors import RateLimitedError, ServiceUnavailableError
from auth_service.services import store_keys
from auth_service.store.base import RateLimitResult, Store, StoreUnavailableError

T = TypeVar("T")

LOGIN_WINDOW = timedelta(minutes=15)
MFA_USER_ATTEMPTS = 10  # second-factor attempts per user per LOGIN_WINDOW


IPV6_GROUP_PREFIX = 64  # one IPv6 subscriber is handed a /64: it counts as one client


@lru_cache(maxsize=4096)  # parsed on every client-authenticated request: one parse an address
def ip_group(ip: str | None) -> str:
    """The key part that per-IP limits count by: an IPv4 address as is, an IPv6 address's /64
    (an IPv4-mapped IPv6 address as its IPv4 address), ``-`` for none or an unparsable one."""
    if not ip:
        return "-"
    try:
        address = ipaddress.ip_address(ip.strip())
    except ValueError:
        return "-"
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        network = ipaddress.IPv6Network((address, IPV6_GROUP_PREFIX), strict=False)
        return str(network)
    return str(address)


def from_ip_key(ip: str | None) -> str:
    return store_keys.login_from_key(ip_group(ip))


def pair_key(address: str, ip: str | None) -> str:
    """``address`` is a normalised email (``accounts.normalize_email``)."""
    return store_keys.login_pair_key(address, ip_group(ip))


def device_key(address: str, ip: str | None) -> str:
    """Set when the account logged in from this IP group: a load-shedding hint only (the
    database's sessions decide whether the pair is known)."""
    return store_keys.login_device_key(address, ip_group(ip))


def urgent_key(address: str) -> str:
    """Counts an account's urgent (known-device) logins: past its budget they queue as
    normal work, so accounts an attacker owns cannot keep the urgent lane full."""
    return store_keys.login_urgent_key(address)


def account_key(address: str) -> str:
    """``address`` is a normalised email (``accounts.normalize_email``), as stored."""
    return store_keys.login_account_key(address)


def mfa_user_key(user_id: object) -> str:
    return store_keys.mfa_user_key(user_id)


async def guard_store(pending: Awaitable[T]) -> T:
    try:
        return await pending
    except StoreUnavailableError as exc:
        raise ServiceUnavailableError("this is unavailable right now; retry shortly") from exc


async def take_attempts(store: Store, limits: Sequence[tuple[str, int]]) -> None:
    """Count one attempt on each ``(key, limit)``; ``RateLimitedError`` with the longest wait
    if any is over its limit (every counter counts the attempt either way)."""
    results = [await guard_store(store.hit(key, limit, LOGIN_WINDOW)) for key, limit in limits]
    refused = [
        (result.retry_after_seconds, key)
        for result, (key, _limit) in zip(results, limits, strict=True)
        if not result.allowed
    ]
    if refused:
        wait, key = max(refused)
        raise RateLimitedError(wait, limiter=store_keys.limiter_name(key))


async def reset_counters(store: Store, keys: Sequence[str]) -> None:
    for key in keys:
        await guard_store(store.reset_counter(key))


async def take_attempt(
    store: Store, key: str, limit: int, window: timedelta = LOGIN_WINDOW
) -> RateLimitResult:
    """Count one attempt; ``RateLimitedError`` (429 with Retry-After) beyond ``limit``."""
    result = await guard_store(store.hit(key, limit, window))
    if not result.allowed:
        raise RateLimitedError(result.retry_after_seconds, limiter=store_keys.limiter_name(key))
    return result
