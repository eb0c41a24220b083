"""``GET /events/revocations``: the revocation stream (Server-Sent Events, client Basic).

The stream's first frames (``keys``, the replay or the snapshot, ``synced``) are computed
before the answer starts, so an unavailable store is a plain ``503``; after that, live events
and a heartbeat comment. The wire format is in docs/design/client-library.md.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import APIRouter, Depends, Header, Request
from fastapi.responses import StreamingResponse

from auth_service.api.deps import container_of, get_client_id
from auth_service.api.schemas.common import error_responses
from auth_service.errors import ErrorCode as E
from auth_service.errors import RateLimitedError, ServiceUnavailableError
from auth_service.services.revocation_feed import (
    Event,
    RevocationFeed,
    Stream,
    TooManyStreamsError,
)

router = APIRouter(prefix="/events", tags=["validation"])

_HEARTBEAT = b": hb\n\n"
_HEADERS = {"Cache-Control": "no-store", "X-Accel-Buffering": "no"}


async def _frames(
    feed: RevocationFeed, stream: Stream, first: list[Event], heartbeat: float
) -> AsyncIterator[bytes]:
    try:
        for event in first:
            yield event.frame()
        while True:
            try:
                event_or_end = await stream.next(heartbeat)
            except TimeoutError:
                yield _HEARTBEAT
                continue
            if event_or_end is None:
                return
            yield event_or_end.frame()
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
        stream = feed.open(client_id)
    except TooManyStreamsError as exc:
        raise RateLimitedError(
            5, "Too many revocation streams for this client (AUTH_EVENT_STREAMS_PER_CLIENT)."
        ) from exc
    try:
        first = await feed.opening(stream, last_event_id)
    except BaseException:
        feed.close(stream)
        raise
    heartbeat = container.settings.event_heartbeat_seconds
    return StreamingResponse(
        _frames(feed, stream, first, heartbeat),
        media_type="text/event-stream",
        headers=_HEADERS,
    )
