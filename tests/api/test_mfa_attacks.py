"""Two-factor login, the attacks: the mfa_token (single use, expiry, burning, binding),
concurrent answers, secrets at rest, and the per-user limit."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import secrets
from collections.abc import Callable, Sequence
from typing import Any

import httpx
import redis.asyncio

from auth_service.clock import FrozenClock
from auth_service.container import Container
from auth_service.settings import Settings
from auth_service.store import MemoryStore, Store
from tests.support.backends import REDIS_URL, is_postgres
from tests.support.http import PASSWORD, register_and_login
from tests.support.mfa import (
    TOKEN_PAIR_KEYS,
    assert_error,
    bearer,
    canonical,
    claims,
    code_at,
    enable_totp,
    execute,
    login_tokens,
    mfa_enabled,
    password_step,
    raw_rows,
    second_step,
    wrong_code,
)
from tests.support.service import Service, started


async def test_the_mfa_token_is_single_use(service: Service, clock: FrozenClock) -> None:
    mfa = await enable_totp(service, clock)
    token = await password_step(service, mfa.email)
    assert (await second_step(service, token, code_at(mfa.secret, clock))).status_code == 200
    clock.advance(30)
    assert_error(
        await second_step(service, token, code_at(mfa.secret, clock)), 401, "invalid_mfa_token"
    )
    assert_error(await second_step(service, token, mfa.recovery_codes[0]), 401, "invalid_mfa_token")


async def test_the_mfa_token_expires(
    make_container: Callable[..., Container],
    clock: FrozenClock,
    redis_prefix: str,
    store: Store,
) -> None:
    """The mfa_token lives in the store with ``expires_in`` as its TTL. The in-process store
    takes an injectable time source: here the test clock, so moving the clock expires it.
    Redis expires keys on its own clock: there the test checks the TTL Redis holds, then
    makes Redis expire the key (PEXPIREAT in the past) instead of sleeping 300 s."""
    raw: Store = (
        store
        if is_postgres()
        else MemoryStore(prefix=redis_prefix, time_source=lambda: clock.now().timestamp())
    )
    try:
        async with started(make_container(store=raw)) as service:
            mfa = await enable_totp(service, clock)
            early = await password_step(service, mfa.email)
            late = await password_step(service, mfa.email)
            keys = {f"mfa:{hashlib.sha256(t.encode()).hexdigest()}": t for t in (early, late)}
            held = {key: ttl for key, _value, ttl in await raw.scan("mfa:") if key in keys}
            assert held.keys() == keys.keys()
            assert all(290 < ttl.total_seconds() <= 300 for ttl in held.values()), held

            clock.advance(299)
            alive = await second_step(service, early, code_at(mfa.secret, clock))
            assert alive.status_code == 200, alive.text

            clock.advance(2)  # 301 s after the password step
            if is_postgres():
                client = redis.asyncio.Redis.from_url(REDIS_URL)
                try:
                    late_key = next(key for key, t in keys.items() if t == late)
                    assert await client.pexpireat(redis_prefix + late_key, 1)
                finally:
                    await client.aclose()
            assert_error(
                await second_step(service, late, code_at(mfa.secret, clock)),
                401,
                "invalid_mfa_token",
            )
    finally:
        if not is_postgres():
            await raw.close()


async def test_five_wrong_codes_burn_the_mfa_token(service: Service, clock: FrozenClock) -> None:
    mfa = await enable_totp(service, clock)
    token = await password_step(service, mfa.email)
    for _ in range(5):
        assert_error(
            await second_step(service, token, wrong_code(mfa, clock)), 401, "invalid_mfa_code"
        )
    burned = await second_step(service, token, code_at(mfa.secret, clock))
    assert_error(burned, 401, "invalid_mfa_token")
    # The right code was not spent on the burnt token; a new login goes through.
    fresh = await second_step(
        service, await password_step(service, mfa.email), code_at(mfa.secret, clock)
    )
    assert fresh.status_code == 200, fresh.text


async def test_an_mfa_token_is_bound_to_its_user(service: Service, clock: FrozenClock) -> None:
    alice = await enable_totp(service, clock, "alice@example.com")
    bob = await enable_totp(service, clock, "bob@example.com")
    token = await password_step(service, alice.email)

    bob_code = code_at(bob.secret, clock)
    if bob_code not in {code_at(alice.secret, clock, offset) for offset in (-30, 0, 30)}:
        assert_error(await second_step(service, token, bob_code), 401, "invalid_mfa_code")
    assert_error(await second_step(service, token, bob.recovery_codes[0]), 401, "invalid_mfa_code")
    # Bob's recovery code was not spent by the attempt.
    bobs = await second_step(
        service, await password_step(service, bob.email), bob.recovery_codes[0]
    )
    assert bobs.status_code == 200, bobs.text
    assert claims(bobs.json()["access_token"])["sub"] == bob.user_id

    done = await second_step(service, token, code_at(alice.secret, clock))
    assert done.status_code == 200, done.text
    assert claims(done.json()["access_token"])["sub"] == alice.user_id
    me = await service.client.get("/auth/me", headers=bearer(done.json()["access_token"]))
    assert me.json()["email"] == alice.email


async def test_tokens_that_are_not_an_mfa_token_are_refused(
    service: Service, clock: FrozenClock
) -> None:
    mfa = await enable_totp(service, clock)
    code = code_at(mfa.secret, clock)
    for token in (
        secrets.token_urlsafe(32),
        "",
        mfa.user.pair["refresh_token"],
        hashlib.sha256(secrets.token_urlsafe(32).encode()).hexdigest(),
    ):
        assert_error(await second_step(service, token, code), 401, "invalid_mfa_token")
    # An mfa_token is no bearer token either.
    token = await password_step(service, mfa.email)
    me = await service.client.get("/auth/me", headers=bearer(token))
    assert me.status_code == 401
    # And it still works afterwards: nothing above consumed the code.
    assert (await second_step(service, token, code)).status_code == 200


async def test_a_user_disabled_between_the_steps_cannot_finish(
    service: Service, clock: FrozenClock
) -> None:
    mfa = await enable_totp(service, clock)
    token = await password_step(service, mfa.email)
    await execute(
        service.container,
        "UPDATE users SET disabled = :on WHERE email = :email",
        on=True,
        email=mfa.email,
    )
    assert_error(
        await second_step(service, token, code_at(mfa.secret, clock)), 401, "invalid_mfa_token"
    )


# -- disable ---------------------------------------------------------------------------------


async def test_disable_needs_the_password_and_a_current_code(
    service: Service, clock: FrozenClock
) -> None:
    mfa = await enable_totp(service, clock)
    url, code = "/auth/mfa/totp/disable", code_at(mfa.secret, clock)
    wrong_password = await service.client.post(
        url, json={"password": "not the password at all", "code": code}, headers=mfa.user.bearer
    )
    assert_error(wrong_password, 401, "invalid_credentials")
    for bad in (wrong_code(mfa, clock), mfa.recovery_codes[0], ""):
        wrong = await service.client.post(
            url, json={"password": PASSWORD, "code": bad}, headers=mfa.user.bearer
        )
        assert_error(wrong, 400, "invalid_mfa_code")
    no_bearer = await service.client.post(url, json={"password": PASSWORD, "code": code})
    assert no_bearer.status_code == 401
    assert await mfa_enabled(service, mfa.user.pair["access_token"]) is True

    done = await service.client.post(
        url, json={"password": PASSWORD, "code": code}, headers=mfa.user.bearer
    )
    assert done.status_code == 204, done.text
    assert await mfa_enabled(service, mfa.user.pair["access_token"]) is False
    assert (await login_tokens(service, mfa.email)).keys() == TOKEN_PAIR_KEYS
    rows = await raw_rows(
        service.container,
        "SELECT count(*) FROM recovery_codes r JOIN users u ON u.id = r.user_id"
        " WHERE u.email = :email",
        email=mfa.email,
    )
    assert rows[0][0] == 0


async def test_password_guesses_on_disable_count_against_the_account_limit(
    make_container: Callable[..., Container],
    make_settings: Callable[..., Settings],
    clock: FrozenClock,
) -> None:
    """A stolen access token must not become an unlimited password oracle (401 vs 400)."""
    container = make_container(make_settings(login_account_failure_limit=3))
    async with started(container) as service:
        mfa = await enable_totp(service, clock)
        url = "/auth/mfa/totp/disable"
        for _ in range(3):
            guess = await service.client.post(
                url,
                json={"password": "a wrong password guess", "code": code_at(mfa.secret, clock)},
                headers=mfa.user.bearer,
            )
            assert_error(guess, 401, "invalid_credentials")
        right = await service.client.post(
            url,
            json={"password": PASSWORD, "code": code_at(mfa.secret, clock)},
            headers=mfa.user.bearer,
        )
        assert_error(right, 429, "rate_limited")
        assert await mfa_enabled(service, mfa.user.pair["access_token"]) is True


async def test_code_guesses_on_disable_count_against_the_second_step_limit(
    service: Service, clock: FrozenClock
) -> None:
    mfa = await enable_totp(service, clock)
    url = "/auth/mfa/totp/disable"
    for _ in range(10):
        guess = await service.client.post(
            url,
            json={"password": PASSWORD, "code": wrong_code(mfa, clock)},
            headers=mfa.user.bearer,
        )
        assert_error(guess, 400, "invalid_mfa_code")
    right = await service.client.post(
        url,
        json={"password": PASSWORD, "code": code_at(mfa.secret, clock)},
        headers=mfa.user.bearer,
    )
    assert_error(right, 429, "rate_limited")
    # The same budget guards the login's second step.
    token = await password_step(service, mfa.email)
    assert_error(await second_step(service, token, code_at(mfa.secret, clock)), 429, "rate_limited")


# -- concurrency -----------------------------------------------------------------------------


async def test_one_mfa_token_two_right_answers_at_once_gives_one_login(
    service: Service, clock: FrozenClock
) -> None:
    """Each round sends a TOTP code and a recovery code on one mfa_token at once (both orders,
    several rounds: which one wins is up to the scheduler)."""
    mfa = await enable_totp(service, clock)
    outcomes: list[bool] = []
    for round_ in range(6):
        token = await password_step(service, mfa.email)
        recovery = mfa.recovery_codes[round_]
        answers = [code_at(mfa.secret, clock), recovery]
        if round_ % 2:
            answers.reverse()
        responses = await asyncio.gather(*(second_step(service, token, code) for code in answers))
        assert sorted(r.status_code for r in responses) == [200, 401], [r.text for r in responses]
        loser = next(r for r in responses if r.status_code == 401)
        assert loser.json()["error"] in {"invalid_mfa_token", "invalid_mfa_code"}
        recovery_won = responses[answers.index(recovery)].status_code == 200
        outcomes.append(recovery_won)
        clock.advance(30)
        # A recovery code burnt by the losing request is given back (its transaction rolled
        # back); the winning one is spent.
        again = await second_step(service, await password_step(service, mfa.email), recovery)
        assert again.status_code == (401 if recovery_won else 200), (round_, again.text)
        clock.advance(30)


async def test_one_totp_code_on_two_mfa_tokens_at_once_gives_one_login(
    service: Service, clock: FrozenClock
) -> None:
    mfa = await enable_totp(service, clock)
    tokens = [await password_step(service, mfa.email) for _ in range(2)]
    code = code_at(mfa.secret, clock)
    responses = await asyncio.gather(*(second_step(service, t, code) for t in tokens))
    assert sorted(r.status_code for r in responses) == [200, 401], [r.text for r in responses]


# -- storage ---------------------------------------------------------------------------------


def _flatten(rows: Sequence[Any]) -> bytes:
    """Every value of the rows, as bytes, for substring checks."""
    parts: list[bytes] = []
    for row in rows:
        for value in row:
            if isinstance(value, bytes | bytearray | memoryview):
                parts.append(bytes(value))
            parts.append(str(value).encode())
    return b"\x00".join(parts)


async def test_the_database_holds_no_totp_secret_and_no_recovery_code_in_the_clear(
    service: Service, clock: FrozenClock
) -> None:
    user = await register_and_login(service)
    setup = await service.client.post(
        "/auth/mfa/totp/setup", json={"password": PASSWORD}, headers=user.bearer
    )
    secret: str = setup.json()["secret"]
    container = service.container
    secret_forms = [secret.encode(), secret.lower().encode(), base64.b32decode(secret)]

    pending = _flatten(await raw_rows(container, "SELECT * FROM users"))
    assert not any(form in pending for form in secret_forms)

    confirmed = await service.client.post(
        "/auth/mfa/totp/confirm", json={"code": code_at(secret, clock)}, headers=user.bearer
    )
    codes: list[str] = confirmed.json()["recovery_codes"]
    ciphertexts = await raw_rows(container, "SELECT totp_secret_encrypted FROM users")
    assert ciphertexts[0][0] is not None
    users = _flatten(await raw_rows(container, "SELECT * FROM users"))
    assert not any(form in users for form in secret_forms)

    hashes = await raw_rows(container, "SELECT code_hash FROM recovery_codes")
    stored = _flatten(await raw_rows(container, "SELECT * FROM recovery_codes"))
    assert len(hashes) == 10
    for code in codes:
        for form in (code, canonical(code), code.lower()):
            assert form.encode() not in stored
    expected = {hashlib.sha256(canonical(code).encode()).hexdigest() for code in codes}
    assert {row[0] for row in hashes} == expected


async def test_a_totp_ciphertext_moved_to_another_user_gives_no_valid_codes(
    service: Service, clock: FrozenClock
) -> None:
    alice = await enable_totp(service, clock, "alice@example.com")
    bob = await enable_totp(service, clock, "bob@example.com")
    container = service.container
    # Bob's row gets Alice's sealed secret (an attacker with write access to one column).
    await execute(
        container,
        "UPDATE users SET totp_secret_encrypted = "
        "(SELECT totp_secret_encrypted FROM users WHERE email = :alice) WHERE email = :bob",
        alice=alice.email,
        bob=bob.email,
    )
    token = await password_step(service, bob.email)
    for offset in (-30, 0, 30):
        assert_error(
            await second_step(service, token, code_at(alice.secret, clock, offset)),
            401,
            "invalid_mfa_code",
        )
    # Alice's own login still works with the very same ciphertext.
    done = await second_step(
        service, await password_step(service, alice.email), code_at(alice.secret, clock)
    )
    assert done.status_code == 200, done.text


# -- limits ----------------------------------------------------------------------------------


async def test_more_than_ten_second_steps_in_fifteen_minutes_are_rate_limited(
    service: Service, clock: FrozenClock
) -> None:
    mfa = await enable_totp(service, clock)
    other = await enable_totp(service, clock, "bob@example.com")
    for _ in range(2):  # two fresh mfa tokens, each burnt by five wrong codes
        token = await password_step(service, mfa.email)
        for _ in range(5):
            assert_error(
                await second_step(service, token, wrong_code(mfa, clock)), 401, "invalid_mfa_code"
            )
    token = await password_step(service, mfa.email)
    for code in (code_at(mfa.secret, clock), mfa.recovery_codes[0]):
        limited: httpx.Response = await second_step(service, token, code)
        assert_error(limited, 429, "rate_limited")
        assert int(limited.headers["Retry-After"]) > 0
    # Another user is not affected.
    done = await second_step(
        service, await password_step(service, other.email), code_at(other.secret, clock)
    )
    assert done.status_code == 200, done.text
