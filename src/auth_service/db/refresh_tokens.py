"""Core statements of refresh rotation (the hot path of ``services/refresh.py``): no ORM.

The statements are built once and run with bound parameters. Who wins a rotation is decided
by the database, in one statement: the token row is used up only if it is still unused, not
revoked and not expired, and its session is live and its user enabled. On PostgreSQL that
statement also stamps the session and inserts the successor (one round trip, AUTOCOMMIT);
on SQLite, which has no data-modifying CTE, the three statements run in one ``BEGIN
IMMEDIATE`` transaction, the first of them deciding.

Lock order on PostgreSQL is the session row, then the token row: the order in which every
revocation (``revoke_family``) takes them, so a logout racing a refresh cannot deadlock.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import cast

from sqlalchemy import Table, Uuid, bindparam, exists, false, insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession
from sqlalchemy.sql.dml import ReturningInsert

from auth_service.db.base import UTCDateTime
from auth_service.db.models import RefreshToken, Session, User
from auth_service.db.session import Database

# Parameter names start with ``p_``: SQLAlchemy would add one named like a column of an
# UPDATE's table to its SET clause.
_TOKENS = cast(Table, RefreshToken.__table__)
_SESSIONS = cast(Table, Session.__table__)
_USERS = cast(Table, User.__table__)


@dataclass(frozen=True, slots=True)
class RefreshState:
    """A refresh token row with what a rotation needs of its session and user."""

    token_id: uuid.UUID
    session_id: uuid.UUID
    user_id: uuid.UUID
    roles: list[str]
    amr: list[str]
    expires_at: datetime
    used_at: datetime | None
    revoked_at: datetime | None
    session_expires_at: datetime
    session_revoked_at: datetime | None
    disabled: bool

    def is_dead(self, now: datetime) -> bool:
        """Revoked or expired (the token or its session), or the user is disabled: refused
        whether or not the token was used (a used token of a dead session is not reuse)."""
        return (
            self.session_revoked_at is not None
            or self.revoked_at is not None
            or now >= self.expires_at
            or now >= self.session_expires_at
            or self.disabled
        )


@dataclass(frozen=True, slots=True)
class Successor:
    token_id: uuid.UUID
    token_hash: str
    used_at: datetime | None
    revoked_at: datetime | None

    @property
    def is_unused(self) -> bool:
        return self.used_at is None and self.revoked_at is None


@dataclass(frozen=True, slots=True)
class NewToken:
    """The successor a rotation inserts (its raw token never reaches the database)."""

    token_id: uuid.UUID
    token_hash: str
    expires_at: datetime


_READ_STATE = (  # the columns in RefreshState's order
    select(
        _TOKENS.c.id,
        _TOKENS.c.session_id,
        _SESSIONS.c.user_id,
        _USERS.c.roles,
        _SESSIONS.c.amr,
        _TOKENS.c.expires_at,
        _TOKENS.c.used_at,
        _TOKENS.c.revoked_at,
        _SESSIONS.c.expires_at,
        _SESSIONS.c.revoked_at,
        _USERS.c.disabled,
    )
    .select_from(_TOKENS)
    .join(_SESSIONS, _SESSIONS.c.id == _TOKENS.c.session_id)
    .join(_USERS, _USERS.c.id == _SESSIONS.c.user_id)
    .where(_TOKENS.c.token_hash == bindparam("p_token_hash"))
)

# Through the session index (there is none on parent_id): one token's successor, if any.
_READ_SUCCESSOR = select(
    _TOKENS.c.id, _TOKENS.c.token_hash, _TOKENS.c.used_at, _TOKENS.c.revoked_at
).where(
    _TOKENS.c.session_id == bindparam("p_session_id"),
    _TOKENS.c.parent_id == bindparam("p_parent_id"),
)

_LIVE_USER = exists().where(_USERS.c.id == _SESSIONS.c.user_id, _USERS.c.disabled == false())
_LIVE_SESSION = (
    _SESSIONS.c.id == bindparam("p_session_id"),
    _SESSIONS.c.revoked_at.is_(None),
    _SESSIONS.c.expires_at > bindparam("p_now"),
    _LIVE_USER,
)
_UNUSED_TOKEN = (
    _TOKENS.c.id == bindparam("p_token_id"),
    _TOKENS.c.used_at.is_(None),
    _TOKENS.c.revoked_at.is_(None),
    _TOKENS.c.expires_at > bindparam("p_now"),
)
_CHILD_COLUMNS = ["id", "session_id", "parent_id", "token_hash", "created_at", "expires_at"]


def _rotate_postgresql() -> ReturningInsert[tuple[uuid.UUID]]:
    # WITH touched (the session, locked first), used (the token, only if the session was
    # touched) INSERT the successor FROM used. Every data-modifying CTE runs to completion,
    # so a statement that loses the token still stamps the live session's last_used_at: its
    # request was a use of the session at that time too.
    touched = (
        update(_SESSIONS)
        .where(*_LIVE_SESSION)
        .values(last_used_at=bindparam("p_now"))
        .returning(_SESSIONS.c.id)
        .cte("touched")
    )
    used = (
        update(_TOKENS)
        .where(*_UNUSED_TOKEN, _TOKENS.c.session_id.in_(select(touched.c.id)))
        .values(used_at=bindparam("p_now"))
        .returning(_TOKENS.c.id, _TOKENS.c.session_id)
        .cte("used")
    )
    child = select(
        bindparam("p_child_id", type_=Uuid()),
        used.c.session_id,
        used.c.id,
        bindparam("p_child_hash", type_=_TOKENS.c.token_hash.type),
        bindparam("p_now", type_=UTCDateTime()),
        bindparam("p_child_expires_at", type_=UTCDateTime()),
    )
    return insert(_TOKENS).from_select(_CHILD_COLUMNS, child).returning(_TOKENS.c.id)


_ROTATE_POSTGRESQL = _rotate_postgresql()
_USE_SQLITE = (
    update(_TOKENS)
    .where(
        *_UNUSED_TOKEN,
        _TOKENS.c.session_id.in_(select(_SESSIONS.c.id).where(*_LIVE_SESSION)),
    )
    .values(used_at=bindparam("p_now"))
    .returning(_TOKENS.c.id)
)
_TOUCH_SQLITE = (
    update(_SESSIONS)
    .where(_SESSIONS.c.id == bindparam("p_session_id"))
    .values(last_used_at=bindparam("p_now"))
)
_INSERT_CHILD = insert(_TOKENS).values(
    id=bindparam("p_child_id"),
    session_id=bindparam("p_session_id"),
    parent_id=bindparam("p_token_id"),
    token_hash=bindparam("p_child_hash"),
    created_at=bindparam("p_now"),
    expires_at=bindparam("p_child_expires_at"),
)


async def read_refresh_state(db: Database, token_hash: str) -> RefreshState | None:
    """The token's row joined with its session and user (one statement, no transaction)."""
    row = await db.run(_READ_STATE, {"p_token_hash": token_hash})
    if row is None:
        return None
    return RefreshState(*tuple(row))


async def read_successor(db: Database, state: RefreshState) -> Successor | None:
    parameters = {"p_session_id": state.session_id, "p_parent_id": state.token_id}
    row = await db.run(_READ_SUCCESSOR, parameters)
    return None if row is None else Successor(*tuple(row))


async def use_refresh_token(
    db: Database, state: RefreshState, child: NewToken, now: datetime
) -> bool:
    """Use the token up and insert ``child`` as its successor, if the token is still
    unused, unrevoked and unexpired, its session live and its user enabled; False (nothing
    written) otherwise, e.g. when a concurrent rotation won."""
    parameters = {
        "p_token_id": state.token_id,
        "p_session_id": state.session_id,
        "p_now": now,
        "p_child_id": child.token_id,
        "p_child_hash": child.token_hash,
        "p_child_expires_at": child.expires_at,
    }
    if db.is_postgresql:
        # Safe to run twice (Database.run): a second run after a first that committed finds
        # the token used and inserts nothing; the caller then settles from the database.
        return await db.run(_ROTATE_POSTGRESQL, parameters) is not None
    async with db.connection_transaction() as connection:
        return await _use_sqlite(connection, parameters)


async def _use_sqlite(connection: AsyncConnection, parameters: dict[str, object]) -> bool:
    if (await connection.execute(_USE_SQLITE, parameters)).first() is None:
        return False
    await connection.execute(_TOUCH_SQLITE, parameters)
    await connection.execute(_INSERT_CHILD, parameters)
    return True


async def revoke_family(
    db: AsyncSession, session_id: uuid.UUID, now: datetime, *, reason: str
) -> bool:
    """Revoke the session and every token of it, in the caller's transaction; True when
    this call ended the session (False: it was revoked already, and keeps its reason)."""
    ended = await db.execute(
        update(Session)
        .where(Session.id == session_id, Session.revoked_at.is_(None))
        .values(revoked_at=now, revoked_reason=reason)
        .returning(Session.id)
    )
    first = ended.first() is not None
    await db.execute(
        update(RefreshToken)
        .where(RefreshToken.session_id == session_id, RefreshToken.revoked_at.is_(None))
        .values(revoked_at=now)
    )
    return first
