"""Refresh rotation under races and failures: the database picks one winner, a rotation that
finds the token changed under it settles from what the database holds, the grace pair is the
winner's (stored before the commit), and the path's statements stay few.

Two containers on one database and store are two instances (two pools, so two connections
on PostgreSQL). Hooks run between the read and the rotation statement
(``services.refresh.use_refresh_token``) to make an interleaving happen every time.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from datetime import datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import event, func, select, text, update
from sqlalchemy.exc import DBAPIError

from auth_service.container import Container
from auth_service.crypto.passwords import hash_opaque
from auth_service.db.models import AuditEvent, RefreshToken, Session, User
from auth_service.db.refresh_tokens import NewToken, RefreshState
from auth_service.db.session import Database
from auth_service.errors import InvalidRefreshTokenError, RefreshTokenReusedError
from auth_service.services import refresh as refresh_module
from auth_service.services.token_pairs import TokenPair
from auth_service.settings import Settings
from tests.support.backends import is_postgres
from tests.support.http import client_headers, register_and_login, validate
from tests.support.service import Service, started

Rotation = Callable[[Database, RefreshState, NewToken, datetime], Awaitable[bool]]
REAL_ROTATION: Rotation = refresh_module.use_refresh_token


def _before_rotation(
    monkeypatch: pytest.MonkeyPatch, step: Callable[[], Awaitable[None]]
) -> list[bool]:
    """Run ``step`` once, after the first refresh has read its token and stored its pair and
    before its rotation statement; returns the outcomes of the rotation statements."""
    outcomes: list[bool] = []
    pending = [step]

    async def rotation(db: Database, state: RefreshState, child: NewToken, now: datetime) -> bool:
        if pending:
            await pending.pop()()
        won = await REAL_ROTATION(db, state, child, now)
        outcomes.append(won)
        return won

    monkeypatch.setattr(refresh_module, "use_refresh_token", rotation)
    return outcomes


async def _rows(container: Container, token: str) -> tuple[RefreshToken, list[RefreshToken]]:
    """The token's row and its successors' (there is at most one)."""
    async with container.db.writer() as db:
        row = (
            await db.scalars(
                select(RefreshToken).where(RefreshToken.token_hash == hash_opaque(token))
            )
        ).one()
        children = (
            await db.scalars(select(RefreshToken).where(RefreshToken.parent_id == row.id))
        ).all()
    return row, list(children)


async def _grace_keys(container: Container, token: str) -> list[str]:
    entries = await container.store.scan(f"refresh-grace:{hash_opaque(token)}:")
    return [key for key, _value, _ttl in entries]


def _outcome(result: TokenPair | BaseException) -> str:
    if isinstance(result, TokenPair):
        return result.refresh_token
    if isinstance(result, (InvalidRefreshTokenError, RefreshTokenReusedError)):
        return type(result).__name__
    raise result


async def test_concurrent_rotations_on_two_instances_mint_one_pair(
    make_container: Callable[..., Container],
) -> None:
    async with started(make_container()) as a, started(make_container()) as b:
        for round_ in range(4):
            user = await register_and_login(a, f"racer{round_}@example.com")
            token = user.pair["refresh_token"]
            results = await asyncio.gather(
                *((a if i % 2 else b).container.sessions.refresh(token) for i in range(8)),
                return_exceptions=True,
            )
            outcomes = {_outcome(result) for result in results}
            pairs = {result for result in results if isinstance(result, TokenPair)}
            assert len(pairs) == 1, outcomes  # one pair, given to every request that got one
            assert outcomes <= {next(iter(pairs)).refresh_token, "InvalidRefreshTokenError"}
            _row, children = await _rows(a.container, token)
            assert [child.token_hash for child in children] == [
                hash_opaque(next(iter(pairs)).refresh_token)
            ]
            # The family lives on: the winner's successor rotates.
            await b.container.sessions.refresh(next(iter(pairs)).refresh_token)


async def test_a_rotation_that_loses_the_race_answers_the_winners_pair(
    make_container: Callable[..., Container], monkeypatch: pytest.MonkeyPatch
) -> None:
    async with started(make_container()) as a, started(make_container()) as b:
        user = await register_and_login(a)
        token = user.pair["refresh_token"]
        won: list[TokenPair] = []

        async def b_rotates_first() -> None:
            won.append(await b.container.sessions.refresh(token))

        outcomes = _before_rotation(monkeypatch, b_rotates_first)
        lost = await a.container.sessions.refresh(token)
        assert outcomes == [True, False]  # b's statement won, a's found the token used
        assert lost == won[0]
        _row, children = await _rows(a.container, token)
        assert [child.token_hash for child in children] == [hash_opaque(won[0].refresh_token)]
        # a's own pair is in the store too, under a successor the database never held.
        assert len(await _grace_keys(a.container, token)) == 2
        assert await a.container.sessions.refresh(token) == won[0]
        assert await b.container.sessions.refresh(token) == won[0]


async def _set_disabled_flag(container: Container, user_id: str, disabled: bool) -> None:
    """Only the flag (``accounts.set_disabled`` also revokes the user's sessions)."""
    async with container.db.transaction() as db:
        await db.execute(
            update(User).where(User.id == uuid.UUID(user_id)).values(disabled=disabled)
        )


async def test_a_user_disabled_after_the_read_is_refused_and_nothing_is_used(
    service: Service, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The rotation statement itself refuses a disabled user (the session is still live)."""
    user = await register_and_login(service)

    async def disable() -> None:
        await _set_disabled_flag(service.container, user.user_id, True)

    outcomes = _before_rotation(monkeypatch, disable)
    with pytest.raises(InvalidRefreshTokenError):
        await service.container.sessions.refresh(user.pair["refresh_token"])
    assert outcomes == [False]
    row, children = await _rows(service.container, user.pair["refresh_token"])
    assert row.used_at is None and row.revoked_at is None and children == []
    with pytest.raises(InvalidRefreshTokenError):
        await service.container.sessions.refresh(user.pair["refresh_token"])


async def test_a_user_disabled_between_issue_and_refresh_is_refused(service: Service) -> None:
    user = await register_and_login(service)
    await service.container.accounts.set_disabled(uuid.UUID(user.user_id), True)
    with pytest.raises(InvalidRefreshTokenError):
        await service.container.sessions.refresh(user.pair["refresh_token"])
    await service.container.accounts.set_disabled(uuid.UUID(user.user_id), False)
    # The disable ended the session for good: enabling the user does not bring it back.
    with pytest.raises(InvalidRefreshTokenError):
        await service.container.sessions.refresh(user.pair["refresh_token"])
    row, children = await _rows(service.container, user.pair["refresh_token"])
    assert row.used_at is None and children == []


async def test_a_user_disabled_and_enabled_during_a_rotation_is_refused_once(
    service: Service, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The statement saw the user disabled; the second read sees the token unused and live
    again: the answer is a refusal (never a retry loop), and the token still works after."""
    user = await register_and_login(service)
    token = user.pair["refresh_token"]

    async def rotation(db: Database, state: RefreshState, child: NewToken, now: datetime) -> bool:
        await _set_disabled_flag(service.container, user.user_id, True)
        won = await REAL_ROTATION(db, state, child, now)
        await _set_disabled_flag(service.container, user.user_id, False)
        return won

    monkeypatch.setattr(refresh_module, "use_refresh_token", rotation)
    with pytest.raises(InvalidRefreshTokenError):
        await service.container.sessions.refresh(token)
    monkeypatch.setattr(refresh_module, "use_refresh_token", REAL_ROTATION)
    row, children = await _rows(service.container, token)
    assert row.used_at is None and children == []
    assert isinstance(await service.container.sessions.refresh(token), TokenPair)


async def test_a_session_revoked_after_the_read_is_refused(
    service: Service, monkeypatch: pytest.MonkeyPatch
) -> None:
    user = await register_and_login(service)
    token = user.pair["refresh_token"]
    row, _children = await _rows(service.container, token)

    async def log_out() -> None:
        await service.container.sessions.delete(
            user_id=uuid.UUID(user.user_id), session_id=row.session_id
        )

    outcomes = _before_rotation(monkeypatch, log_out)
    with pytest.raises(InvalidRefreshTokenError):
        await service.container.sessions.refresh(token)
    assert outcomes == [False]
    row, children = await _rows(service.container, token)
    assert row.used_at is None and row.revoked_at is not None and children == []


async def test_a_rotation_that_fails_before_its_commit_leaves_the_token_unused(
    service: Service, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The process dies (here: the statement fails) after the store write, before the
    commit: the token is unused, and its next use rotates with a pair of its own."""
    user = await register_and_login(service)
    token = user.pair["refresh_token"]

    async def dies(db: Database, state: RefreshState, child: NewToken, now: datetime) -> bool:
        raise ConnectionResetError("the database went away")

    monkeypatch.setattr(refresh_module, "use_refresh_token", dies)
    with pytest.raises(ConnectionResetError):
        await service.container.sessions.refresh(token)
    monkeypatch.setattr(refresh_module, "use_refresh_token", REAL_ROTATION)
    row, children = await _rows(service.container, token)
    assert row.used_at is None and children == []
    assert len(await _grace_keys(service.container, token)) == 1  # nobody will read it
    pair = await service.container.sessions.refresh(token)
    _row, children = await _rows(service.container, token)
    assert [child.token_hash for child in children] == [hash_opaque(pair.refresh_token)]
    service.container.clock.advance(5)
    assert await service.container.sessions.refresh(token) == pair


async def test_an_answer_lost_after_the_commit_is_given_again_within_grace(
    service: Service, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The rotation committed and the answer never left (the process died): a retry within
    the grace period gets the pair that rotation minted, whose refresh token is the one the
    database holds."""
    user = await register_and_login(service)
    token = user.pair["refresh_token"]

    async def commits_then_dies(
        db: Database, state: RefreshState, child: NewToken, now: datetime
    ) -> bool:
        assert await REAL_ROTATION(db, state, child, now)
        raise ConnectionResetError("the answer was lost")

    monkeypatch.setattr(refresh_module, "use_refresh_token", commits_then_dies)
    with pytest.raises(ConnectionResetError):
        await service.container.sessions.refresh(token)
    monkeypatch.setattr(refresh_module, "use_refresh_token", REAL_ROTATION)
    service.container.clock.advance(3)
    again = await service.container.sessions.refresh(token)
    _row, children = await _rows(service.container, token)
    assert [child.token_hash for child in children] == [hash_opaque(again.refresh_token)]
    assert isinstance(await service.container.sessions.refresh(again.refresh_token), TokenPair)


async def test_concurrent_replays_after_grace_revoke_the_session_once(
    make_container: Callable[..., Container],
) -> None:
    async with started(make_container()) as a, started(make_container()) as b:
        user = await register_and_login(a)
        headers = await client_headers(a)
        rotated = await a.container.sessions.refresh(user.pair["refresh_token"])
        a.container.clock.advance(11)
        results = await asyncio.gather(
            *(
                (a if i % 2 else b).container.sessions.refresh(user.pair["refresh_token"])
                for i in range(6)
            ),
            return_exceptions=True,
        )
        outcomes = sorted(_outcome(result) for result in results)
        assert outcomes.count("RefreshTokenReusedError") == 1, outcomes
        assert set(outcomes) == {"RefreshTokenReusedError", "InvalidRefreshTokenError"}
        async with a.container.db.writer() as db:
            audits = await db.scalar(
                select(func.count())
                .select_from(AuditEvent)
                .where(AuditEvent.type == "refresh.reuse_detected")
            )
            session = (await db.scalars(select(Session))).one()
        assert audits == 1
        assert session.revoked_reason == "refresh_token_reused"
        verdict = await validate(b, rotated.access_token, headers)
        assert verdict == {"valid": False, "error": "session_revoked"}
        with pytest.raises(InvalidRefreshTokenError):
            await b.container.sessions.refresh(rotated.refresh_token)


async def test_without_a_grace_period_no_pair_is_kept_and_a_replay_is_reuse(
    make_container: Callable[..., Container], make_settings: Callable[..., Settings]
) -> None:
    settings = make_settings(refresh_reuse_grace_seconds=0)
    async with started(make_container(settings)) as service:
        user = await register_and_login(service)
        await service.container.sessions.refresh(user.pair["refresh_token"])
        assert await _grace_keys(service.container, user.pair["refresh_token"]) == []
        with pytest.raises(RefreshTokenReusedError):
            await service.container.sessions.refresh(user.pair["refresh_token"])


async def test_a_logout_racing_refreshes_never_deadlocks(
    make_container: Callable[..., Container],
) -> None:
    """Rotation takes the session row before the token row, as every revocation does."""
    async with started(make_container()) as a, started(make_container()) as b:
        for round_ in range(6):
            user = await register_and_login(a, f"leaver{round_}@example.com")
            row, _children = await _rows(a.container, user.pair["refresh_token"])
            logout = b.container.sessions.delete(
                user_id=uuid.UUID(user.user_id), session_id=row.session_id
            )
            results = await asyncio.gather(
                a.container.sessions.refresh(user.pair["refresh_token"]),
                logout,
                b.container.sessions.refresh(user.pair["refresh_token"]),
                return_exceptions=True,
            )
            for result in results:
                if isinstance(result, BaseException):
                    assert isinstance(result, InvalidRefreshTokenError), repr(result)


@contextmanager
def _statements(database: Database) -> Iterator[list[tuple[str, Any]]]:
    """The statements sent on either engine, each with whether its connection autocommits."""
    seen: list[tuple[str, Any]] = []

    def record(connection: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        autocommit = getattr(connection.connection.dbapi_connection, "autocommit", None)
        seen.append((" ".join(statement.split()[:3]), autocommit))

    engines = [database.engine.sync_engine]
    if database.statement_engine.sync_engine.pool is not database.engine.sync_engine.pool:
        engines.append(database.statement_engine.sync_engine)  # not a view (its events)
    for engine in engines:
        event.listen(engine, "before_cursor_execute", record)
    try:
        yield seen
    finally:
        for engine in engines:
            event.remove(engine, "before_cursor_execute", record)


async def test_a_first_use_is_one_read_one_store_write_and_one_decisive_statement(
    service: Service, monkeypatch: pytest.MonkeyPatch
) -> None:
    user = await register_and_login(service)
    store = service.container.store
    real_put = store.put
    order: list[str] = []

    async def put(key: str, value: str, ttl: timedelta) -> None:
        order.append(f"store {key.split(':')[0]}")
        await real_put(key, value, ttl)

    monkeypatch.setattr(store, "put", put)
    with _statements(service.container.db) as seen:

        async def rotation(
            db: Database, state: RefreshState, child: NewToken, now: datetime
        ) -> bool:
            order.append("rotation")
            return await REAL_ROTATION(db, state, child, now)

        monkeypatch.setattr(refresh_module, "use_refresh_token", rotation)
        await service.container.sessions.refresh(user.pair["refresh_token"])
    assert order == ["store refresh-grace", "rotation"]  # the pair is kept before the commit
    if is_postgres():
        assert seen == [
            ("SELECT refresh_tokens.id, refresh_tokens.session_id,", True),
            ("WITH touched AS", True),
        ]
    else:
        assert [statement for statement, _isolation in seen] == [
            "SELECT refresh_tokens.id, refresh_tokens.session_id,",
            "BEGIN IMMEDIATE",
            "UPDATE refresh_tokens SET",
            "UPDATE sessions SET",
            "INSERT INTO refresh_tokens",
        ]


async def _terminate(container: Container, pid: int) -> None:
    async with container.db.engine.connect() as connection:
        await connection.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})


async def _statement_pid(container: Container) -> int:
    async with container.db.statements() as connection:
        pid = (await connection.execute(text("SELECT pg_backend_pid()"))).scalar_one()
    return int(pid)


@pytest.mark.skipif(not is_postgres(), reason="PostgreSQL's pool of AUTOCOMMIT connections")
async def test_a_dropped_statement_connection_is_replaced_without_a_failed_refresh(
    service: Service, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The statement pool does not ping before a checkout: a connection the server closed
    fails its statement, and the statement runs again on a new connection."""
    user = await register_and_login(service)
    container = service.container
    pair = await container.sessions.refresh(user.pair["refresh_token"])
    await _terminate(container, await _statement_pid(container))  # the read meets it
    pair = await container.sessions.refresh(pair.refresh_token)

    async def drop() -> None:  # now the rotation statement meets it
        await _terminate(container, await _statement_pid(container))

    outcomes = _before_rotation(monkeypatch, drop)
    again = await container.sessions.refresh(pair.refresh_token)
    assert outcomes == [True]
    _row, children = await _rows(container, pair.refresh_token)
    assert [child.token_hash for child in children] == [hash_opaque(again.refresh_token)]


@pytest.mark.skipif(not is_postgres(), reason="the one-statement rotation of PostgreSQL")
@pytest.mark.parametrize("grace_seconds", [10, 0])
async def test_a_rotation_whose_answer_was_lost_on_the_wire_runs_again_harmlessly(
    make_container: Callable[..., Container],
    make_settings: Callable[..., Settings],
    monkeypatch: pytest.MonkeyPatch,
    grace_seconds: int,
) -> None:
    """The rotation committed but its connection broke before the answer came back: run
    again, the statement finds the token used by its own first run, and the refresh
    answers its pair (with or without a grace period)."""
    settings = make_settings(refresh_reuse_grace_seconds=grace_seconds)
    async with started(make_container(settings)) as service:
        await _answer_lost_on_the_wire(service, monkeypatch, grace_seconds)


async def _answer_lost_on_the_wire(
    service: Service, monkeypatch: pytest.MonkeyPatch, grace_seconds: int
) -> None:
    user = await register_and_login(service)
    token = user.pair["refresh_token"]
    real_statements = Database.statements
    broken: list[str] = []

    class Breaking:
        """A connection whose rotation statement runs, then loses its answer (once)."""

        def __init__(self, connection: Any) -> None:
            self._connection = connection

        async def execute(self, statement: Any, *args: Any, **kwargs: Any) -> Any:
            result = await self._connection.execute(statement, *args, **kwargs)
            if not broken and str(statement).lstrip().startswith("WITH touched"):
                broken.append("once")
                raise DBAPIError("WITH …", None, OSError("reset"), connection_invalidated=True)
            return result

    @asynccontextmanager
    async def statements(self: Database) -> AsyncIterator[Any]:
        async with real_statements(self) as connection:
            yield Breaking(connection)

    monkeypatch.setattr(Database, "statements", statements)
    pair = await service.container.sessions.refresh(token)
    assert broken == ["once"]
    _row, children = await _rows(service.container, token)
    assert [child.token_hash for child in children] == [hash_opaque(pair.refresh_token)]
    if grace_seconds:
        assert await service.container.sessions.refresh(token) == pair
    assert isinstance(await service.container.sessions.refresh(pair.refresh_token), TokenPair)
