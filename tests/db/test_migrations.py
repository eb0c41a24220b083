"""The models and the one migration agree, on the backend under test."""

from __future__ import annotations

import asyncio
from typing import Any

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

from auth_service.db.base import Base
from auth_service.db.migrate import alembic_config, head_revision, upgrade_to_head

TABLES = {
    "alembic_version",
    "audit_events",
    "audit_head",
    "audit_checkpoints",
    "webhook_endpoints",
    "webhook_deliveries",
    "clients",
    "password_reset_tokens",
    "email_verification_tokens",
    "invitations",
    "recovery_codes",
    "revoked_tokens",
    "refresh_tokens",
    "sessions",
    "signing_keys",
    "users",
}


def _diff(connection: Connection) -> list[Any]:
    context = MigrationContext.configure(connection, opts={"compare_type": True})
    return list(compare_metadata(context, Base.metadata))


def _tables(connection: Connection) -> set[str]:
    return set(inspect(connection).get_table_names())


async def test_autogenerate_finds_no_difference(database_url: str) -> None:
    engine = create_async_engine(database_url, poolclass=NullPool)
    try:
        async with engine.connect() as connection:
            assert await connection.run_sync(_diff) == []
            assert await connection.run_sync(_tables) == TABLES
    finally:
        await engine.dispose()


async def test_downgrade_and_upgrade_again(database_url: str) -> None:
    await asyncio.to_thread(command.downgrade, alembic_config(database_url), "base")
    engine = create_async_engine(database_url, poolclass=NullPool)
    try:
        async with engine.connect() as connection:
            assert await connection.run_sync(_tables) <= {"alembic_version"}
        await asyncio.to_thread(upgrade_to_head, database_url)
        async with engine.connect() as connection:
            assert await connection.run_sync(_tables) == TABLES
    finally:
        await engine.dispose()
    assert head_revision() == "0005"
