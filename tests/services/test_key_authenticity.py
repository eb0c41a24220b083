"""Attacks on the key table and the key cache (review findings on the foundation)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from sqlalchemy import update
from sqlalchemy.exc import IntegrityError

from auth_service.container import Container
from auth_service.crypto.jwk import generate_rsa_key, public_jwk_members, thumbprint
from auth_service.db.models import SigningKey
from auth_service.services import key_events
from auth_service.services.key_events import reload_keyring
from auth_service.services.keys import ensure_signing_keys, load_snapshot
from auth_service.store import MemoryStore


async def test_a_key_row_written_by_an_attacker_is_neither_trusted_nor_published(
    make_container: Callable[..., Container], clock: object
) -> None:
    container = make_container()
    await ensure_signing_keys(container.rotation.keys)
    attacker = generate_rsa_key(2048)
    members = public_jwk_members(attacker.public_key())
    kid = thumbprint(members)
    async with container.db.writer() as session, session.begin():
        session.add(
            SigningKey(
                kid=kid,
                alg="RS256",
                key_bits=2048,
                status="retired",
                public_jwk=members,
                private_key_encrypted=b"\x01" + b"\x00" * 40,
                created_at=container.clock.now(),
            )
        )
    snapshot = await load_snapshot(container.rotation.keys)
    assert kid not in snapshot.keys
    assert kid.encode() not in snapshot.jwks.body
    assert len(snapshot.keys) == 2
    await container.engine.dispose()


async def test_a_public_key_swapped_under_a_genuine_sealed_key_is_refused(
    make_container: Callable[..., Container], key_pool: list[rsa.RSAPrivateKey]
) -> None:
    container = make_container()
    await ensure_signing_keys(container.rotation.keys)
    snapshot = await load_snapshot(container.rotation.keys)
    next_kid = next(k for k, v in snapshot.keys.items() if v.status == "next")
    forged = public_jwk_members(key_pool[5].public_key())
    async with container.db.writer() as session, session.begin():
        await session.execute(
            update(SigningKey).where(SigningKey.kid == next_kid).values(public_jwk=forged)
        )
    after = await load_snapshot(container.rotation.keys)
    assert next_kid not in after.keys
    assert forged["n"].encode() not in after.jwks.body
    await container.engine.dispose()


async def test_instances_without_a_shared_lock_still_end_with_one_pair(
    make_container: Callable[..., Container],
) -> None:
    """Each has its own in-process store (no shared lock): the unique indexes decide."""
    containers = [make_container(store=MemoryStore()) for _ in range(3)]
    results = await asyncio.gather(*(ensure_signing_keys(c.rotation.keys) for c in containers))
    assert results.count(True) >= 1
    async with containers[0].db.writer() as session:
        statuses = sorted((await session.scalars(SigningKey.__table__.select())).all())
    assert len(statuses) == 2
    for container in containers:
        await container.engine.dispose()


async def test_a_slow_stale_reload_cannot_undo_a_later_one(
    make_container: Callable[..., Container], monkeypatch: pytest.MonkeyPatch
) -> None:
    container = make_container()
    await ensure_signing_keys(container.rotation.keys)
    real_load = key_events.load_snapshot
    calls = 0

    async def slow_first_load(ctx: object) -> object:
        nonlocal calls
        calls += 1
        snapshot = await real_load(ctx)  # type: ignore[arg-type]
        if calls == 1:
            await asyncio.sleep(0.3)  # read before the revocation, finishes after it
        return snapshot

    monkeypatch.setattr(key_events, "load_snapshot", slow_first_load)
    stale = asyncio.create_task(reload_keyring(container.rotation.keys, container.keyring))
    await asyncio.sleep(0.05)
    snapshot = await real_load(container.rotation.keys)
    next_kid = next(k for k, v in snapshot.keys.items() if v.status == "next")
    async with container.db.writer() as session, session.begin():
        await session.execute(
            update(SigningKey).where(SigningKey.kid == next_kid).values(status="revoked")
        )
    fresh = asyncio.create_task(reload_keyring(container.rotation.keys, container.keyring))
    await asyncio.gather(stale, fresh)
    key = container.keyring.lookup(next_kid)
    assert key is not None
    assert key.status == "revoked"
    await container.engine.dispose()


async def test_database_errors_do_not_carry_parameters(
    make_container: Callable[..., Container],
) -> None:
    container = make_container()
    marker = "MARKER-sensitive-value-0123456789"
    async with container.db.writer() as session:
        for attempt in range(2):
            session.add(
                SigningKey(
                    kid=marker,
                    alg="RS256",
                    key_bits=2048,
                    status="retired",
                    public_jwk={},
                    private_key_encrypted=b"x",
                    created_at=container.clock.now(),
                )
            )
            if attempt == 0:
                await session.commit()
        with pytest.raises(IntegrityError) as excinfo:
            await session.commit()
    assert marker not in str(excinfo.value)
    await container.engine.dispose()
