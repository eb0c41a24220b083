"""Rotating the master secret: replicas on old+new keep working, ``keys rewrap`` moves every
sealed value and the audit chain to the new secret (once, idempotently, all or nothing), and
then the new secret alone opens everything (SECURITY.md's procedure)."""

from __future__ import annotations

import secrets
import uuid
from collections.abc import Callable

import pytest
from pydantic import SecretStr
from sqlalchemy import text

from auth_service.clock import FrozenClock
from auth_service.container import Container
from auth_service.crypto.envelope import fingerprint
from auth_service.errors import ConfigurationError
from auth_service.services.rewrap import rewrap
from auth_service.services.webhooks import sealer as webhook_sealer
from auth_service.settings import Settings
from tests.support.mfa import code_at, enable_totp, password_step, second_step
from tests.support.rotation import admin_headers
from tests.support.service import Service, started

OLD = secrets.token_urlsafe(64)
NEW = secrets.token_urlsafe(64)


def with_secrets(make_settings: Callable[..., Settings], current: str, *others: str) -> Settings:
    settings = make_settings(key_encryption_secret=SecretStr(current))
    if others:
        settings = settings.model_copy(
            update={"key_decryption_secrets": SecretStr(",".join(others))}
        )
    return settings


async def _seed(service: Service, clock: FrozenClock) -> str:
    """A TOTP user, a webhook endpoint, audit events; the TOTP secret."""
    mfa = await enable_totp(service, clock)
    admin = await admin_headers(service)
    hook = await service.client.post(
        "/admin/webhooks",
        json={"url": "http://127.0.0.1:9/hook", "event_types": ["user.disabled"]},
        headers=admin,
    )
    assert hook.status_code == 201, hook.text
    return mfa.secret


async def _usable(service: Service, clock: FrozenClock, totp_secret: str) -> None:
    """TOTP opens (a login with a code), the signing key opens (tokens are issued and
    validate), webhook secrets open, the audit chain verifies."""
    clock.advance(30)
    mfa_token = await password_step(service, "alice@example.com")
    done = await second_step(service, mfa_token, code_at(totp_secret, clock))
    assert done.status_code == 200, done.text
    verdict = await service.container.validator.validate(done.json()["access_token"])
    assert verdict.valid, verdict
    envelope = webhook_sealer(service.container.settings.secret_values())
    async with service.container.engine.connect() as connection:
        rows = (
            await connection.execute(text("SELECT id, secret_sealed FROM webhook_endpoints"))
        ).all()
    assert rows
    for endpoint_id, sealed in rows:
        opened = envelope.open(bytes(sealed), associated_data=str(uuid.UUID(str(endpoint_id))))
        assert opened.startswith(b"whsec_")
    assert (await service.container.audit.verify()).ok


async def _sealed_fingerprints(container: Container) -> set[bytes]:
    async with container.engine.connect() as connection:
        values = [
            *(await connection.execute(text("SELECT private_key_encrypted FROM signing_keys"))),
            *(
                await connection.execute(
                    text("SELECT totp_secret_encrypted FROM users WHERE mfa_enabled")
                )
            ),
            *(await connection.execute(text("SELECT secret_sealed FROM webhook_endpoints"))),
        ]
    return {bytes(row[0])[1:9] for row in values}


async def test_old_then_both_then_rewrap_then_new_alone(
    make_container: Callable[..., Container],
    make_settings: Callable[..., Settings],
    clock: FrozenClock,
) -> None:
    async with started(make_container(with_secrets(make_settings, OLD))) as before:
        totp_secret = await _seed(before, clock)
        assert await _sealed_fingerprints(before.container) == {fingerprint(OLD)}
    # Replicas with the new secret and the old one accepted: everything works, mixed.
    both = with_secrets(make_settings, NEW, OLD)
    async with started(make_container(both)) as during:
        await _usable(during, clock, totp_secret)
        report = await rewrap(during.container.db, both.secret_values(), during.container.audit)
        assert (report.signing_keys, report.totp_secrets, report.webhook_secrets) == (2, 1, 1)
        assert report.audit_rows > 5
        again = await rewrap(during.container.db, both.secret_values(), during.container.audit)
        assert (again.signing_keys, again.totp_secrets, again.webhook_secrets) == (0, 0, 0)
        await _usable(during, clock, totp_secret)
        assert await _sealed_fingerprints(during.container) == {fingerprint(NEW)}
    # The new secret alone opens everything; the old one alone opens nothing.
    async with started(make_container(with_secrets(make_settings, NEW))) as after:
        await _usable(after, clock, totp_secret)
    with pytest.raises(ConfigurationError):
        async with started(make_container(with_secrets(make_settings, OLD))):
            pass


async def test_a_broken_chain_or_an_unopenable_value_changes_nothing(
    make_container: Callable[..., Container],
    make_settings: Callable[..., Settings],
    clock: FrozenClock,
) -> None:
    async with started(make_container(with_secrets(make_settings, OLD))) as before:
        await _seed(before, clock)
    both = with_secrets(make_settings, NEW, OLD)
    async with started(make_container(both)) as during:
        container = during.container
        async with container.engine.begin() as connection:
            await connection.execute(text("UPDATE audit_events SET subject = 'x' WHERE id = 3"))
        with pytest.raises(ConfigurationError, match="broken at id 3"):
            await rewrap(container.db, both.secret_values(), container.audit)
        assert await _sealed_fingerprints(container) == {fingerprint(OLD)}
        # Without the old secret nothing opens: refused, naming what, nothing changed.
        with pytest.raises(ConfigurationError, match="AUTH_KEY_DECRYPTION_SECRETS"):
            await rewrap(container.db, [NEW], container.audit)
        assert await _sealed_fingerprints(container) == {fingerprint(OLD)}
