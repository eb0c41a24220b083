"""Refresh rotation: first use, grace, reuse detection, expiry — the attacks included."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest
from sqlalchemy import select, update

from auth_service.crypto.passwords import hash_opaque
from auth_service.db.models import RefreshToken, Session, User
from auth_service.errors import InvalidRefreshTokenError, RefreshTokenReusedError
from tests.support.http import client_headers, register_and_login, validate
from tests.support.service import Service


async def _refresh(service: Service, token: str) -> dict[str, object]:
    response = await service.client.post("/auth/refresh", json={"refresh_token": token})
    return {"status": response.status_code, **response.json()}


async def _grace_entries(service: Service, token: str) -> list[tuple[str, str, timedelta]]:
    """The store's grace entries of ``token`` (one a rotation that minted a pair for it)."""
    return await service.container.store.scan(f"refresh-grace:{hash_opaque(token)}:")


async def test_first_use_rotates_and_the_old_token_is_used_up(service: Service) -> None:
    user = await register_and_login(service)
    first = await _refresh(service, user.pair["refresh_token"])
    assert first["status"] == 200
    assert first["refresh_token"] != user.pair["refresh_token"]
    assert first["access_token"] != user.pair["access_token"]
    assert first["token_type"] == "Bearer"
    assert first["expires_in"] == 900
    async with service.container.db.writer() as db:
        rows = (await db.scalars(select(RefreshToken))).all()
    assert len(rows) == 2
    child = next(row for row in rows if row.parent_id is not None)
    parent = next(row for row in rows if row.parent_id is None)
    assert child.parent_id == parent.id and parent.used_at is not None
    assert user.pair["refresh_token"] not in {row.token_hash for row in rows}  # hashes only


async def test_reuse_within_grace_returns_the_very_same_pair(service: Service) -> None:
    user = await register_and_login(service)
    first = await _refresh(service, user.pair["refresh_token"])
    service.container.clock.advance(9)
    again = await _refresh(service, user.pair["refresh_token"])
    assert again == first


async def test_concurrent_refreshes_mint_one_pair(service: Service) -> None:
    user = await register_and_login(service)
    results = await asyncio.gather(
        *(service.container.sessions.refresh(user.pair["refresh_token"]) for _ in range(5))
    )
    assert len({pair.refresh_token for pair in results}) == 1
    assert len({pair.access_token for pair in results}) == 1
    async with service.container.db.writer() as db:
        assert len((await db.scalars(select(RefreshToken))).all()) == 2


async def test_reuse_after_grace_revokes_the_whole_session(service: Service) -> None:
    user = await register_and_login(service)
    headers = await client_headers(service)
    rotated = await _refresh(service, user.pair["refresh_token"])
    service.container.clock.advance(11)
    stolen = await _refresh(service, user.pair["refresh_token"])
    assert stolen["status"] == 401
    assert stolen["error"] == "refresh_token_reused"
    # The legitimate holder's newer tokens die with the session.
    assert (await _refresh(service, str(rotated["refresh_token"])))[
        "error"
    ] == "invalid_refresh_token"
    verdict = await validate(service, str(rotated["access_token"]), headers)
    assert verdict == {"valid": False, "error": "session_revoked"}
    async with service.container.db.writer() as db:
        session = (await db.scalars(select(Session))).one()
        assert session.revoked_reason == "refresh_token_reused"
        assert all(row.revoked_at for row in (await db.scalars(select(RefreshToken))).all())


async def test_reuse_within_grace_after_the_successor_was_used_is_reuse(service: Service) -> None:
    user = await register_and_login(service)
    rotated = await _refresh(service, user.pair["refresh_token"])
    assert (await _refresh(service, str(rotated["refresh_token"])))["status"] == 200
    replay = await _refresh(service, user.pair["refresh_token"])
    assert replay["error"] == "refresh_token_reused"


async def test_grace_needs_the_sealed_pair_in_the_store(service: Service) -> None:
    """Without the stored pair (lost store entry) a replay cannot be answered: it is reuse."""
    user = await register_and_login(service)
    await _refresh(service, user.pair["refresh_token"])
    (key, _value, _ttl), *more = await _grace_entries(service, user.pair["refresh_token"])
    assert not more
    await service.container.store.delete(key)
    assert (await _refresh(service, user.pair["refresh_token"]))["error"] == "refresh_token_reused"


async def test_the_grace_copy_is_sealed_under_the_token_itself(service: Service) -> None:
    user = await register_and_login(service)
    first = await _refresh(service, user.pair["refresh_token"])
    [(_key, stored, _ttl)] = await _grace_entries(service, user.pair["refresh_token"])
    assert str(first["access_token"]) not in stored
    assert str(first["refresh_token"]) not in stored


@pytest.mark.parametrize("token", ["", "x" * 2000, "not-a-real-token", "eyJhbGciOiJub25lIn0.e30."])
async def test_unknown_or_malformed_tokens_are_invalid(service: Service, token: str) -> None:
    response = await service.client.post("/auth/refresh", json={"refresh_token": token})
    assert response.status_code in (401, 422)
    if response.status_code == 401:
        assert response.json()["error"] == "invalid_refresh_token"
    with pytest.raises(InvalidRefreshTokenError):
        await service.container.sessions.refresh(token)


async def test_expired_refresh_token_is_invalid(service: Service) -> None:
    user = await register_and_login(service)
    service.container.clock.advance(2_592_000)
    assert (await _refresh(service, user.pair["refresh_token"]))["error"] == "invalid_refresh_token"


async def test_refresh_tokens_never_outlive_their_session(service: Service) -> None:
    user = await register_and_login(service)
    service.container.clock.advance(2_592_000 - 100)
    late = await _refresh(service, user.pair["refresh_token"])
    assert late["status"] == 200
    assert late["refresh_expires_in"] == 100
    service.container.clock.advance(100)
    assert (await _refresh(service, str(late["refresh_token"])))["error"] == "invalid_refresh_token"


async def test_a_disabled_user_cannot_refresh(service: Service) -> None:
    user = await register_and_login(service)
    async with service.container.db.writer() as db, db.begin():
        await db.execute(update(User).values(disabled=True))
    assert (await _refresh(service, user.pair["refresh_token"]))["error"] == "invalid_refresh_token"


async def test_refresh_after_logout_is_invalid(service: Service) -> None:
    user = await register_and_login(service)
    assert (await service.client.post("/auth/logout", headers=user.bearer)).status_code == 204
    assert (await _refresh(service, user.pair["refresh_token"]))["error"] == "invalid_refresh_token"
    with pytest.raises(InvalidRefreshTokenError):
        await service.container.sessions.refresh(user.pair["refresh_token"])


async def test_reuse_error_is_raised_by_the_service(service: Service) -> None:
    user = await register_and_login(service)
    await service.container.sessions.refresh(user.pair["refresh_token"])
    service.container.clock.advance(60)
    with pytest.raises(RefreshTokenReusedError):
        await service.container.sessions.refresh(user.pair["refresh_token"])
