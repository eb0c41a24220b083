"""Start-up refuses, with one clear line, what it cannot safely serve."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import pytest

from auth_service.app import create_app
from auth_service.container import Container, running
from auth_service.errors import ConfigurationError, KeyDecryptionError
from auth_service.services.keys import ensure_signing_keys
from auth_service.settings import Settings

OTHER_SECRET = "Zq" + "x9Lm3Pk7Rt2Wv5Yb8Nc1Hd4Jf6Gs0Ae_Ku-Io" * 2


async def test_wrong_secret_fails_startup_clearly(
    make_container: Callable[..., Container], make_settings: Callable[..., Settings]
) -> None:
    first = make_container()
    await ensure_signing_keys(first.rotation.keys)
    await first.engine.dispose()
    app = create_app(container=make_container(make_settings(key_encryption_secret=OTHER_SECRET)))
    with pytest.raises(KeyDecryptionError, match="does not decrypt signing key"):
        async with app.router.lifespan_context(app):
            pytest.fail("the app must not start")


async def test_unmigrated_database_fails_startup_clearly(
    make_container: Callable[..., Container], make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    empty = make_settings(database_url=f"sqlite+aiosqlite:///{tmp_path / 'empty.db'}")
    app = create_app(container=make_container(empty))
    with pytest.raises(ConfigurationError, match="run `auth-service migrate`"):
        async with app.router.lifespan_context(app):
            pytest.fail("the app must not start")


async def test_unreachable_database_fails_startup_clearly(
    make_container: Callable[..., Container], make_settings: Callable[..., Settings]
) -> None:
    unreachable = make_settings(
        database_url="postgresql+asyncpg://postgres@127.0.0.1:1/auth", db_connect_timeout_seconds=1
    )
    app = create_app(container=make_container(unreachable))
    with pytest.raises(ConfigurationError, match="cannot reach the database"):
        async with app.router.lifespan_context(app):
            pytest.fail("the app must not start")


async def test_two_instances_starting_together_share_one_key_pair(
    make_container: Callable[..., Container],
) -> None:
    apps = [create_app(container=make_container()) for _ in range(3)]

    async def start_and_report(app_index: int) -> tuple[str | None, bytes]:
        app = apps[app_index]
        async with app.router.lifespan_context(app):
            ring = app.state.container.keyring
            return (ring.signing.kid if ring.signing else None), ring.snapshot.jwks.body

    results = await asyncio.gather(*(start_and_report(i) for i in range(3)))
    assert len({kid for kid, _ in results}) == 1 and results[0][0] is not None
    assert len({body for _, body in results}) == 1


async def test_running_without_serve_starts_nothing_and_always_closes(
    make_settings: Callable[..., Settings],
) -> None:
    """What the CLI's commands use: no follower, no scheduler job; torn down even on error."""
    seen: list[Container] = []

    async def failing_command() -> None:
        async with running(make_settings(scheduler_enabled=True)) as container:
            seen.append(container)
            assert container.tasks == [] and container.keyring.signing is None
            assert container.scheduler is not None and not container.scheduler._scheduler.running
            raise RuntimeError("the command failed")

    with pytest.raises(RuntimeError, match="the command failed"):
        await failing_command()
    assert seen[0].password_policy._closed
