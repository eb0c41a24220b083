"""Password change, forgot and reset attacked through HTTP (API.md "Users and sessions":
POST /auth/password/{change,forgot,reset})."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from auth_service.clock import FrozenClock
from auth_service.container import Container
from auth_service.settings import Settings
from tests.support.http import (
    PASSWORD,
    LoggedIn,
    client_headers,
    mails,
    register_and_login,
    validate,
)
from tests.support.mfa import (
    assert_error,
    bearer,
    code_at,
    enable_totp,
    execute,
    password_step,
    raw_rows,
    second_step,
)
from tests.support.service import Service, started

NEW_PASSWORD = "a brand new passphrase for alice"
RESET_URL = "https://app.example.test/reset-password"
VARYING_HEADERS = {"date", "x-request-id"}


@pytest.fixture
async def service(
    make_container: Callable[..., Container],
    make_settings: Callable[..., Settings],
    mail_file: Path,
) -> AsyncIterator[Service]:
    """The usual started app, with the file mail backend writing to ``mail_file``."""
    settings = make_settings(
        mail_backend="file", mail_file_path=mail_file, password_reset_url=RESET_URL
    )
    async with started(make_container(settings)) as running:
        yield running


# ``mails``: the forgot mail is a background task; with httpx's ASGI transport it has run by
# the time the response is returned (the first test checks that).
def token_of(mail: dict[str, Any]) -> str:
    links = [word for word in mail["text"].split() if word.startswith(RESET_URL + "?")]
    assert len(links) == 1, mail["text"]
    query = parse_qs(urlsplit(links[0]).query)
    assert list(query) == ["token"], links[0]
    return str(query["token"][0])


async def forgot(service: Service, email: str) -> httpx.Response:
    return await service.client.post("/auth/password/forgot", json={"email": email})


async def forgot_token(service: Service, mail_file: Path, email: str) -> str:
    before = len(mails(mail_file))
    response = await forgot(service, email)
    assert response.status_code == 202, response.text
    sent = mails(mail_file)
    assert len(sent) == before + 1, sent
    return token_of(sent[-1])


async def reset(service: Service, token: str, password: str = NEW_PASSWORD) -> httpx.Response:
    return await service.client.post(
        "/auth/password/reset", json={"token": token, "new_password": password}
    )


async def login_status(service: Service, email: str, password: str) -> int:
    response = await service.client.post("/auth/login", json={"email": email, "password": password})
    return response.status_code


async def login(service: Service, user: LoggedIn, password: str = PASSWORD) -> dict[str, Any]:
    response = await service.client.post(
        "/auth/login", json={"email": user.email, "password": password}
    )
    assert response.status_code == 200, response.text
    pair: dict[str, Any] = response.json()
    return pair


async def refresh_status(service: Service, pair: dict[str, Any]) -> int:
    response = await service.client.post(
        "/auth/refresh", json={"refresh_token": pair["refresh_token"]}
    )
    return response.status_code


async def is_valid(service: Service, pair: dict[str, Any], headers: dict[str, str]) -> bool:
    return bool((await validate(service, pair["access_token"], headers))["valid"])


def shape(response: httpx.Response) -> tuple[int, bytes, set[str]]:
    """What a caller can compare between two answers: status, body bytes, header names."""
    names = {name.lower() for name in response.headers} - VARYING_HEADERS
    return response.status_code, response.content, names


# -- change ----------------------------------------------------------------------------------


async def test_change_password_needs_the_current_one_and_revokes_the_other_sessions(
    service: Service,
) -> None:
    user = await register_and_login(service)
    other = await login(service, user)
    headers = await client_headers(service)
    url = "/auth/password/change"

    wrong = await service.client.post(
        url,
        json={"current_password": "not my password at all", "new_password": NEW_PASSWORD},
        headers=user.bearer,
    )
    assert_error(wrong, 401, "invalid_credentials")
    for weak in ("short", "1qaz2wsx3edc", user.email):
        response = await service.client.post(
            url, json={"current_password": PASSWORD, "new_password": weak}, headers=user.bearer
        )
        assert_error(response, 422, "weak_password")
    unauthenticated = await service.client.post(
        url, json={"current_password": PASSWORD, "new_password": NEW_PASSWORD}
    )
    assert unauthenticated.status_code == 401
    third = await login(service, user)  # the failed attempts changed nothing

    done = await service.client.post(
        url, json={"current_password": PASSWORD, "new_password": NEW_PASSWORD}, headers=user.bearer
    )
    assert done.status_code == 204, done.text
    assert await login_status(service, user.email, PASSWORD) == 401
    assert await login_status(service, user.email, NEW_PASSWORD) == 200
    for revoked in (other, third):
        assert await refresh_status(service, revoked) == 401
        assert await is_valid(service, revoked, headers) is False
    assert await is_valid(service, user.pair, headers) is True
    me = await service.client.get("/auth/me", headers=user.bearer)
    assert me.status_code == 200
    assert await refresh_status(service, user.pair) == 200


async def test_password_guesses_on_change_count_against_the_account_limit(
    make_container: Callable[..., Container], make_settings: Callable[..., Settings]
) -> None:
    settings = make_settings(login_account_failure_limit=3, trusted_proxies="127.0.0.1")
    async with started(make_container(settings)) as service:
        user = await register_and_login(service)
        url = "/auth/password/change"
        for _ in range(3):
            guess = await service.client.post(
                url,
                json={"current_password": "a wrong password guess", "new_password": NEW_PASSWORD},
                headers=user.bearer,
            )
            assert_error(guess, 401, "invalid_credentials")
        right = await service.client.post(
            url,
            json={"current_password": PASSWORD, "new_password": NEW_PASSWORD},
            headers=user.bearer,
        )
        assert_error(right, 429, "rate_limited")
        assert int(right.headers["Retry-After"]) > 0
        # The same account limit holds a login from an address the account never used; the
        # owner's own address (a session was made from it) is not locked out by it.
        stranger = await service.client.post(
            "/auth/login",
            json={"email": user.email, "password": PASSWORD},
            headers={"X-Forwarded-For": "198.51.100.9"},
        )
        assert stranger.status_code == 429
        assert await login_status(service, user.email, PASSWORD) == 200


# -- forgot ----------------------------------------------------------------------------------


async def test_forgot_answers_the_same_bytes_for_known_unknown_and_malformed_emails(
    service: Service, mail_file: Path
) -> None:
    await register_and_login(service)
    known = await forgot(service, "alice@example.com")
    assert known.status_code == 202, known.text
    assert known.json()["status"] == "accepted"
    for email in ("nobody@example.com", "ALICE@Example.com ", "not an email", "", "@"):
        other = await forgot(service, email)
        assert shape(other) == shape(known), (email, other.headers, known.headers)
    # Only the two spellings of the real address got a mail.
    assert [mail["to"] for mail in mails(mail_file)] == ["alice@example.com"] * 2


async def test_forgot_mails_a_link_with_a_token_to_a_known_account(
    service: Service, mail_file: Path, clock: FrozenClock
) -> None:
    await register_and_login(service)
    response = await forgot(service, "alice@example.com")
    assert response.status_code == 202
    # The background task has run within the ASGI call: no polling needed.
    sent = mails(mail_file)
    assert len(sent) == 1
    mail = sent[0]
    assert mail.keys() == {"to", "subject", "text", "sent_at"}
    assert mail["to"] == "alice@example.com"
    assert mail["sent_at"] == clock.now().isoformat()
    token = token_of(mail)
    assert f"token={token}" in mail["text"]
    assert len(token) >= 43  # 256 bits, base64url


async def test_no_mail_for_an_unknown_or_a_disabled_account(
    service: Service, mail_file: Path
) -> None:
    await register_and_login(service, "carol@example.com")
    await register_and_login(service, "dave@example.com")
    await execute(
        service.container,
        "UPDATE users SET disabled = :on WHERE email = :email",
        on=True,
        email="carol@example.com",
    )
    for email in ("nobody@example.com", "carol@example.com"):
        assert (await forgot(service, email)).status_code == 202
    # A mail for a live account afterwards shows the background step did run for the others.
    assert (await forgot(service, "dave@example.com")).status_code == 202
    assert [mail["to"] for mail in mails(mail_file)] == ["dave@example.com"]


async def test_forgot_is_limited_per_email_the_same_way_for_unknown_addresses(
    service: Service, mail_file: Path
) -> None:
    await register_and_login(service)
    limited: dict[str, httpx.Response] = {}
    for email in ("alice@example.com", "nobody@example.com"):
        for _ in range(5):
            assert (await forgot(service, email)).status_code == 202
        # Another spelling of the same address shares its counter.
        limited[email] = await forgot(service, email.upper())
        assert_error(limited[email], 429, "rate_limited")
        assert int(limited[email].headers["Retry-After"]) > 0
    known, unknown = limited["alice@example.com"], limited["nobody@example.com"]
    assert shape(known) == shape(unknown)
    assert len(mails(mail_file)) == 5  # the refused request sent nothing
    # Other addresses are not limited by it.
    assert (await forgot(service, "bob@example.com")).status_code == 202


async def test_forgot_is_limited_per_client_ip(service: Service) -> None:
    for n in range(30):
        assert (await forgot(service, f"user{n}@example.com")).status_code == 202
    assert_error(await forgot(service, "user30@example.com"), 429, "rate_limited")


# -- reset -----------------------------------------------------------------------------------


async def test_reset_sets_the_password_revokes_every_session_and_is_single_use(
    service: Service, mail_file: Path
) -> None:
    user = await register_and_login(service)
    other = await login(service, user)
    headers = await client_headers(service)
    token = await forgot_token(service, mail_file, user.email)

    done = await reset(service, token)
    assert done.status_code == 204, done.text
    assert await login_status(service, user.email, PASSWORD) == 401
    for pair in (user.pair, other):
        assert await refresh_status(service, pair) == 401
        assert await is_valid(service, pair, headers) is False
    me = await service.client.get("/auth/me", headers=user.bearer)
    assert me.status_code == 401
    assert await login_status(service, user.email, NEW_PASSWORD) == 200

    again = await reset(service, token, "yet another passphrase here")
    assert_error(again, 400, "invalid_reset_token")
    assert await login_status(service, user.email, NEW_PASSWORD) == 200


async def test_using_one_reset_token_burns_the_other(service: Service, mail_file: Path) -> None:
    user = await register_and_login(service)
    first = await forgot_token(service, mail_file, user.email)
    second = await forgot_token(service, mail_file, user.email)
    assert first != second
    assert (await reset(service, second)).status_code == 204
    assert_error(
        await reset(service, first, "yet another passphrase here"), 400, "invalid_reset_token"
    )
    assert await login_status(service, user.email, NEW_PASSWORD) == 200


async def test_a_reset_token_expires_after_thirty_minutes(
    service: Service, mail_file: Path, clock: FrozenClock
) -> None:
    user = await register_and_login(service)
    token = await forgot_token(service, mail_file, user.email)
    clock.advance(1799)
    # Still alive: the token is checked before the password, so a weak one shows it (422).
    assert_error(await reset(service, token, "short"), 422, "weak_password")
    clock.advance(1)
    assert_error(await reset(service, token), 400, "invalid_reset_token")
    assert await login_status(service, user.email, PASSWORD) == 200


async def test_made_up_reset_tokens_are_refused(service: Service, mail_file: Path) -> None:
    user = await register_and_login(service)
    token = await forgot_token(service, mail_file, user.email)
    stored_form = hashlib.sha256(token.encode()).hexdigest()
    for candidate in ("x" * 43, "", stored_form, token[:-1], token + "A", token.upper()):
        assert_error(await reset(service, candidate), 400, "invalid_reset_token")
    assert (await reset(service, token)).status_code == 204


async def test_a_weak_password_leaves_the_reset_token_usable(
    service: Service, mail_file: Path
) -> None:
    user = await register_and_login(service)
    token = await forgot_token(service, mail_file, user.email)
    for weak in ("short", "1qaz2wsx3edc", user.email):
        assert_error(await reset(service, token, weak), 422, "weak_password")
    assert await login_status(service, user.email, PASSWORD) == 200
    assert (await reset(service, token)).status_code == 204
    assert await login_status(service, user.email, NEW_PASSWORD) == 200


async def test_a_user_disabled_after_the_mail_cannot_reset(
    service: Service, mail_file: Path
) -> None:
    user = await register_and_login(service)
    token = await forgot_token(service, mail_file, user.email)
    await execute(
        service.container,
        "UPDATE users SET disabled = :on WHERE email = :email",
        on=True,
        email=user.email,
    )
    assert_error(await reset(service, token), 400, "invalid_reset_token")


async def test_the_database_holds_only_the_sha256_of_a_reset_token(
    service: Service, mail_file: Path
) -> None:
    user = await register_and_login(service)
    token = await forgot_token(service, mail_file, user.email)
    hashes = await raw_rows(service.container, "SELECT token_hash FROM password_reset_tokens")
    assert [row[0] for row in hashes] == [hashlib.sha256(token.encode()).hexdigest()]
    everything = await raw_rows(service.container, "SELECT * FROM password_reset_tokens")
    flat = "\x00".join(str(value) for row in everything for value in row)
    assert token not in flat and token[:20] not in flat


async def test_a_reset_does_not_switch_two_factor_off(
    service: Service, mail_file: Path, clock: FrozenClock
) -> None:
    mfa = await enable_totp(service, clock)
    token = await forgot_token(service, mail_file, mfa.email)
    assert (await reset(service, token)).status_code == 204
    mfa_token = await password_step(service, mfa.email, NEW_PASSWORD)
    done = await second_step(service, mfa_token, code_at(mfa.secret, clock))
    assert done.status_code == 200, done.text
    me = await service.client.get("/auth/me", headers=bearer(done.json()["access_token"]))
    assert me.json()["mfa_enabled"] is True


# -- concurrency -----------------------------------------------------------------------------


async def test_one_reset_token_used_twice_at_once_sets_one_password(
    service: Service, mail_file: Path
) -> None:
    user = await register_and_login(service)
    token = await forgot_token(service, mail_file, user.email)
    passwords = ["first new passphrase here", "second new passphrase here"]
    responses = await asyncio.gather(*(reset(service, token, p) for p in passwords))
    assert sorted(r.status_code for r in responses) == [204, 400], [r.text for r in responses]
    winner = passwords[[r.status_code for r in responses].index(204)]
    loser = passwords[1 - passwords.index(winner)]
    assert await login_status(service, user.email, winner) == 200
    assert await login_status(service, user.email, loser) == 401


async def test_two_reset_tokens_used_at_once_set_one_password(
    service: Service, mail_file: Path
) -> None:
    """Each request locks its own token row first: the loser must still be a clean 400 (not a
    database deadlock surfacing as 500). Three users, three races: a lost race is likely."""
    passwords = ["first new passphrase here", "second new passphrase here"]
    for name in ("carol", "dave", "erin"):
        user = await register_and_login(service, f"{name}@example.com")
        tokens = [await forgot_token(service, mail_file, user.email) for _ in range(2)]
        responses = await asyncio.gather(
            *(reset(service, t, p) for t, p in zip(tokens, passwords, strict=True))
        )
        statuses = [r.status_code for r in responses]
        assert sorted(statuses) == [204, 400], [r.text for r in responses]
        assert_error(responses[statuses.index(400)], 400, "invalid_reset_token")
        winner = passwords[statuses.index(204)]
        assert await login_status(service, user.email, winner) == 200
