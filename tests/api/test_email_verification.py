"""Email verification (AUTH_REQUIRE_EMAIL_VERIFICATION) end to end through the file mail
backend, and attacked: enumeration at registration, pre-registration of someone else's
address, token reuse, resend limits (docs/design/invitations-verification.md)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from auth_service.clock import FrozenClock
from auth_service.container import Container
from auth_service.settings import Settings
from tests.support.http import PASSWORD, mails
from tests.support.mfa import assert_error
from tests.support.service import Service, started

VERIFY_URL = "https://app.example.test/verify-email"
RESET_URL = "https://app.example.test/reset-password"
OWNER_PASSWORD = "the owner's own long passphrase"
SQUATTER_PASSWORD = "a squatter's long passphrase here"
VARYING_HEADERS = {"date", "x-request-id", "content-length"}


@pytest.fixture
def verifying(make_settings: Callable[..., Settings], mail_file: Path) -> Settings:
    return make_settings(
        mail_backend="file",
        mail_file_path=mail_file,
        require_email_verification=True,
        email_verification_url=VERIFY_URL,
        password_reset_url=RESET_URL,
    )


@pytest.fixture
async def service(
    make_container: Callable[..., Container], verifying: Settings
) -> AsyncIterator[Service]:
    async with started(make_container(verifying)) as running:
        yield running


def link_token(mail: dict[str, Any]) -> str:
    links = [word for word in mail["text"].split() if word.startswith(VERIFY_URL + "?")]
    assert len(links) == 1, mail["text"]
    return str(parse_qs(urlsplit(links[0]).query)["token"][0])


async def register(service: Service, email: str, password: str = PASSWORD) -> httpx.Response:
    return await service.client.post("/auth/register", json={"email": email, "password": password})


async def login(service: Service, email: str, password: str = PASSWORD) -> httpx.Response:
    return await service.client.post("/auth/login", json={"email": email, "password": password})


async def verify(service: Service, token: str, password: str = PASSWORD) -> httpx.Response:
    return await service.client.post(
        "/auth/verify-email", json={"token": token, "password": password}
    )


async def resend(service: Service, email: str) -> httpx.Response:
    return await service.client.post("/auth/verify-email/resend", json={"email": email})


async def test_register_verify_login_end_to_end(service: Service, mail_file: Path) -> None:
    answer = await register(service, "Alice@Example.com")
    assert answer.status_code == 202, answer.text
    assert answer.json()["status"] == "accepted"
    [mail] = mails(mail_file)
    assert mail["to"] == "alice@example.com"
    token = link_token(mail)
    assert_error(await login(service, "alice@example.com"), 403, "email_not_verified")
    # Never before the password: a wrong one is the usual 401.
    assert_error(
        await login(service, "alice@example.com", "wrong password!!"), 401, "invalid_credentials"
    )
    # The link alone is not enough: the password chosen at registration goes with it.
    assert_error(await verify(service, token, "not the password"), 401, "invalid_credentials")
    assert (await verify(service, token)).status_code == 204
    signed_in = await login(service, "alice@example.com")
    assert signed_in.status_code == 200, signed_in.text
    me = await service.client.get(
        "/auth/me", headers={"Authorization": f"Bearer {signed_in.json()['access_token']}"}
    )
    assert me.json()["email_verified"] is True
    assert_error(await verify(service, token), 400, "invalid_verification_token")
    assert_error(await verify(service, "not-a-token"), 400, "invalid_verification_token")


async def test_registration_answers_the_same_for_an_existing_address(
    service: Service, mail_file: Path
) -> None:
    first = await register(service, "alice@example.com")
    assert (await verify(service, link_token(mails(mail_file)[-1]))).status_code == 204
    again = await register(service, "ALICE@example.com", "another long passphrase")
    new = await register(service, "bob@example.com")
    assert again.status_code == new.status_code == first.status_code == 202
    assert again.content == new.content
    same = {k: v for k, v in again.headers.items() if k not in VARYING_HEADERS}
    assert same == {k: v for k, v in new.headers.items() if k not in VARYING_HEADERS}
    *_, existing_mail, new_mail = mails(mail_file)
    assert existing_mail["subject"] == "You already have an account"
    assert VERIFY_URL not in existing_mail["text"] and RESET_URL in existing_mail["text"]
    assert new_mail["to"] == "bob@example.com" and link_token(new_mail)
    # The existing account keeps its password.
    assert (await login(service, "alice@example.com")).status_code == 200
    assert_error(
        await login(service, "alice@example.com", "another long passphrase"),
        401,
        "invalid_credentials",
    )


async def test_a_pre_registered_address_ends_with_the_owners_password(
    service: Service, mail_file: Path
) -> None:
    """A squatter registers the victim's address first; the owner registers later and opens
    a link mailed to them: the squatter's password does not work, the owner's does."""
    assert (await register(service, "victim@example.com", SQUATTER_PASSWORD)).status_code == 202
    squatters_link = link_token(mails(mail_file)[-1])  # in the victim's mailbox, unused
    assert (await register(service, "victim@example.com", OWNER_PASSWORD)).status_code == 202
    owners_link = link_token(mails(mail_file)[-1])
    # The squatter asks for a resend: one more link in the owner's mailbox.
    assert (await resend(service, "victim@example.com")).status_code == 202
    resent_link = link_token(mails(mail_file)[-1])
    assert_error(
        await verify(service, squatters_link, OWNER_PASSWORD), 400, "invalid_verification_token"
    )
    assert_error(await verify(service, resent_link, SQUATTER_PASSWORD), 401, "invalid_credentials")
    assert (await verify(service, resent_link, OWNER_PASSWORD)).status_code == 204
    assert_error(
        await verify(service, owners_link, OWNER_PASSWORD), 400, "invalid_verification_token"
    )
    assert_error(
        await login(service, "victim@example.com", SQUATTER_PASSWORD), 401, "invalid_credentials"
    )
    assert (await login(service, "victim@example.com", OWNER_PASSWORD)).status_code == 200


async def test_a_squatter_registering_after_the_owner_gets_no_account(
    service: Service, mail_file: Path
) -> None:
    """The reverse order (the attacker's repeat registration replaces the pending password):
    the owner's click with their own password is refused, the squatter has no link, so no
    one holds a verified account until the owner registers again."""
    assert (await register(service, "victim@example.com", OWNER_PASSWORD)).status_code == 202
    first = link_token(mails(mail_file)[-1])
    assert (await register(service, "victim@example.com", SQUATTER_PASSWORD)).status_code == 202
    newest = link_token(mails(mail_file)[-1])  # in the owner's mailbox
    assert_error(await verify(service, first, OWNER_PASSWORD), 400, "invalid_verification_token")
    assert_error(await verify(service, newest, OWNER_PASSWORD), 401, "invalid_credentials")
    assert (await resend(service, "victim@example.com")).status_code == 202
    assert_error(
        await verify(service, link_token(mails(mail_file)[-1]), OWNER_PASSWORD),
        401,
        "invalid_credentials",
    )
    assert_error(
        await login(service, "victim@example.com", SQUATTER_PASSWORD), 403, "email_not_verified"
    )
    # The owner registers again: their password, their link.
    assert (await register(service, "victim@example.com", OWNER_PASSWORD)).status_code == 202
    assert (
        await verify(service, link_token(mails(mail_file)[-1]), OWNER_PASSWORD)
    ).status_code == 204
    assert (await login(service, "victim@example.com", OWNER_PASSWORD)).status_code == 200
    assert_error(
        await login(service, "victim@example.com", SQUATTER_PASSWORD), 401, "invalid_credentials"
    )


async def test_a_weak_password_spends_no_mail_budget(service: Service, mail_file: Path) -> None:
    for _ in range(8):
        answer = await register(service, "victim@example.com", "password")
        assert_error(answer, 422, "weak_password")
    assert (await register(service, "victim@example.com", OWNER_PASSWORD)).status_code == 202
    assert [mail["to"] for mail in mails(mail_file)] == ["victim@example.com"]


async def test_resend_is_the_same_for_every_address_and_limited(
    service: Service, mail_file: Path
) -> None:
    await register(service, "alice@example.com")
    unknown = await resend(service, "nobody@example.com")
    known = await resend(service, "alice@example.com")
    assert unknown.status_code == known.status_code == 202 and unknown.content == known.content
    assert [mail["to"] for mail in mails(mail_file)] == ["alice@example.com"] * 2
    # Registration and resends share the per-address budget (5 an hour), in any spelling.
    for spelling in ("ALICE@example.com", "\uff41lice@example.com", "alice@EXAMPLE.com"):
        assert (await resend(service, spelling)).status_code == 202
    assert_error(await resend(service, "Alice@Example.com"), 429, "rate_limited")
    assert_error(await register(service, "alice@example.com"), 429, "rate_limited")
    for _ in range(5):
        await resend(service, "nobody@example.com")
    assert_error(await resend(service, "nobody@example.com"), 429, "rate_limited")


async def test_a_link_expires_after_24_hours_and_dies_with_a_disabled_account(
    service: Service, mail_file: Path, clock: FrozenClock
) -> None:
    await register(service, "alice@example.com")
    await register(service, "bob@example.com")
    alice_link, bob_link = (link_token(mail) for mail in mails(mail_file))
    clock.advance(24 * 3600)
    assert_error(await verify(service, alice_link), 400, "invalid_verification_token")
    bob = await service.container.accounts.get_by_email("bob@example.com")
    assert bob is not None
    await service.container.accounts.set_disabled(bob.id, True)
    clock.advance(-3600)
    assert_error(await verify(service, bob_link), 400, "invalid_verification_token")


async def test_accounts_from_before_the_setting_verify_and_keep_their_password(
    make_container: Callable[..., Container],
    make_settings: Callable[..., Settings],
    verifying: Settings,
    mail_file: Path,
) -> None:
    async with started(make_container(make_settings())) as before:
        assert (await register(before, "old@example.com", OWNER_PASSWORD)).status_code == 201
        assert (await login(before, "old@example.com", OWNER_PASSWORD)).status_code == 200
    async with started(make_container(verifying)) as after:
        assert_error(
            await login(after, "old@example.com", OWNER_PASSWORD), 403, "email_not_verified"
        )
        # Someone registers the address again: the link they trigger keeps the old password.
        assert (await register(after, "old@example.com", SQUATTER_PASSWORD)).status_code == 202
        link = link_token(mails(mail_file)[-1])
        assert_error(await verify(after, link, SQUATTER_PASSWORD), 401, "invalid_credentials")
        assert (await verify(after, link, OWNER_PASSWORD)).status_code == 204
        assert_error(
            await login(after, "old@example.com", SQUATTER_PASSWORD), 401, "invalid_credentials"
        )
        assert (await login(after, "old@example.com", OWNER_PASSWORD)).status_code == 200


async def test_a_password_reset_verifies_the_address(service: Service, mail_file: Path) -> None:
    await register(service, "alice@example.com")
    forgot = await service.client.post("/auth/password/forgot", json={"email": "alice@example.com"})
    assert forgot.status_code == 202
    reset_link = next(
        word for word in mails(mail_file)[-1]["text"].split() if word.startswith(RESET_URL)
    )
    token = parse_qs(urlsplit(reset_link).query)["token"][0]
    reset = await service.client.post(
        "/auth/password/reset", json={"token": token, "new_password": OWNER_PASSWORD}
    )
    assert reset.status_code == 204, reset.text
    assert (await login(service, "alice@example.com", OWNER_PASSWORD)).status_code == 200


async def test_with_verification_off_register_answers_201_and_409(
    make_container: Callable[..., Container], make_settings: Callable[..., Settings]
) -> None:
    async with started(make_container(make_settings())) as running:
        assert (await register(running, "alice@example.com")).status_code == 201
        assert_error(await register(running, "Alice@example.com"), 409, "email_taken")
        assert (await login(running, "alice@example.com")).status_code == 200


async def test_guessing_the_password_behind_a_link_is_limited(
    make_container: Callable[..., Container], verifying: Settings, mail_file: Path
) -> None:
    settings = verifying.model_copy(update={"login_account_failure_limit": 3})
    async with started(make_container(settings)) as service:
        await register(service, "Alice@Example.com")
        token = link_token(mails(mail_file)[-1])
        for _ in range(3):
            assert_error(
                await verify(service, token, "a wrong guess!!"), 401, "invalid_credentials"
            )
        assert_error(await verify(service, token, PASSWORD), 429, "rate_limited")
        # The same budget as logins to the account, however the address is spelled.
        assert_error(
            await login(service, "ALICE@example.com", "another guess"), 429, "rate_limited"
        )
