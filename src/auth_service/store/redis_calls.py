"""What every Redis call of the store shares: error translation and a cancellation check."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from redis.exceptions import RedisError

from auth_service.store.base import StoreUnavailableError


def text(value: Any) -> str:
    """A reply as ``str`` (clients built without ``decode_responses`` return bytes)."""
    if isinstance(value, bytes):
        return value.decode("utf-8")
    return str(value)


@contextmanager
def unavailable(operation: str) -> Iterator[None]:
    """Translate every Redis failure raised inside the block into StoreUnavailableError;
    and re-raise a cancellation redis-py absorbed (see ``raise_if_cancelling``)."""
    try:
        yield
    except (RedisError, OSError) as exc:
        raise StoreUnavailableError(f"redis {operation} failed: {exc}") from exc
    raise_if_cancelling()


def raise_if_cancelling() -> None:
    """redis-py can absorb a cancellation thrown into one of its reads (the call then
    returns as if nothing happened): a task asked to stop must not go on, or it holds up
    the instance's shutdown (seen: every follower's stop waited out its 5 s bound)."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError
