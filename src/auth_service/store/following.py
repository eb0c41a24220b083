"""One loop for every follower of a pub/sub channel: subscribe, serve, and on any loss
subscribe again after a back-off (the revocation mirror and the key-cache follower)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence

from auth_service.store.base import Store, StoreUnavailableError, raise_if_cancelling

log = logging.getLogger(__name__)

Serve = Callable[[AsyncIterator[str], Callable[[], None]], Awaitable[None]]
"""Runs while subscribed: ``(messages, healthy)``; calling ``healthy()`` once caught up resets
the back-off. Returning or raising ends the subscription."""


async def follow_channel(
    store: Store,
    channel: str,
    serve: Serve,
    *,
    name: str,
    retry_seconds: Sequence[float],
    after_loss: Callable[[], None] | None = None,
) -> None:
    """Run until cancelled. ``after_loss`` runs each time a subscription ends, at once (the
    mirror stops answering from memory before the back-off, not after it)."""
    failures = 0

    def healthy() -> None:
        nonlocal failures
        failures = 0

    while True:
        try:
            async with store.subscribe(channel) as messages:
                await serve(messages, healthy)
        except StoreUnavailableError as exc:
            log.warning("%s lost the store (%s); subscribing again", name, exc)
        except Exception:
            log.exception("%s failed; subscribing again", name)
        finally:
            if after_loss is not None:
                after_loss()
        raise_if_cancelling()  # a cancellation that came out as a store error
        await asyncio.sleep(retry_seconds[min(failures, len(retry_seconds) - 1)])
        failures += 1
