"""Engine and session factory, tuned for production pools (Postgres) or one SQLite file."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Mapping
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import Engine, Row
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import (
    AsyncConnection,
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.pool import NullPool
from sqlalchemy.sql import Executable

from auth_service.settings import Settings


def create_engine(settings: Settings) -> AsyncEngine:
    url = settings.database_url
    if settings.is_sqlite:
        path = settings.sqlite_path
        if path is not None:
            ensure_private_file(path)
        engine = create_async_engine(
            url,
            hide_parameters=True,  # no email, hash or token in an error or a log line
            poolclass=NullPool,
            connect_args={"timeout": settings.db_connect_timeout_seconds},
        )
        event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
        event.listen(engine.sync_engine, "begin", _sqlite_begin)
        return engine
    return create_async_engine(
        url, hide_parameters=True, **_pool_options(settings, max_overflow=settings.db_max_overflow)
    )


STATEMENT_LOCK_TIMEOUT_MS = 2000


def create_statement_engine(settings: Settings, engine: AsyncEngine) -> AsyncEngine:
    """Connections that run each statement as its own transaction (AUTOCOMMIT), for hot paths
    of one or two statements that are safe to run again (refresh rotation): no BEGIN or
    COMMIT round trip. On PostgreSQL a pool of its own, with no overflow (each checkout is
    held for one statement) and no ping before each checkout (SQLAlchemy pings a pooled
    connection with BEGIN, a statement and ROLLBACK, one round trip in autocommit: as many as
    the statement itself): ``Database.run`` replaces a connection the server dropped and runs
    the statement once more instead. On SQLite a view of ``engine``."""
    if settings.is_sqlite:
        return engine.execution_options(isolation_level="AUTOCOMMIT")
    options = {**_pool_options(settings, max_overflow=0), "pool_pre_ping": False}
    # A statement waits at most this long for a row lock (a session a logout holds): then it
    # fails (55P03, answered 503) and gives its connection back, instead of holding one of the
    # pool's few connections for the statement timeout while every other refresh queues.
    options["connect_args"]["server_settings"]["lock_timeout"] = str(STATEMENT_LOCK_TIMEOUT_MS)
    return create_async_engine(
        settings.database_url, hide_parameters=True, isolation_level="AUTOCOMMIT", **options
    )


def _pool_options(settings: Settings, *, max_overflow: int) -> dict[str, Any]:
    server_settings: dict[str, Any] = {"application_name": "auth-service"}
    if settings.db_statement_timeout_ms:
        server_settings["statement_timeout"] = str(settings.db_statement_timeout_ms)
    return {
        "pool_size": settings.db_pool_size,
        "max_overflow": max_overflow,
        "pool_timeout": settings.db_pool_timeout_seconds,
        "pool_recycle": settings.db_pool_recycle_seconds,
        "pool_pre_ping": settings.db_pool_pre_ping,
        "connect_args": {
            "timeout": settings.db_connect_timeout_seconds,
            "server_settings": server_settings,
        },
    }


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    # The driver's own transaction handling would not BEGIN before a SAVEPOINT (so releasing
    # one committed); SQLAlchemy's recipe: turn it off and emit BEGIN ourselves (below).
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute("PRAGMA busy_timeout=5000")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA journal_mode")
        mode = cursor.fetchone()
        if mode is None or str(mode[0]).lower() != "wal":
            # WAL lets readers run beside the one writer; the mode is stored in the file,
            # so only the first connection switches it (others may race: that is fine).
            with contextlib.suppress(Exception):
                cursor.execute("PRAGMA journal_mode=WAL")
    finally:
        cursor.close()


def ensure_private_file(path: Path) -> None:
    """Create the SQLite file 0600 (it holds password hashes and encrypted keys) before SQLite
    would create it 0644, and tighten one left readable by others. SQLite gives its -wal and
    -shm files the database file's mode."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(FileExistsError):
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600))
    for candidate in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
        with contextlib.suppress(FileNotFoundError):
            if candidate.stat().st_mode & 0o077:
                candidate.chmod(0o600)


_READ_ONLY = "auth_read_only"  # execution option of the reader's engine view


def _sqlite_begin(connection: Any) -> None:
    # A writer's IMMEDIATE takes the write lock up front: two writers queue (busy_timeout)
    # instead of deadlocking when both try to upgrade a read lock. A reader's deferred BEGIN
    # takes no write lock, so reads never wait behind (or block) a writer in WAL mode. An
    # AUTOCOMMIT connection gets no BEGIN: each statement is its own transaction (SQLAlchemy
    # would never COMMIT one begun here).
    options = connection.get_execution_options()
    if options.get("isolation_level") == "AUTOCOMMIT":
        return
    if options.get(_READ_ONLY):
        connection.exec_driver_sql("BEGIN")
    else:
        connection.exec_driver_sql("BEGIN IMMEDIATE")


def create_sessionmaker(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    """Sessions for work that writes (on SQLite: ``BEGIN IMMEDIATE``)."""
    return async_sessionmaker(engine, expire_on_commit=False)


def create_read_sessionmaker(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    """Sessions for reads only: a deferred BEGIN on SQLite (no write lock), a READ ONLY
    transaction on PostgreSQL (a write through it fails instead of happening)."""
    options: dict[str, Any] = {_READ_ONLY: True}
    if engine.dialect.name == "postgresql":
        options["postgresql_readonly"] = True
    return async_sessionmaker(engine.execution_options(**options), expire_on_commit=False)


@dataclass(frozen=True, slots=True)
class Database:
    """The ways to the database, handed to each use case once.

    ``transaction()`` writes: ``async with db.transaction() as session:`` commits at the
    block's end (on SQLite ``BEGIN IMMEDIATE``). ``read()`` only reads: a deferred BEGIN on
    SQLite (no write lock), ``READ ONLY`` on PostgreSQL. The Core connections are for hot
    paths that need no ORM: ``statements()`` runs each statement as its own transaction
    (AUTOCOMMIT: no BEGIN or COMMIT round trip), ``connection_transaction()`` is one
    transaction (on SQLite ``BEGIN IMMEDIATE``) that commits at the block's end.
    """

    writer: async_sessionmaker[AsyncSession]
    reader: async_sessionmaker[AsyncSession]
    engine: AsyncEngine
    statement_engine: AsyncEngine

    @classmethod
    def on(cls, engine: AsyncEngine, statement_engine: AsyncEngine | None = None) -> Database:
        """``statement_engine``: ``create_statement_engine``'s (default: ``engine`` in
        AUTOCOMMIT)."""
        return cls(
            create_sessionmaker(engine),
            create_read_sessionmaker(engine),
            engine,
            statement_engine or engine.execution_options(isolation_level="AUTOCOMMIT"),
        )

    async def dispose(self) -> None:
        await self.statement_engine.dispose()
        await self.engine.dispose()

    @property
    def is_postgresql(self) -> bool:
        return self.engine.dialect.name == "postgresql"

    def statements(self) -> AbstractAsyncContextManager[AsyncConnection]:
        return self.statement_engine.connect()

    async def run(self, statement: Executable, parameters: Mapping[str, Any]) -> Row[Any] | None:
        """``statement``'s first row (None without one), on a ``statements()`` connection.
        Its pool does not ping: a connection the server closed (a restart, an idle timeout)
        fails its statement as a disconnect, which SQLAlchemy invalidates (with the pool's
        older connections), and the statement runs once more on a new one. So it must be
        safe to run twice: a read, or a write whose second run sees what the first did."""
        for attempt in range(2):
            try:
                async with self.statements() as connection:
                    return (await connection.execute(statement, parameters)).first()
            except DBAPIError as exc:
                if attempt or not exc.connection_invalidated:
                    raise
        raise AssertionError("unreachable")

    def connection_transaction(self) -> AbstractAsyncContextManager[AsyncConnection]:
        return self.engine.begin()

    def transaction(self) -> AbstractAsyncContextManager[AsyncSession]:
        return self.writer.begin()

    def read(self) -> AsyncSession:
        return self.reader()


__all__ = [
    "Database",
    "Engine",
    "create_engine",
    "create_read_sessionmaker",
    "create_sessionmaker",
    "create_statement_engine",
    "ensure_private_file",
]
