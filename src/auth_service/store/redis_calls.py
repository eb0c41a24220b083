"""What every Redis call of the store shares: error translation and a cancellation check."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from redis.exceptions import RedisError

from auth_service.store.base import StoreUnavailableError, raise_if_cancelling


def text(value: Any) -> str:
    """A reply as ``str`` (clients built without ``decode_responses`` return bytes)."""
    if isinstance(value, bytes):
        return value.decode("utf-8")
    return str(value)


@contextmanager
def unavailable(operation: str) -> Iterator[None]:
    """Translate every Redis failure raised inside the block into StoreUnavailableError;
    and re-raise a cancellation redis-py absorbed (``base.raise_if_cancelling``)."""
    try:
        yield
    except (RedisError, OSError) as exc:
        raise StoreUnavailableError(f"redis {operation} failed: {exc}") from exc
    raise_if_cancelling()
