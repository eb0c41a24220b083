"""Invitations attacked through HTTP: POST/GET/DELETE /admin/invitations and registering with
an invitation token while registration is closed (docs/design/invitations-verification.md)."""

from __future__ import annotations

import asyncio
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
from tests.support.mfa import assert_error, raw_rows
from tests.support.service import Service, started

INVITE_URL = "https://app.example.test/accept-invitation"


@pytest.fixture
async def service(
    make_container: Callable[..., Container],
    make_settings: Callable[..., Settings],
    mail_file: Path,
) -> AsyncIterator[Service]:
    """Registration closed, the file mail backend, an invitation link base."""
    settings = make_settings(
        mail_backend="file",
        mail_file_path=mail_file,
        invitation_url=INVITE_URL,
        registration_open=False,
    )
    async with started(make_container(settings)) as running:
        yield running


async def admin(service: Service, email: str = "admin@example.com") -> dict[str, str]:
    await service.container.accounts.register(
        email=email, password=PASSWORD, ip=None, roles=["admin"], limited=False
    )
    login = await service.client.post("/auth/login", json={"email": email, "password": PASSWORD})
    assert login.status_code == 200, login.text
    return {"Authorization": f"Bearer {login.json()['access_token']}"}


def token_in(mail: dict[str, Any]) -> str:
    links = [word for word in mail["text"].split() if word.startswith(INVITE_URL + "?")]
    assert len(links) == 1, mail["text"]
    return str(parse_qs(urlsplit(links[0]).query)["token"][0])


async def invite(
    service: Service,
    headers: dict[str, str],
    mail_file: Path,
    email: str = "carol@example.com",
    roles: list[str] | None = None,
) -> tuple[dict[str, Any], str]:
    before = len(mails(mail_file))
    response = await service.client.post(
        "/admin/invitations", json={"email": email, "roles": roles or []}, headers=headers
    )
    assert response.status_code == 201, response.text
    sent = mails(mail_file)
    assert len(sent) == before + 1
    return response.json(), token_in(sent[-1])


async def register(service: Service, email: str, token: str | None) -> httpx.Response:
    body: dict[str, Any] = {"email": email, "password": PASSWORD}
    if token is not None:
        body["invitation_token"] = token
    return await service.client.post("/auth/register", json=body)


async def test_an_invitation_registers_once_while_registration_is_closed(
    service: Service, mail_file: Path
) -> None:
    headers = await admin(service)
    created, token = await invite(service, headers, mail_file, roles=["billing"])
    assert created["mail_sent"] is True and created["roles"] == ["billing"]
    assert token not in str(created)  # the token is only in the mail
    assert mails(mail_file)[-1]["to"] == "carol@example.com"
    assert_error(await register(service, "carol@example.com", None), 403, "registration_closed")

    first = await register(service, "carol@example.com", token)
    assert first.status_code == 201, first.text
    login = await service.client.post(
        "/auth/login", json={"email": "carol@example.com", "password": PASSWORD}
    )
    me = await service.client.get(
        "/auth/me", headers={"Authorization": f"Bearer {login.json()['access_token']}"}
    )
    assert me.json()["roles"] == ["billing"] and me.json()["email_verified"] is True
    # Once: again, for the same address (now taken) or another one, it is refused.
    assert_error(await register(service, "carol@example.com", token), 400, "invalid_invitation")
    assert_error(await register(service, "dave@example.com", token), 400, "invalid_invitation")
    listed = await service.client.get("/admin/invitations", headers=headers)
    assert listed.json() == {"invitations": []}
    stored = await raw_rows(service.container, "SELECT token_hash FROM invitations")
    assert [len(row[0]) for row in stored] == [64] and token not in str(stored)


async def test_two_concurrent_registrations_with_one_invitation_create_one_account(
    service: Service, mail_file: Path
) -> None:
    headers = await admin(service)
    _, token = await invite(service, headers, mail_file)
    spellings = ["carol@example.com", "CAROL@example.com", "\uff43arol@example.com"]
    answers = await asyncio.gather(*(register(service, email, token) for email in spellings))
    codes = sorted(answer.status_code for answer in answers)
    assert codes.count(201) == 1, [answer.text for answer in answers]
    assert set(codes) - {201} <= {400, 409}
    users = await raw_rows(service.container, "SELECT email FROM users WHERE email LIKE 'carol%'")
    assert [row[0] for row in users] == ["carol@example.com"]


async def test_an_invitation_is_for_its_address_in_any_spelling_and_no_other(
    service: Service, mail_file: Path
) -> None:
    headers = await admin(service)
    _, token = await invite(service, headers, mail_file, email="Carol@Example.COM")
    assert_error(await register(service, "mallory@example.com", token), 400, "invalid_invitation")
    assert_error(await register(service, "carol@example.com", "x" * 43), 400, "invalid_invitation")
    fullwidth = await register(service, "\uff43arol@\uff45xample.com", token)
    assert fullwidth.status_code == 201, fullwidth.text
    assert fullwidth.json()["email"] == "carol@example.com"


async def test_a_refused_registration_leaves_the_invitation_usable(
    service: Service, mail_file: Path
) -> None:
    headers = await admin(service)
    _, token = await invite(service, headers, mail_file)
    weak = await service.client.post(
        "/auth/register",
        json={"email": "carol@example.com", "password": "password", "invitation_token": token},
    )
    assert_error(weak, 422, "weak_password")
    assert (await register(service, "carol@example.com", token)).status_code == 201


async def test_revoked_and_expired_invitations_are_refused(
    service: Service, mail_file: Path, clock: FrozenClock
) -> None:
    headers = await admin(service)
    revoked, revoked_token = await invite(service, headers, mail_file, email="carol@example.com")
    _, old_token = await invite(service, headers, mail_file, email="dave@example.com")
    listed = await service.client.get("/admin/invitations", headers=headers)
    assert {row["email"] for row in listed.json()["invitations"]} == {
        "carol@example.com",
        "dave@example.com",
    }
    gone = await service.client.delete(f"/admin/invitations/{revoked['id']}", headers=headers)
    assert gone.status_code == 204
    again = await service.client.delete(f"/admin/invitations/{revoked['id']}", headers=headers)
    assert_error(again, 404, "not_found")
    bad_id = await service.client.delete("/admin/invitations/not-a-uuid", headers=headers)
    assert_error(bad_id, 404, "not_found")
    assert_error(
        await register(service, "carol@example.com", revoked_token), 400, "invalid_invitation"
    )
    clock.advance(7 * 86_400)
    assert_error(await register(service, "dave@example.com", old_token), 400, "invalid_invitation")


async def test_invitations_are_for_admins_and_new_addresses_only(
    service: Service, mail_file: Path
) -> None:
    headers = await admin(service)
    await service.container.accounts.register(
        email="bob@example.com", password=PASSWORD, ip=None, limited=False
    )
    taken = await service.client.post(
        "/admin/invitations", json={"email": "BOB@example.com", "roles": []}, headers=headers
    )
    assert_error(taken, 409, "email_taken")
    bad_role = await service.client.post(
        "/admin/invitations", json={"email": "x@example.com", "roles": ["Admin!"]}, headers=headers
    )
    assert_error(bad_role, 422, "invalid_request")
    login = await service.client.post(
        "/auth/login", json={"email": "bob@example.com", "password": PASSWORD}
    )
    bob = {"Authorization": f"Bearer {login.json()['access_token']}"}
    for method, path in (("POST", "/admin/invitations"), ("GET", "/admin/invitations")):
        answer = await service.client.request(
            method, path, json={"email": "e@example.com", "roles": ["admin"]}, headers=bob
        )
        assert_error(answer, 403, "forbidden")
        anonymous = await service.client.request(method, path, json={"email": "e@example.com"})
        assert anonymous.status_code == 401
    events = await service.client.get("/admin/audit?type=invitation.created", headers=headers)
    assert events.json()["events"] == []
    verify = await service.client.get("/admin/audit/verify", headers=headers)
    assert verify.json()["ok"] is True


async def test_the_audit_log_records_who_invited_whom(service: Service, mail_file: Path) -> None:
    headers = await admin(service)
    created, token = await invite(service, headers, mail_file, roles=["admin"])
    user = (await register(service, "carol@example.com", token)).json()
    audit = (await service.client.get("/admin/audit", headers=headers)).json()["events"]
    by_type = {event["type"]: event for event in audit}
    assert by_type["invitation.created"]["subject"] == created["id"]
    assert by_type["invitation.created"]["details"] == {
        "email": "carol@example.com",
        "roles": ["admin"],
    }
    assert by_type["invitation.accepted"]["subject"] == user["id"]
    assert by_type["invitation.accepted"]["details"] == {"invitation": created["id"]}
    assert token not in str(audit)


async def test_an_invitation_dies_with_its_inviters_admin_rights(
    service: Service, mail_file: Path
) -> None:
    """Authorisation reads current state: an admin disabled or demoted (say, a compromised
    one) leaves behind no invitation that still works, admin roles least of all."""
    first = await admin(service, "first@example.com")
    await admin(service, "second@example.com")
    _, disabled_token = await invite(service, first, mail_file, "mallory@example.com", ["admin"])
    _, demoted_token = await invite(service, first, mail_file, "trudy@example.com", ["admin"])
    inviter = await service.container.accounts.get_by_email("first@example.com")
    assert inviter is not None
    await service.container.admin_users.set_roles(inviter.id, [])
    assert_error(
        await register(service, "trudy@example.com", demoted_token), 400, "invalid_invitation"
    )
    await service.container.accounts.set_disabled(inviter.id, True)
    assert_error(
        await register(service, "mallory@example.com", disabled_token), 400, "invalid_invitation"
    )
    users = await raw_rows(service.container, "SELECT email FROM users WHERE email LIKE 'mallory%'")
    assert users == []
