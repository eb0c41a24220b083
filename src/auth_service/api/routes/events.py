"""``GET /events/revocations``: the revocation stream (Server-Sent Events, client Basic).

The stream's first frames (``keys``, the replay or the snapshot, ``synced``) are computed
before the answer starts, so an unavailable store is a plain ``503``; after that, live events
and a heartbeat comment. The wire format is in docs/design/client-library.md.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Annotated

from fastapi import APIRouter, Depends, Header, Request
from fastapi.responses import StreamingResponse

from auth_service.api.deps import (
    basic_credentials,
    container_of,
    get_client_id,
    get_client_ip,
)
from auth_service.api.errors import DATABASE_UNAVAILABLE
from auth_service.api.schemas.common import error_responses
from auth_service.errors import (
    AuthError,
    InvalidClientError,
    RateLimitedError,
    ServiceUnavailableError,
)
from auth_service.errors import ErrorCode as E
from auth_service.services.revocation_feed import (
    CONNECTS_PER_MINUTE,
    Event,
    RevocationFeed,
    Stream,
    TooManyStreamsError,
)
from auth_service.store.base import StoreUnavailableError

router = APIRouter(prefix="/events", tags=["validation"])

_HEARTBEAT = b": hb\n\n"
_HEADERS = {"Cache-Control": "no-store", "X-Accel-Buffering": "no"}


REAUTH_SECONDS = 1.0
"""How often an open stream re-checks its client's credentials: a deleted client, a secret
rotated away and a previous secret whose overlap ended stop it within a second (a check is
a cache hit unless the client changed)."""

StillAllowed = Callable[[], Awaitable[bool]]


async def _recheck(request: Request, credentials: tuple[str, str]) -> StillAllowed:
    """False once the credentials the stream was opened with are refused. A failure to check
    (store, database, a full hashing queue) keeps the stream: it is checked again next time."""
    container = container_of(request)
    ip = await get_client_ip(request, container.settings)  # as the first authentication

    async def still_allowed() -> bool:
        try:
            await container.clients.authenticate(*credentials, ip)
        except InvalidClientError:
            return False
        except Exception as exc:
            if isinstance(exc, (AuthError, StoreUnavailableError, *DATABASE_UNAVAILABLE)):
                return True
            raise
        return True

    return still_allowed


async def _frames(
    feed: RevocationFeed,
    stream: Stream,
    first: list[Event],
    heartbeat: float,
    still_allowed: StillAllowed,
) -> AsyncIterator[bytes]:
    try:
        for opening in first:
            yield opening.frame()
        checked = sent = time.monotonic()
        while True:
            try:
                item: Event | bool | None = await stream.next(min(heartbeat, REAUTH_SECONDS))
            except TimeoutError:
                item = False  # nothing came
            now = time.monotonic()
            if now - checked >= REAUTH_SECONDS:
                if not await still_allowed():
                    return
                checked = now
            if item is None:
                return
            if isinstance(item, Event):
                yield item.frame()
                sent = now
            elif now - sent >= heartbeat:
                yield _HEARTBEAT
                sent = now
    finally:
        feed.close(stream)


@router.get(
    "/revocations",
    response_class=StreamingResponse,
    responses={
        200: {
            "content": {"text/event-stream": {"schema": {"type": "string"}}},
            "description": "Server-Sent Events: jti, sid, user, user_disabled, user_enabled, "
            "client, keys, resync, synced (docs/design/client-library.md).",
        },
        **error_responses(401, 429, 503, s401=(E.INVALID_CLIENT,), s503=(E.SERVICE_UNAVAILABLE,)),
    },
)
async def revocations(
    request: Request,
    client_id: Annotated[str, Depends(get_client_id)],
    last_event_id: str | None = Header(default=None, max_length=200),
) -> StreamingResponse:
    """Follow every revocation as it happens (for local verifiers); `Last-Event-ID` resumes."""
    container = container_of(request)
    feed = container.feed
    if feed is None:
        raise ServiceUnavailableError("the revocation stream needs AUTH_REVOCATION_MIRROR=true")
    try:
        stream = await feed.admit(client_id)
    except TooManyStreamsError as exc:
        raise RateLimitedError(
            exc.retry_after_seconds,
            "Too many revocation streams for this client: at most "
            "AUTH_EVENT_STREAMS_PER_CLIENT open on an instance, and "
            f"{CONNECTS_PER_MINUTE} connections a minute.",
            limiter="event-streams",
        ) from exc
    try:
        first = await feed.opening(stream, last_event_id)
    except BaseException:
        feed.close(stream)
        raise
    heartbeat = container.settings.event_heartbeat_seconds
    credentials = basic_credentials(request)
    assert credentials is not None  # get_client_id authenticated them
    return StreamingResponse(
        _frames(feed, stream, first, heartbeat, await _recheck(request, credentials)),
        media_type="text/event-stream",
        headers=_HEADERS,
    )
