"""Small pieces several test modules share (fixtures are in conftest.py)."""

from __future__ import annotations

import warnings

import httpx
from starlette.exceptions import StarletteDeprecationWarning

from auth_service_client.errors import ServiceUnavailableError
from auth_service_client.types import Check, Verdict

with warnings.catch_warnings():  # Starlette 1.x prefers httpx2 for its TestClient; httpx works
    warnings.simplefilter("ignore", StarletteDeprecationWarning)
    from starlette.testclient import TestClient

WALL = 1_800_000_000.0


class Clock:
    """Monotonic and wall time moving together (``now`` seconds after ``WALL``)."""

    def __init__(self) -> None:
        self.now = 0.0

    def mono(self) -> float:
        return self.now

    def wall(self) -> float:
        return WALL + self.now


def remote_check(base_url: str, client_id: str, client_secret: str) -> Check:
    """A tiny ``Check`` over ``POST /validate`` (independent of the library's AuthClient)."""

    async def check(token: str) -> Verdict:
        try:
            async with httpx.AsyncClient(base_url=base_url, timeout=10) as http:
                answer = await http.post(
                    "/validate", json={"token": token}, auth=(client_id, client_secret)
                )
        except httpx.TransportError as exc:
            raise ServiceUnavailableError(str(exc)) from exc
        if answer.status_code >= 500:
            raise ServiceUnavailableError(answer.text)
        assert answer.status_code == 200, answer.text
        return Verdict.from_json(answer.json())

    return check


__all__ = ["WALL", "Clock", "TestClient", "remote_check"]
