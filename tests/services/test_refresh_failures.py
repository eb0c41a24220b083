"""Refresh when a part fails (attack review 2): a store failure during reuse detection leaves
the reuse to be detected again, and a session row held by someone else costs a refresh at
most the lock timeout, answered 503, never 500."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest
from sqlalchemy import select, text

from auth_service.container import Container
from auth_service.db.models import Session
from auth_service.db.session import STATEMENT_LOCK_TIMEOUT_MS
from auth_service.errors import RefreshTokenReusedError
from auth_service.services import refresh as refresh_module
from auth_service.store.base import StoreUnavailableError
from tests.support.backends import is_postgres
from tests.support.http import client_headers, register_and_login, validate
from tests.support.service import Service, started


async def test_reuse_detected_while_the_store_fails_is_detected_again(
    make_container: Callable[..., Container], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before: the family was revoked in the database, the store write failed after the
    commit, and the session's access tokens stayed valid everywhere until they expired."""
    async with started(make_container()) as service:
        user = await register_and_login(service)
        headers = await client_headers(service)
        rotated = await service.container.sessions.refresh(user.pair["refresh_token"])
        service.container.clock.advance(11)  # past the grace period: a replay is reuse

        async def store_down(*_args: object, **_kwargs: object) -> None:
            raise StoreUnavailableError("the store is down")

        with monkeypatch.context() as patch:
            patch.setattr(refresh_module, "revoke_sessions", store_down)
            with pytest.raises(StoreUnavailableError):
                await service.container.sessions.refresh(user.pair["refresh_token"])
        async with service.container.db.writer() as db:
            session = (await db.scalars(select(Session))).one()
        assert session.revoked_at is None  # rolled back with the failed store write
        with pytest.raises(RefreshTokenReusedError):  # the store is back: detected again
            await service.container.sessions.refresh(user.pair["refresh_token"])
        verdict = await validate(service, rotated.access_token, headers)
        assert verdict == {"valid": False, "error": "session_revoked"}


@pytest.mark.skipif(not is_postgres(), reason="PostgreSQL's row locks and lock_timeout")
async def test_a_held_session_lock_is_a_quick_503_not_a_500(service: Service) -> None:
    user = await register_and_login(service)
    engine = service.container.engine
    async with engine.connect() as holder:
        await holder.execute(text("BEGIN"))
        await holder.execute(text("SELECT 1 FROM sessions FOR UPDATE"))  # a logout, say
        started_at = time.monotonic()
        answer = await service.client.post(
            "/auth/refresh", json={"refresh_token": user.pair["refresh_token"]}
        )
        waited = time.monotonic() - started_at
        await holder.execute(text("ROLLBACK"))
    assert answer.status_code == 503, answer.text
    assert answer.json()["error"] == "service_unavailable"
    assert waited < STATEMENT_LOCK_TIMEOUT_MS / 1000 + 2
    again = await service.client.post(  # nothing was used: the token still rotates
        "/auth/refresh", json={"refresh_token": user.pair["refresh_token"]}
    )
    assert again.status_code == 200, again.text
