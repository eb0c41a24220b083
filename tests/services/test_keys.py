"""Signing keys at rest and their first creation (the security properties of issue 2)."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Callable
from datetime import timedelta

import pytest
from sqlalchemy import select, text, update

from auth_service.container import Container
from auth_service.crypto.envelope import Envelope, EnvelopeError
from auth_service.db.models import SigningKey
from auth_service.errors import KeyDecryptionError
from auth_service.services.keys import (
    KEYS_LOCK,
    ensure_signing_keys,
    load_snapshot,
    signing_envelope,
)
from auth_service.settings import Settings
from auth_service.store.base import Store


async def _rows(container: Container) -> list[SigningKey]:
    async with container.db.writer() as session:
        return list((await session.scalars(select(SigningKey))).all())


async def test_first_start_creates_one_active_and_one_next_key(
    make_container: Callable[..., Container],
) -> None:
    container = make_container()
    assert await ensure_signing_keys(container.rotation.keys) is True
    rows = await _rows(container)
    assert sorted(row.status for row in rows) == ["active", "next"]
    assert all(row.alg == "RS256" and row.key_bits == 2048 for row in rows)
    assert await ensure_signing_keys(container.rotation.keys) is False  # idempotent
    assert len(await _rows(container)) == 2
    await container.engine.dispose()


async def test_private_key_column_never_holds_plaintext(
    make_container: Callable[..., Container],
) -> None:
    container = make_container()
    await ensure_signing_keys(container.rotation.keys)
    async with container.engine.connect() as connection:
        raw = (
            await connection.execute(text("SELECT private_key_encrypted FROM signing_keys"))
        ).all()
    assert len(raw) == 2
    for (blob,) in raw:
        data = bytes(blob)
        assert b"PRIVATE KEY" not in data and b"-----BEGIN" not in data
        assert b"\x30\x82" not in data[:16]  # not DER either
        assert data[:1] == b"\x02"  # the envelope's version byte (with the secret's fingerprint)
    await container.engine.dispose()


async def test_ciphertext_moved_to_another_key_row_fails_to_decrypt(
    make_container: Callable[..., Container],
) -> None:
    container = make_container()
    await ensure_signing_keys(container.rotation.keys)
    rows = await _rows(container)
    active = next(row for row in rows if row.status == "active")
    other = next(row for row in rows if row.status == "next")
    async with container.db.writer() as session, session.begin():
        await session.execute(
            update(SigningKey)
            .where(SigningKey.kid == active.kid)
            .values(private_key_encrypted=other.private_key_encrypted)
        )
    with pytest.raises(KeyDecryptionError, match=active.kid):
        await load_snapshot(container.rotation.keys)
    await container.engine.dispose()


async def test_wrong_secret_is_a_clear_configuration_error(
    make_container: Callable[..., Container], make_settings: Callable[..., Settings]
) -> None:
    first = make_container()
    await ensure_signing_keys(first.rotation.keys)
    await first.engine.dispose()
    other_secret = "Zq" + "x9Lm3Pk7Rt2Wv5Yb8Nc1Hd4Jf6Gs0Ae_Ku-Io" * 2
    wrong = make_container(make_settings(key_encryption_secret=other_secret))
    with pytest.raises(KeyDecryptionError) as excinfo:
        await load_snapshot(wrong.rotation.keys)
    message = str(excinfo.value)
    assert "AUTH_KEY_ENCRYPTION_SECRET does not decrypt" in message
    assert "\n" not in message and other_secret not in message
    await wrong.engine.dispose()


async def test_concurrent_first_starts_create_exactly_one_pair(
    make_container: Callable[..., Container],
) -> None:
    containers = [make_container() for _ in range(5)]
    created = await asyncio.gather(*(ensure_signing_keys(c.rotation.keys) for c in containers))
    assert created.count(True) == 1
    assert sorted(row.status for row in await _rows(containers[0])) == ["active", "next"]
    for container in containers:
        await container.engine.dispose()


class _LockLostOnceStore:
    """Wraps the real store; the first time keys are about to commit, the lock has expired and
    another holder took it (and then let it go)."""

    def __init__(self, inner: Store) -> None:
        self.inner = inner
        self.stolen = 0

    def __getattr__(self, name: str) -> object:
        return getattr(self.inner, name)

    async def extend_lock(self, name: str, token: str, ttl: timedelta) -> bool:
        if self.stolen == 0:
            self.stolen += 1
            await self.inner.release_lock(name, token)
            thief = await self.inner.acquire_lock(name, ttl)
            assert thief is not None
            extended = await self.inner.extend_lock(name, token, ttl)
            await self.inner.release_lock(name, thief)
            return extended
        return await self.inner.extend_lock(name, token, ttl)


async def test_a_lock_lost_before_commit_writes_nothing_then_retries(
    make_container: Callable[..., Container], store: Store
) -> None:
    container = make_container()
    lossy = _LockLostOnceStore(store)
    created = await ensure_signing_keys(dataclasses.replace(container.rotation.keys, store=lossy))
    assert lossy.stolen == 1
    assert created is True  # the second attempt created them: the first wrote nothing
    assert sorted(row.status for row in await _rows(container)) == ["active", "next"]
    await container.engine.dispose()


async def test_an_instance_waits_while_another_holds_the_lock(
    make_container: Callable[..., Container], store: Store
) -> None:
    holder = make_container()
    token = await store.acquire_lock(KEYS_LOCK, timedelta(seconds=30))
    assert token is not None
    waiter = asyncio.create_task(ensure_signing_keys(holder.rotation.keys))
    await asyncio.sleep(0.3)
    assert not waiter.done()  # it does not create keys behind the holder's back
    await store.release_lock(KEYS_LOCK, token)
    assert await asyncio.wait_for(waiter, timeout=5) is True
    assert len(await _rows(holder)) == 2
    await holder.engine.dispose()


def test_the_envelope_purpose_is_bound(settings: Settings) -> None:
    envelope = signing_envelope(settings.secret_value())
    sealed = envelope.seal(b"x", associated_data="kid")
    with pytest.raises(EnvelopeError):
        Envelope(settings.secret_value(), purpose="totp").open(sealed, associated_data="kid")
