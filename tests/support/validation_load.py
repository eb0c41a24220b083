"""Validation under load for the Redis outage tests: loops that validate named tokens until
stopped, counting each answer as ``name:valid``, ``name:refused`` or ``name:<status>``."""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from collections.abc import AsyncIterator

from tests.support.service import Service


@contextlib.asynccontextmanager
async def validating(
    service: Service, headers: dict[str, str], tokens: dict[str, str]
) -> AsyncIterator[Counter[str]]:
    seen: Counter[str] = Counter()
    running = True

    async def load(name: str, token: str) -> None:
        while running:
            answer = await service.client.post("/validate", json={"token": token}, headers=headers)
            if answer.status_code != 200:
                seen[f"{name}:{answer.status_code}"] += 1
            else:
                seen[f"{name}:{'valid' if answer.json()['valid'] else 'refused'}"] += 1
            await asyncio.sleep(0.01)

    tasks = [asyncio.create_task(load(name, token)) for name, token in tokens.items()]
    try:
        yield seen
    finally:
        running = False
        await asyncio.gather(*tasks)
