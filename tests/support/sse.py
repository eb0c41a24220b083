"""Reading the revocation stream (Server-Sent Events) in tests: frames as they arrive."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx


@dataclass(frozen=True)
class Frame:
    type: str  # the event type, or "comment" for a heartbeat
    data: dict[str, Any]
    id: str | None = None


async def frames(response: httpx.Response) -> AsyncIterator[Frame]:
    """Each event (and comment) of an open ``text/event-stream`` response, in order."""
    fields: dict[str, str] = {}
    async for line in response.aiter_lines():
        if line.startswith(":"):
            yield Frame("comment", {"text": line[1:].strip()})
        elif line:
            name, _, value = line.partition(":")
            fields[name] = value.removeprefix(" ")
        elif fields:
            yield Frame(
                fields.get("event", "message"), json.loads(fields["data"]), fields.get("id")
            )
            fields = {}


async def until_synced(stream: AsyncIterator[Frame]) -> list[Frame]:
    """The frames up to and including ``synced``."""
    seen: list[Frame] = []
    async for frame in stream:
        seen.append(frame)
        if frame.type == "synced":
            return seen
    raise AssertionError(f"the stream ended before synced: {seen}")
