from __future__ import annotations

import math
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import argon2
import pytest
from sqlalchemy import select

from auth_service.clock import FrozenClock
from auth_service.container import Container
from auth_service.crypto.passwords import PasswordHasher
from auth_service.db.models import Session, User
from auth_service.errors import (
    AccountDisabledError,
    EmailTakenError,
    ErrorCode,
    InvalidCredentialsError,
    InvalidRefreshTokenError,
    InvalidRequestError,
    NotFoundError,
    WeakPasswordError,
)
from auth_service.services import accounts
from auth_service.services.revocation import disabled_key, revoked_after_key
from auth_service.services.sessions import TokenPair
from auth_service.store import Store
from tests.support.hashing import divert_hashing
from tests.support.service import started

EMAIL = "Jane.Doe@Example.COM"
STORED = "jane.doe@example.com"
PASSWORD = "correct horse battery staple"
NEW_PASSWORD = "mossy lantern ninety seven"
IP = "203.0.113.7"


class CountingHasher(PasswordHasher):
    """A real (cheap) hasher that counts its hashes and each kind of verification."""

    def __init__(self) -> None:
        super().__init__(memory_kib=8, time_cost=1, parallelism=1)
        self.hash_calls = self.verify_calls = self.dummy_calls = 0

    async def hash(self, password: str) -> str:
        self.hash_calls += 1
        return await super().hash(password)

    async def verify(self, hash: str, password: str, *, urgent: bool = False) -> bool:
        self.verify_calls += 1
        return await super().verify(hash, password, urgent=urgent)

    async def verify_dummy(self, password: str, *, urgent: bool = False) -> None:
        self.dummy_calls += 1
        await super().verify_dummy(password, urgent=urgent)


@dataclass
class World:
    container: Container
    store: Store  # the store under the container's revocation mirror
    hasher: CountingHasher
    clock: FrozenClock

    async def add(
        self, email: str = EMAIL, password: str = PASSWORD, roles: Sequence[str] = ()
    ) -> User:
        return await self.container.accounts.register(
            email=email, password=password, ip=IP, roles=roles
        )

    async def register(self) -> User:
        return await self.add(roles=["admin"])

    async def login(self, password: str = PASSWORD, email: str = EMAIL) -> TokenPair:
        result = await self.container.logins.with_password(
            email=email, password=password, ip=IP, user_agent="pytest"
        )
        assert isinstance(result, TokenPair)
        return result

    async def claims(self, pair: TokenPair) -> dict[str, Any]:
        verdict = await self.container.validator.validate(pair.access_token)
        assert verdict.valid and verdict.claims is not None, verdict.error
        return verdict.claims

    async def emails(self) -> list[str]:
        async with self.container.db.read() as db:
            return list(await db.scalars(select(User.email).order_by(User.email)))

    async def sessions(self, user_id: uuid.UUID) -> list[tuple[Any, ...]]:
        query = select(Session.id, Session.revoked_at, Session.revoked_reason)
        async with self.container.db.read() as db:
            rows = await db.execute(query.where(Session.user_id == user_id))
        return sorted(tuple(row) for row in rows)

    async def user(self, user_id: uuid.UUID) -> User:
        async with self.container.db.read() as db:
            user = await db.get(User, user_id)
        assert user is not None
        return user


@pytest.fixture
async def world(
    make_container: Callable[..., Container], store: Store, clock: FrozenClock
) -> AsyncIterator[World]:
    hasher = CountingHasher()
    container = make_container(hasher=hasher)  # closed by the container's stop
    async with started(container):
        yield World(container, store, hasher, clock)


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
    assert accounts.try_normalize_email(raw) is None


def _address(length: int) -> str:
    """A valid address of ``length`` characters (local part 64, labels of at most 63)."""
    domain = "b" * 63 + "." + "c" * 63 + "." + "d" * (length - 64 - 1 - 63 - 1 - 63 - 5) + ".com"
    address = "a" * 64 + "@" + domain
    assert len(address) == length
    return address


def test_normalize_email_trims_and_lower_cases_up_to_254_characters() -> None:
    assert accounts.normalize_email("  Jane.Doe@Example.COM \n") == STORED
    assert accounts.try_normalize_email("  Jane.Doe@Example.COM \n") == STORED
    assert accounts.normalize_email(_address(254)) == _address(254)
    with pytest.raises(InvalidRequestError) as caught:
        accounts.normalize_email(_address(255))
    assert "254" in caught.value.description
    with pytest.raises(InvalidRequestError):
        accounts.normalize_email("a" * 100_000 + "@example.com")


def _wide(text: str) -> str:
    """``text`` in fullwidth forms (U+FF01..U+FF5E): "@" is U+FF20, "." U+FF0E."""
    return "".join(chr(ord(char) + 0xFEE0) for char in text)


@pytest.mark.parametrize(
    "raw",
    [
        f"victim@{_wide('e')}x{_wide('a')}mple\u3002com",  # U+3002 ideographic full stop
        f"{_wide('victim')}@example\uff0ecom",  # U+FF0E fullwidth full stop
        "victim@example\uff61com",  # U+FF61 halfwidth ideographic full stop
        _wide("VICTIM@EXAMPLE.COM"),
    ],
)
def test_fullwidth_and_ideographic_spellings_are_the_ascii_address(raw: str) -> None:
    assert not raw.isascii() and accounts.normalize_email(raw) == "victim@example.com"


# register -----------------------------------------------------------------------------------
async def test_register_stores_a_normalised_user(world: World) -> None:
    created = await world.register()
    user = await world.container.accounts.get(created.id)
    assert user is not None
    assert (user.email, user.roles) == (STORED, ["admin"])
    assert not user.disabled and not user.mfa_enabled and user.tokens_revoked_after is None
    assert user.created_at == user.updated_at == user.password_changed_at == world.clock.now()
    assert user.password_hash.startswith("$argon2id$")
    assert await world.hasher.verify(user.password_hash, PASSWORD)
    found = await world.container.accounts.get_by_email(" JANE.doe@EXAMPLE.com")
    assert found is not None and found.id == created.id
    longest = await world.add(_address(254).upper())
    assert (longest.email, longest.roles) == (_address(254), [])
    assert await world.emails() == sorted([STORED, _address(254)])


@pytest.mark.parametrize("email", ["hunter2-not-an-email", _address(255)])
async def test_register_refuses_an_invalid_email_without_echoing_it(
    world: World, email: str
) -> None:
    with pytest.raises(InvalidRequestError) as caught:
        await world.add(email)
    assert (caught.value.status_code, caught.value.code) == (422, ErrorCode.INVALID_REQUEST)
    assert email not in caught.value.description
    assert await world.emails() == [] and world.hasher.hash_calls == 0


@pytest.mark.parametrize("password", ["short-pass", STORED, EMAIL.upper(), "QWERTY123456"])
async def test_register_refuses_a_weak_password(world: World, password: str) -> None:
    with pytest.raises(WeakPasswordError) as caught:
        await world.add(password=password)
    assert password not in caught.value.description
    assert await world.emails() == [] and world.hasher.hash_calls == 0


@pytest.mark.parametrize(
    "spelling", [" JANE.DOE@example.com", f"{_wide('jane')}.{_wide('doe')}@example\u3002com"]
)
async def test_a_duplicate_email_in_another_spelling_is_taken(world: World, spelling: str) -> None:
    await world.register()
    with pytest.raises(EmailTakenError):
        await world.add(spelling)
    await world.add("other@example.com")  # the service goes on
    assert await world.emails() == ["jane.doe@example.com", "other@example.com"]


async def test_a_refused_registration_leaves_nothing_behind(world: World) -> None:
    created = await world.register()
    with pytest.raises(WeakPasswordError):
        await world.add("new@example.com", password="short-pass")
    with pytest.raises(EmailTakenError):
        await world.add(EMAIL.upper(), password=NEW_PASSWORD, roles=["support"])
    assert await world.emails() == [STORED]
    kept = await world.user(created.id)
    assert (kept.password_hash, kept.roles) == (created.password_hash, ["admin"])
    assert world.hasher.hash_calls == 1  # neither refusal hashed anything
    with pytest.raises(InvalidCredentialsError):
        await world.login(NEW_PASSWORD)
    assert (await world.claims(await world.login()))["sub"] == str(created.id)


class RacingHasher(CountingHasher):
    """Registers the same email through the use case while the first registration hashes."""

    def __init__(self, world: World) -> None:
        super().__init__()
        self.world = world
        self.raced = False

    async def hash(self, password: str) -> str:
        if not self.raced:
            self.raced = True
            await self.world.add(STORED, NEW_PASSWORD)  # hashes through this hasher too
        return await super().hash(password)


# No connection is held while argon2 runs (read, release, hash, write), so on SQLite too the
# existence check passes for both and the unique index decides.
async def test_a_concurrent_duplicate_caught_by_the_unique_index_is_taken(world: World) -> None:
    racing = RacingHasher(world)
    divert_hashing(world.container, racing)
    with pytest.raises(EmailTakenError):
        await world.add()
    assert racing.raced and racing.hash_calls == 2
    await world.add("second@example.com")  # the service goes on
    assert await world.emails() == [STORED, "second@example.com"]
    winner = await world.container.accounts.get_by_email(EMAIL)
    assert winner is not None and winner.roles == []
    assert await racing.verify(winner.password_hash, NEW_PASSWORD)  # the racer's, intact
    assert not await racing.verify(winner.password_hash, PASSWORD)


async def test_roles_must_be_a_sequence_of_names(world: World) -> None:
    with pytest.raises(TypeError):
        await world.add(roles="admin")
    assert await world.emails() == []


# Logins.with_password ------------------------------------------------------------------------
async def test_login_with_the_right_password(world: World) -> None:
    created = await world.register()
    pair = await world.login(email="  jane.doe@EXAMPLE.com")
    assert (await world.claims(pair))["sub"] == str(created.id)
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
    disabled = await world.container.accounts.set_disabled(created.id, True)
    assert disabled.disabled is True and disabled.updated_at == world.clock.now()
    with pytest.raises(InvalidCredentialsError):
        await world.login("wrong-password-123")
    with pytest.raises(AccountDisabledError):
        await world.login()
    world.clock.advance(timedelta(minutes=1))
    await world.container.accounts.set_disabled(created.id, False)
    assert (await world.claims(await world.login()))["sub"] == str(created.id)


async def test_login_rehashes_when_the_parameters_changed(world: World) -> None:
    created = await world.register()
    stronger = PasswordHasher(memory_kib=16, time_cost=2, parallelism=1)
    divert_hashing(world.container, stronger)
    world.clock.advance(timedelta(days=30))
    await world.login()
    user = await world.user(created.id)
    assert user.password_hash != created.password_hash
    parameters = argon2.extract_parameters(user.password_hash)
    assert (parameters.memory_cost, parameters.time_cost) == (16, 2)
    assert await stronger.verify(user.password_hash, PASSWORD)
    assert user.updated_at == world.clock.now()
    assert user.password_changed_at == created.password_changed_at  # not a change
    # With the current parameters a second login leaves the hash alone.
    world.clock.advance(timedelta(minutes=1))
    await world.login()
    again = await world.user(created.id)
    assert (again.password_hash, again.updated_at) == (user.password_hash, user.updated_at)


# Passwords.change, Accounts.get, set_disabled ----------------------------------------------------
async def test_change_password_replaces_the_hash(world: World) -> None:
    created = await world.register()
    current = uuid.UUID((await world.claims(await world.login()))["sid"])
    other = uuid.UUID((await world.claims(await world.login()))["sid"])

    async def change(old: str, new: str) -> None:
        ids = {"user_id": created.id, "session_id": current}
        await world.container.passwords.change(**ids, current_password=old, new_password=new)

    with pytest.raises(WeakPasswordError):
        await change(PASSWORD, EMAIL)
    with pytest.raises(InvalidCredentialsError):
        await change(PASSWORD + "!", NEW_PASSWORD)
    assert (await world.user(created.id)).password_hash == created.password_hash
    world.clock.advance(timedelta(hours=1))
    await change(PASSWORD, NEW_PASSWORD)
    user = await world.user(created.id)
    assert user.password_changed_at == user.updated_at == world.clock.now()
    assert await world.sessions(created.id) == sorted(
        [(current, None, None), (other, world.clock.now(), "password_changed")]
    )
    with pytest.raises(InvalidCredentialsError):
        await world.login()
    assert (await world.claims(await world.login(NEW_PASSWORD)))["sub"] == str(created.id)


async def test_disabling_revokes_all_and_enabling_brings_none_back(world: World) -> None:
    created = await world.register()
    uid = str(created.id)
    keys = [disabled_key(uid), revoked_after_key(uid)]
    pairs = [await world.login(), await world.login()]
    world.clock.advance(timedelta(minutes=5))
    disabled_at = world.clock.now()
    await world.container.accounts.set_disabled(created.id, True)

    user = await world.user(created.id)
    assert (user.disabled, user.tokens_revoked_after) == (True, disabled_at)
    revoked = await world.sessions(created.id)
    assert [row[1:] for row in revoked] == [(disabled_at, "user_disabled")] * 2
    revoked_after = str(math.floor(disabled_at.timestamp()))
    assert await world.container.store.get_many(keys) == ["1", revoked_after]
    assert await world.store.get_many(keys) == ["1", revoked_after]  # not only in memory
    verdict = await world.container.validator.validate(pairs[0].access_token)
    assert (verdict.valid, verdict.error) == (False, "user_disabled")

    world.clock.advance(timedelta(minutes=1))
    enabled = await world.container.accounts.set_disabled(created.id, False)
    assert enabled.disabled is False and enabled.updated_at == world.clock.now()
    user = await world.user(created.id)
    assert (user.disabled, user.tokens_revoked_after) == (False, disabled_at)
    assert await world.container.store.get_many(keys) == [None, revoked_after]
    assert await world.store.get_many(keys) == [None, revoked_after]
    for pair in pairs:  # the old tokens stay revoked
        verdict = await world.container.validator.validate(pair.access_token)
        assert (verdict.valid, verdict.error) == (False, "session_revoked")
        with pytest.raises(InvalidRefreshTokenError):
            await world.container.sessions.refresh(pair.refresh_token)
    assert await world.sessions(created.id) == revoked
    assert (await world.claims(await world.login()))["sub"] == uid  # a new login is fine


async def test_unknown_user_ids(world: World) -> None:
    assert await world.container.accounts.get(uuid.uuid4()) is None
    assert await world.container.accounts.get_by_email("nobody@example.com") is None
    assert await world.container.accounts.get_by_email("not an @") is None
    with pytest.raises(NotFoundError) as caught:
        await world.container.accounts.set_disabled(uuid.uuid4(), True)
    assert caught.value.status_code == 404
