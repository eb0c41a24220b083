from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from datetime import timedelta

import argon2
import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from auth_service.clock import FrozenClock
from auth_service.container import Container
from auth_service.crypto.passwords import PasswordHasher
from auth_service.db.models import User
from auth_service.errors import (
    AccountDisabledError,
    EmailTakenError,
    ErrorCode,
    InvalidCredentialsError,
    InvalidRequestError,
    NotFoundError,
    WeakPasswordError,
)
from auth_service.services import accounts
from tests.conftest import is_postgres

EMAIL = "Jane.Doe@Example.COM"
STORED = "jane.doe@example.com"
PASSWORD = "violet-harbour-42"


class CountingHasher(PasswordHasher):
    """A real hasher that counts how often each kind of verification ran."""

    def __init__(self) -> None:
        super().__init__(memory_kib=8, time_cost=1, parallelism=1)
        self.verify_calls = 0
        self.dummy_calls = 0

    async def verify(self, hash: str, password: str) -> bool:
        self.verify_calls += 1
        return await super().verify(hash, password)

    async def verify_dummy(self, password: str) -> None:
        self.dummy_calls += 1
        await super().verify_dummy(password)


@dataclass
class World:
    container: Container
    session: AsyncSession
    hasher: CountingHasher
    clock: FrozenClock

    async def add(
        self,
        email: str = EMAIL,
        password: str = PASSWORD,
        roles: Sequence[str] = (),
        hasher: PasswordHasher | None = None,
        session: AsyncSession | None = None,
    ) -> User:
        session, hasher = session or self.session, hasher or self.hasher
        return await accounts.register_user(
            session, hasher, self.clock, email=email, password=password, roles=roles
        )

    async def register(self) -> User:
        """EMAIL with role admin, committed from a session of its own."""
        async with self.container.sessionmaker() as other:
            user = await self.add(roles=["admin"], session=other)
            await other.commit()
            return user

    async def login(
        self, password: str = PASSWORD, email: str = EMAIL, hasher: PasswordHasher | None = None
    ) -> User:
        return await accounts.authenticate(
            self.session, hasher or self.hasher, self.clock, email=email, password=password
        )

    async def count_users(self) -> int:
        query = select(func.count()).select_from(User)
        return (await self.session.execute(query)).scalar_one()


@pytest.fixture
async def world(
    make_container: Callable[..., Container], clock: FrozenClock
) -> AsyncIterator[World]:
    container = make_container()
    hasher = CountingHasher()
    try:
        async with container.sessionmaker() as session:
            yield World(container, session, hasher, clock)
    finally:
        hasher.close()
        await container.engine.dispose()


# normalize_email ----------------------------------------------------------------------------
@pytest.mark.parametrize(
    "raw", ["", "   ", "no-at-sign", "two@@example.com", "x@example", "<script>@x.com", "a b@x.com"]
)
def test_invalid_emails_are_422_without_echoing_the_value(raw: str) -> None:
    with pytest.raises(InvalidRequestError) as caught:
        accounts.normalize_email(raw)
    assert (caught.value.status_code, caught.value.code) == (422, ErrorCode.INVALID_REQUEST)
    assert caught.value.description.startswith("email: ")
    assert not raw.strip() or raw.strip().lower() not in caught.value.description.lower()


def _address(length: int) -> str:
    """A valid address of ``length`` characters (local part 64, labels of at most 63)."""
    domain = "b" * 63 + "." + "c" * 63 + "." + "d" * (length - 64 - 1 - 63 - 1 - 63 - 5) + ".com"
    address = "a" * 64 + "@" + domain
    assert len(address) == length
    return address


def test_normalize_email_trims_and_lower_cases_up_to_254_characters() -> None:
    assert accounts.normalize_email("  Jane.Doe@Example.COM \n") == STORED
    assert accounts.normalize_email(_address(254)) == _address(254)
    with pytest.raises(InvalidRequestError) as caught:
        accounts.normalize_email(_address(255))
    assert "254" in caught.value.description
    with pytest.raises(InvalidRequestError):
        accounts.normalize_email("a" * 100_000 + "@example.com")


# register_user ------------------------------------------------------------------------------
async def test_register_stores_a_normalised_user(world: World) -> None:
    created = await world.register()
    user = await accounts.get_user(world.session, created.id)
    assert user is not None
    assert (user.email, user.roles) == (STORED, ["admin"])
    assert not user.disabled and not user.mfa_enabled
    assert user.created_at == user.updated_at == user.password_changed_at == world.clock.now()
    assert user.password_hash.startswith("$argon2id$")
    assert await world.hasher.verify(user.password_hash, PASSWORD)
    longest = await world.add(_address(254).upper())
    await world.session.commit()
    assert (longest.email, longest.roles) == (_address(254), [])


@pytest.mark.parametrize("email", ["hunter2-not-an-email", _address(255)])
async def test_register_refuses_an_invalid_email_without_echoing_it(
    world: World, email: str
) -> None:
    with pytest.raises(InvalidRequestError) as caught:
        await world.add(email)
    assert (caught.value.status_code, caught.value.code) == (422, ErrorCode.INVALID_REQUEST)
    assert email not in caught.value.description
    assert await world.count_users() == 0


@pytest.mark.parametrize("password", ["short-pass", STORED, EMAIL.upper(), "QWERTY123456"])
async def test_register_refuses_a_weak_password(world: World, password: str) -> None:
    with pytest.raises(WeakPasswordError) as caught:
        await world.add(password=password)
    assert password not in caught.value.description
    assert await world.count_users() == 0


async def test_a_duplicate_email_in_another_case_is_taken(world: World) -> None:
    await world.register()
    with pytest.raises(EmailTakenError):
        await world.add(" JANE.DOE@example.com")
    await world.add("other@example.com")  # the session is still usable
    await world.session.commit()
    assert await world.count_users() == 2


class RacingHasher(PasswordHasher):
    """Registers the same email from another session while the first one hashes."""

    def __init__(self, world: World) -> None:
        super().__init__(memory_kib=8, time_cost=1, parallelism=1)
        self.world = world
        self.raced = False

    async def hash(self, password: str) -> str:
        if not self.raced:
            self.raced = True
            async with self.world.container.sessionmaker() as other:
                await self.world.add(STORED, password, hasher=self, session=other)
                await other.commit()
        return await super().hash(password)


@pytest.mark.skipif(
    not is_postgres(), reason="SQLite queues writers (BEGIN IMMEDIATE): this race cannot happen"
)
async def test_a_concurrent_duplicate_caught_by_the_unique_index_is_taken(world: World) -> None:
    racing = RacingHasher(world)
    try:
        with pytest.raises(EmailTakenError):
            await world.add(hasher=racing)
        assert racing.raced
        # The savepoint was rolled back; the outer transaction goes on.
        await world.add("second@example.com", hasher=racing)
        await world.session.commit()
        emails = await world.session.scalars(select(User.email).order_by(User.email))
        assert list(emails) == [STORED, "second@example.com"]
    finally:
        racing.close()


# pysqlite emits no BEGIN before a SAVEPOINT (its RELEASE would commit): db/session.py
# applies SQLAlchemy's SQLite recipe, which this test guards.
async def test_the_caller_can_still_roll_back_a_registration(world: World) -> None:
    await world.add()
    await world.session.rollback()
    assert await world.count_users() == 0


async def test_roles_must_be_a_sequence_of_names(world: World) -> None:
    with pytest.raises(TypeError):
        await world.add(roles="admin")


# authenticate -------------------------------------------------------------------------------
async def test_authenticate_with_the_right_password(world: World) -> None:
    created = await world.register()
    assert (await world.login(email="  jane.doe@EXAMPLE.com")).id == created.id
    assert (world.hasher.verify_calls, world.hasher.dummy_calls) == (1, 0)


async def test_unknown_email_and_wrong_password_fail_alike(world: World) -> None:
    await world.register()
    failures: list[InvalidCredentialsError] = []
    attempts = [(EMAIL, PASSWORD + "!"), ("nobody@example.com", PASSWORD), ("not an @", PASSWORD)]
    for email, password in attempts:
        with pytest.raises(InvalidCredentialsError) as caught:
            await world.login(password, email)
        failures.append(caught.value)
    kinds = {(type(error), error.code, error.description) for error in failures}
    assert len(kinds) == 1 and kinds.pop()[:2] == (InvalidCredentialsError, "invalid_credentials")
    # The wrong password was verified; the unknown and malformed emails ran the dummy.
    assert (world.hasher.verify_calls, world.hasher.dummy_calls) == (1, 2)


async def test_disabled_is_reported_only_after_the_right_password(world: World) -> None:
    created = await world.register()
    world.clock.advance(timedelta(minutes=5))
    disabled = await accounts.set_disabled(world.session, world.clock, created.id, True)
    assert disabled.disabled is True and disabled.updated_at == world.clock.now()
    await world.session.commit()
    with pytest.raises(InvalidCredentialsError):
        await world.login("wrong-password-123")
    with pytest.raises(AccountDisabledError):
        await world.login()
    await accounts.set_disabled(world.session, world.clock, created.id, False)
    await world.session.commit()
    assert (await world.login()).id == created.id


async def test_login_rehashes_when_the_parameters_changed(world: World) -> None:
    created = await world.register()
    stronger = PasswordHasher(memory_kib=16, time_cost=2, parallelism=1)
    try:
        world.clock.advance(timedelta(days=30))
        await world.login(hasher=stronger)
        await world.session.commit()
        async with world.container.sessionmaker() as fresh:
            user = await accounts.get_user(fresh, created.id)
        assert user is not None and user.password_hash != created.password_hash
        parameters = argon2.extract_parameters(user.password_hash)
        assert (parameters.memory_cost, parameters.time_cost) == (16, 2)
        assert user.updated_at == world.clock.now()
        assert user.password_changed_at == created.password_changed_at  # not a change
        # With the current parameters a second login leaves the hash alone.
        assert (await world.login(hasher=stronger)).password_hash == user.password_hash
    finally:
        stronger.close()


# set_password, get_user, set_disabled -------------------------------------------------------
async def test_set_password_replaces_the_hash(world: World) -> None:
    user = await accounts.get_user(world.session, (await world.register()).id)
    assert user is not None
    with pytest.raises(WeakPasswordError):
        await accounts.set_password(world.session, world.hasher, world.clock, user, EMAIL)
    world.clock.advance(timedelta(hours=1))
    await accounts.set_password(world.session, world.hasher, world.clock, user, "mossy-lantern-97")
    await world.session.commit()
    assert user.password_changed_at == user.updated_at == world.clock.now()
    with pytest.raises(InvalidCredentialsError):
        await world.login()
    assert (await world.login("mossy-lantern-97")).id == user.id


async def test_unknown_user_ids(world: World) -> None:
    assert await accounts.get_user(world.session, uuid.uuid4()) is None
    with pytest.raises(NotFoundError) as caught:
        await accounts.set_disabled(world.session, world.clock, uuid.uuid4(), True)
    assert caught.value.status_code == 404
