"""Attempt limits shared by the login, second-factor and password endpoints (store counters).

``login:acct:<email>`` counts password attempts on one account (login, password change,
TOTP disable), ``mfa:user:<id>`` second-factor attempts of one user across mfa tokens and
the TOTP disable endpoint. A store that cannot be reached refuses the request (503): limits
that cannot be enforced are not skipped.
"""

from __future__ import annotations

from collections.abc import Awaitable
from datetime import timedelta
from typing import TypeVar

from auth_service.errors import RateLimitedError, ServiceUnavailableError
from auth_service.store.base import RateLimitResult, Store, StoreUnavailableError

T = TypeVar("T")

LOGIN_WINDOW = timedelta(minutes=15)
MFA_USER_ATTEMPTS = 10  # second-factor attempts per user per LOGIN_WINDOW


def account_key(email: str) -> str:
    return f"login:acct:{email.strip().lower()}"


def mfa_user_key(user_id: object) -> str:
    return f"mfa:user:{user_id}"


async def guard_store(pending: Awaitable[T]) -> T:
    try:
        return await pending
    except StoreUnavailableError as exc:
        raise ServiceUnavailableError("this is unavailable right now; retry shortly") from exc


async def take_attempt(
    store: Store, key: str, limit: int, window: timedelta = LOGIN_WINDOW
) -> RateLimitResult:
    """Count one attempt; ``RateLimitedError`` (429 with Retry-After) beyond ``limit``."""
    result = await guard_store(store.hit(key, limit, window))
    if not result.allowed:
        raise RateLimitedError(result.retry_after_seconds)
    return result
