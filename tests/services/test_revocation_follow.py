"""With the in-process store, a change another process records in the database (the CLI's
``users disable|enable``, with a store of its own) reaches the serving process within a
second: it follows the database. Attack: disable a user from the CLI while ``make run``
serves; the user's tokens must stop validating."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable

import pytest

from auth_service.clock import FrozenClock
from auth_service.container import Container
from auth_service.store import MemoryStore
from tests.support.backends import is_postgres
from tests.support.http import PASSWORD, client_headers, register_and_login, validate
from tests.support.service import started


async def _within_a_second(check: Callable[[], object]) -> None:
    for _ in range(50):
        if await check():  # type: ignore[misc]
            return
        await asyncio.sleep(0.02)
    raise AssertionError("not within a second")


@pytest.mark.skipif(is_postgres(), reason="the in-process store of the embedded backend")
async def test_a_disable_and_an_enable_from_another_process_reach_the_server(
    make_container: Callable[..., Container], clock: FrozenClock, redis_prefix: str
) -> None:
    async with started(make_container()) as service:
        user = await register_and_login(service)
        headers = await client_headers(service)
        cli = make_container(store=MemoryStore(prefix=redis_prefix))  # another process's store
        user_id = uuid.UUID(user.user_id)
        await cli.accounts.set_disabled(user_id, True)

        async def refused() -> bool:
            verdict = await validate(service, user.pair["access_token"], headers)
            return verdict == {"valid": False, "error": "user_disabled"}

        await _within_a_second(refused)
        clock.advance(1)
        await cli.accounts.set_disabled(user_id, False)
        login = await service.client.post(
            "/auth/login", json={"email": user.email, "password": PASSWORD}
        )
        assert login.status_code == 200
        fresh = login.json()["access_token"]

        async def accepted() -> bool:
            return bool((await validate(service, fresh, headers))["valid"])

        await _within_a_second(accepted)  # the server dropped its disabled entry too
        assert (await validate(service, user.pair["access_token"], headers))["valid"] is False
        await cli.engine.dispose()
        cli.hasher.close()
