"""Two-factor login (TOTP, recovery codes) attacked through HTTP (API.md "Users and sessions":
POST /auth/login/mfa and /auth/mfa/totp/{setup,confirm,disable})."""

from __future__ import annotations

import base64
import uuid
from urllib.parse import parse_qs, unquote, urlsplit

from auth_service.clock import FrozenClock
from auth_service.db.models import User
from tests.support.http import PASSWORD, client_headers, register_and_login, validate
from tests.support.mfa import (
    RECOVERY_FORMAT,
    TOKEN_PAIR_KEYS,
    assert_error,
    canonical,
    claims,
    code_at,
    enable_totp,
    login_tokens,
    mfa_enabled,
    password_step,
    raw_rows,
    second_step,
)
from tests.support.service import Service


async def test_setup_confirm_login_and_second_step(service: Service, clock: FrozenClock) -> None:
    user = await register_and_login(service)
    assert await mfa_enabled(service, user.pair["access_token"]) is False

    setup = await service.client.post(
        "/auth/mfa/totp/setup", json={"password": PASSWORD}, headers=user.bearer
    )
    assert setup.status_code == 200, setup.text
    secret, uri = setup.json()["secret"], setup.json()["otpauth_uri"]
    assert len(base64.b32decode(secret)) * 8 >= 160
    parts = urlsplit(uri)
    assert (parts.scheme, parts.netloc) == ("otpauth", "totp")
    assert unquote(parts.path) == "/auth-service:alice@example.com"
    query = parse_qs(parts.query)
    assert query["secret"] == [secret] and query["issuer"] == ["auth-service"]
    # Setting up is not turning on.
    assert await mfa_enabled(service, user.pair["access_token"]) is False

    confirmed = await service.client.post(
        "/auth/mfa/totp/confirm", json={"code": code_at(secret, clock)}, headers=user.bearer
    )
    assert confirmed.status_code == 200, confirmed.text
    codes = confirmed.json()["recovery_codes"]
    assert len(codes) == 10 and len(set(codes)) == 10
    assert all(RECOVERY_FORMAT.fullmatch(code) for code in codes), codes
    assert await mfa_enabled(service, user.pair["access_token"]) is True
    async with service.container.db.writer() as db:
        row = await db.get(User, uuid.UUID(user.user_id))
        assert row is not None and row.totp_confirmed_at == clock.now()

    clock.advance(30)  # the confirming code's step is used up
    sessions = "SELECT count(*) FROM sessions"
    before = (await raw_rows(service.container, sessions))[0][0]
    first = await login_tokens(service, user.email)
    # The password alone opens no session.
    assert (await raw_rows(service.container, sessions))[0][0] == before
    assert first.keys() == {"mfa_required", "mfa_token", "expires_in"}, first
    assert first["mfa_required"] is True and first["expires_in"] == 300
    assert isinstance(first["mfa_token"], str) and len(first["mfa_token"]) >= 43

    response = await second_step(service, str(first["mfa_token"]), code_at(secret, clock))
    assert response.status_code == 200, response.text
    pair = response.json()
    assert pair.keys() == TOKEN_PAIR_KEYS and pair["token_type"] == "Bearer"
    token_claims = claims(pair["access_token"])
    assert token_claims["amr"] == ["pwd", "otp"]
    assert token_claims["sub"] == user.user_id
    checked = await validate(service, pair["access_token"], await client_headers(service))
    assert checked["valid"] is True and checked["claims"]["amr"] == ["pwd", "otp"]

    # The session remembers how it was authenticated: a refreshed token says the same.
    refreshed = await service.client.post(
        "/auth/refresh", json={"refresh_token": pair["refresh_token"]}
    )
    assert refreshed.status_code == 200, refreshed.text
    assert claims(refreshed.json()["access_token"])["amr"] == ["pwd", "otp"]


async def test_setup_again_while_enabled_is_refused_and_keeps_the_secret(
    service: Service, clock: FrozenClock
) -> None:
    mfa = await enable_totp(service, clock)
    again = await service.client.post(
        "/auth/mfa/totp/setup", json={"password": PASSWORD}, headers=mfa.user.bearer
    )
    assert_error(again, 409, "mfa_already_enabled")
    token = await password_step(service, mfa.email)
    assert (await second_step(service, token, code_at(mfa.secret, clock))).status_code == 200


async def test_confirm_with_a_wrong_code_leaves_mfa_off(
    service: Service, clock: FrozenClock
) -> None:
    user = await register_and_login(service)
    setup = await service.client.post(
        "/auth/mfa/totp/setup", json={"password": PASSWORD}, headers=user.bearer
    )
    secret = setup.json()["secret"]
    valid = {code_at(secret, clock, offset) for offset in (-30, 0, 30)}
    wrong = next(code for code in ("000000", "111111", "222222") if code not in valid)
    for code in (wrong, "12345", "abcdef", ""):
        response = await service.client.post(
            "/auth/mfa/totp/confirm", json={"code": code}, headers=user.bearer
        )
        assert_error(response, 400, "invalid_mfa_code")
    assert await mfa_enabled(service, user.pair["access_token"]) is False
    assert (await login_tokens(service, user.email)).keys() == TOKEN_PAIR_KEYS


async def test_setup_without_confirm_does_not_turn_mfa_on(
    service: Service, clock: FrozenClock
) -> None:
    user = await register_and_login(service)
    first = await service.client.post(
        "/auth/mfa/totp/setup", json={"password": PASSWORD}, headers=user.bearer
    )
    assert first.status_code == 200
    assert (await login_tokens(service, user.email)).keys() == TOKEN_PAIR_KEYS
    # Setting up again replaces the secret: a code of the first one no longer confirms.
    second = await service.client.post(
        "/auth/mfa/totp/setup", json={"password": PASSWORD}, headers=user.bearer
    )
    assert second.json()["secret"] != first.json()["secret"]
    stale = code_at(first.json()["secret"], clock)
    assert stale != code_at(second.json()["secret"], clock)
    response = await service.client.post(
        "/auth/mfa/totp/confirm", json={"code": stale}, headers=user.bearer
    )
    assert_error(response, 400, "invalid_mfa_code")
    assert await mfa_enabled(service, user.pair["access_token"]) is False


# -- TOTP codes ------------------------------------------------------------------------------


async def test_a_totp_code_is_accepted_once(service: Service, clock: FrozenClock) -> None:
    mfa = await enable_totp(service, clock)
    code = code_at(mfa.secret, clock)
    assert (
        await second_step(service, await password_step(service, mfa.email), code)
    ).status_code == 200

    replay = await password_step(service, mfa.email)
    assert_error(await second_step(service, replay, code), 401, "invalid_mfa_code")
    # A step later the code is still inside the ±1 window: still refused (used).
    clock.advance(30)
    assert_error(await second_step(service, replay, code), 401, "invalid_mfa_code")
    assert (await second_step(service, replay, code_at(mfa.secret, clock))).status_code == 200


async def test_codes_one_step_off_are_accepted_and_two_steps_off_are_not(
    service: Service, clock: FrozenClock
) -> None:
    mfa = await enable_totp(service, clock)
    clock.advance(60)  # the steps before now are unused (confirm used the one three back)
    token = await password_step(service, mfa.email)
    for offset in (-60, 60):
        assert_error(
            await second_step(service, token, code_at(mfa.secret, clock, offset)),
            401,
            "invalid_mfa_code",
        )
    previous = await second_step(service, token, code_at(mfa.secret, clock, -30))
    assert previous.status_code == 200, previous.text
    following = await second_step(
        service, await password_step(service, mfa.email), code_at(mfa.secret, clock, 30)
    )
    assert following.status_code == 200, following.text


async def test_digits_of_other_scripts_are_a_wrong_code_not_a_server_error(
    service: Service, clock: FrozenClock
) -> None:
    """``\\d`` matches Arabic-Indic and fullwidth digits; they must be a plain wrong code."""
    mfa = await enable_totp(service, clock)
    token = await password_step(service, mfa.email)
    arabic = "".join(chr(0x0660 + int(d)) for d in code_at(mfa.secret, clock))
    fullwidth = "".join(chr(0xFF10 + int(d)) for d in code_at(mfa.secret, clock))
    for code in (arabic, fullwidth):
        assert_error(await second_step(service, token, code), 401, "invalid_mfa_code")
        disable = await service.client.post(
            "/auth/mfa/totp/disable",
            json={"password": PASSWORD, "code": code},
            headers=mfa.user.bearer,
        )
        assert_error(disable, 400, "invalid_mfa_code")


# -- recovery codes --------------------------------------------------------------------------


async def test_a_recovery_code_works_once(service: Service, clock: FrozenClock) -> None:
    mfa = await enable_totp(service, clock)
    code = mfa.recovery_codes[0]
    response = await second_step(service, await password_step(service, mfa.email), code)
    assert response.status_code == 200, response.text
    assert claims(response.json()["access_token"])["amr"] == ["pwd", "recovery"]
    checked = await validate(
        service, response.json()["access_token"], await client_headers(service)
    )
    assert checked["valid"] is True and checked["claims"]["amr"] == ["pwd", "recovery"]

    for again in (code, code.lower(), canonical(code)):
        token = await password_step(service, mfa.email)
        assert_error(await second_step(service, token, again), 401, "invalid_mfa_code")
    # The others are untouched.
    token = await password_step(service, mfa.email)
    assert (await second_step(service, token, mfa.recovery_codes[1])).status_code == 200


async def test_recovery_codes_ignore_case_spaces_and_hyphens(
    service: Service, clock: FrozenClock
) -> None:
    mfa = await enable_totp(service, clock)
    raw = [canonical(code) for code in mfa.recovery_codes[:3]]
    typed = [
        mfa.recovery_codes[0].lower(),
        raw[1],
        " ".join(raw[2][i : i + 4] for i in range(0, 20, 4)).lower(),
    ]
    for code in typed:
        response = await second_step(service, await password_step(service, mfa.email), code)
        assert response.status_code == 200, (code, response.text)
        assert claims(response.json()["access_token"])["amr"] == ["pwd", "recovery"]


async def test_disable_and_enable_again_kills_the_old_recovery_codes(
    service: Service, clock: FrozenClock
) -> None:
    mfa = await enable_totp(service, clock)
    disabled = await service.client.post(
        "/auth/mfa/totp/disable",
        json={"password": PASSWORD, "code": code_at(mfa.secret, clock)},
        headers=mfa.user.bearer,
    )
    assert disabled.status_code == 204, disabled.text
    clock.advance(30)
    setup = await service.client.post(
        "/auth/mfa/totp/setup", json={"password": PASSWORD}, headers=mfa.user.bearer
    )
    secret = setup.json()["secret"]
    confirmed = await service.client.post(
        "/auth/mfa/totp/confirm", json={"code": code_at(secret, clock)}, headers=mfa.user.bearer
    )
    assert confirmed.status_code == 200
    assert not set(confirmed.json()["recovery_codes"]) & set(mfa.recovery_codes)
    token = await password_step(service, mfa.email)
    for old in mfa.recovery_codes[:3]:
        assert_error(await second_step(service, token, old), 401, "invalid_mfa_code")
    fresh = confirmed.json()["recovery_codes"][0]
    assert (await second_step(service, token, fresh)).status_code == 200


# -- the mfa_token ---------------------------------------------------------------------------
