"""Attack: a stolen access token alone enrols the attacker's authenticator and locks the owner
out. Setup needs the current password (counted against the login limits); turning 2FA on or
off signs out the user's other sessions and mails the user."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from auth_service.clock import FrozenClock
from auth_service.container import Container
from auth_service.settings import Settings
from tests.support.http import PASSWORD, mails, register_and_login
from tests.support.mfa import assert_error, code_at, enable_totp
from tests.support.service import Service, started

SETUP = "/auth/mfa/totp/setup"


@pytest.fixture
async def service(
    make_container: Callable[..., Container],
    make_settings: Callable[..., Settings],
    mail_file: Path,
) -> AsyncIterator[Service]:
    settings = make_settings(
        mail_backend="file", mail_file_path=mail_file, login_account_failure_limit=3
    )
    async with started(make_container(settings)) as running:
        yield running


async def test_a_stolen_access_token_alone_cannot_enrol(service: Service) -> None:
    user = await register_and_login(service)
    assert_error(await service.client.post(SETUP, headers=user.bearer), 422, "invalid_request")
    wrong = await service.client.post(
        SETUP, json={"password": "not the password!"}, headers=user.bearer
    )
    assert_error(wrong, 401, "invalid_credentials")
    me = await service.client.get("/auth/me", headers=user.bearer)
    assert me.json()["mfa_enabled"] is False


async def test_password_guesses_on_setup_count_against_the_login_limits(
    service: Service,
) -> None:
    user = await register_and_login(service)
    for _ in range(3):
        guess = await service.client.post(
            SETUP, json={"password": "a wrong guess!!"}, headers=user.bearer
        )
        assert_error(guess, 401, "invalid_credentials")
    right = await service.client.post(SETUP, json={"password": PASSWORD}, headers=user.bearer)
    assert_error(right, 429, "rate_limited")


async def test_a_right_password_on_setup_clears_the_account_counter(service: Service) -> None:
    user = await register_and_login(service)
    for _ in range(2):
        await service.client.post(SETUP, json={"password": "a wrong guess!!"}, headers=user.bearer)
    ok = await service.client.post(SETUP, json={"password": PASSWORD}, headers=user.bearer)
    assert ok.status_code == 200
    for _ in range(2):  # two more wrong ones would have been the 3rd and 4th without the reset
        guess = await service.client.post(
            SETUP, json={"password": "a wrong guess!!"}, headers=user.bearer
        )
        assert_error(guess, 401, "invalid_credentials")


async def test_enabling_signs_out_the_other_sessions_and_mails_the_user(
    service: Service, clock: FrozenClock, mail_file: Path
) -> None:
    other = await register_and_login(service)  # a session of the user's, on another device
    login = await service.client.post(
        "/auth/login", json={"email": other.email, "password": PASSWORD}
    )
    current = {"Authorization": f"Bearer {login.json()['access_token']}"}
    setup = await service.client.post(SETUP, json={"password": PASSWORD}, headers=current)
    confirm = await service.client.post(
        "/auth/mfa/totp/confirm",
        json={"code": code_at(setup.json()["secret"], clock)},
        headers=current,
    )
    assert confirm.status_code == 200, confirm.text
    assert (await service.client.get("/auth/me", headers=current)).status_code == 200
    stale = await service.client.get("/auth/me", headers=other.bearer)
    assert stale.status_code == 401
    refreshed = await service.client.post(
        "/auth/refresh", json={"refresh_token": other.pair["refresh_token"]}
    )
    assert refreshed.status_code == 401
    sent = mails(mail_file)
    assert [mail["subject"] for mail in sent] == ["Two-factor authentication was turned on"]
    assert sent[0]["to"] == "alice@example.com"


async def test_disabling_signs_out_the_other_sessions_and_mails_the_user(
    service: Service, clock: FrozenClock, mail_file: Path
) -> None:
    mfa = await enable_totp(service, clock)
    step = await service.client.post(
        "/auth/login", json={"email": "alice@example.com", "password": PASSWORD}
    )
    second = await service.client.post(
        "/auth/login/mfa",
        json={"mfa_token": step.json()["mfa_token"], "code": code_at(mfa.secret, clock)},
    )
    assert second.status_code == 200
    clock.advance(30)
    other = {"Authorization": f"Bearer {second.json()['access_token']}"}
    disabled = await service.client.post(
        "/auth/mfa/totp/disable",
        json={"password": PASSWORD, "code": code_at(mfa.secret, clock)},
        headers=mfa.user.bearer,
    )
    assert disabled.status_code == 204, disabled.text
    assert (await service.client.get("/auth/me", headers=mfa.user.bearer)).status_code == 200
    assert (await service.client.get("/auth/me", headers=other)).status_code == 401
    subjects = [mail["subject"] for mail in mails(mail_file)]
    assert subjects[-1] == "Two-factor authentication was turned off"


async def _wrong_change(service: Service, bearer: dict[str, str]) -> int:
    guess = await service.client.post(
        "/auth/password/change",
        json={"current_password": "a wrong guess!!", "new_password": "a brand new passphrase"},
        headers=bearer,
    )
    return guess.status_code


async def test_a_successful_password_change_clears_the_account_counter(service: Service) -> None:
    user = await register_and_login(service)
    assert [await _wrong_change(service, user.bearer) for _ in range(2)] == [401, 401]
    changed = await service.client.post(
        "/auth/password/change",
        json={"current_password": PASSWORD, "new_password": "a brand new passphrase"},
        headers=user.bearer,
    )
    assert changed.status_code == 204
    # Limit 3: without the reset the second of these would be the 4th attempt (429).
    assert [await _wrong_change(service, user.bearer) for _ in range(2)] == [401, 401]


async def test_a_successful_totp_disable_clears_the_account_counter(
    service: Service, clock: FrozenClock
) -> None:
    mfa = await enable_totp(service, clock)
    for _ in range(2):
        wrong = await service.client.post(
            "/auth/mfa/totp/disable",
            json={"password": "a wrong guess!!", "code": code_at(mfa.secret, clock)},
            headers=mfa.user.bearer,
        )
        assert_error(wrong, 401, "invalid_credentials")
    disabled = await service.client.post(
        "/auth/mfa/totp/disable",
        json={"password": PASSWORD, "code": code_at(mfa.secret, clock)},
        headers=mfa.user.bearer,
    )
    assert disabled.status_code == 204, disabled.text
    assert [await _wrong_change(service, mfa.user.bearer) for _ in range(2)] == [401, 401]
