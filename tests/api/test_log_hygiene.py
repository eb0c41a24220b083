"""Log hygiene (the issue: "never a token, password, secret, TOTP code, reset link or full
email in any line"): every flow of the service runs against one app while a handler on the
root logger captures every record at DEBUG (the levels ``AUTH_LOG_LEVEL=DEBUG`` sets); each
record is rendered as its message, as ``TextFormatter`` and ``JsonFormatter`` lines and as
its exception text, and those are grepped for every sensitive value the flows used or got.

Mail goes through the ``log`` backend (what the log must redact) and, beside it, the ``file``
backend (where the test reads the links): both get every message.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import traceback
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, urlsplit

import pytest

import auth_service.container_parts as container_parts
from auth_service.clock import Clock, FrozenClock
from auth_service.container import Container
from auth_service.logs import JsonFormatter, RequestIdFilter, TextFormatter, logging_config
from auth_service.services.mail import FileMailer, LogMailer, Mailer, MailMessage
from auth_service.settings import Settings
from tests.support.http import PASSWORD, mails, register_and_login
from tests.support.mfa import bearer, code_at, password_step, second_step
from tests.support.oauth import ServiceClient, form, new_client
from tests.support.rotation import admin_headers
from tests.support.service import Service, started

RESET_URL = "https://app.example.test/reset-password"
VERIFY_URL = "https://app.example.test/verify-email"
INVITE_URL = "https://app.example.test/accept-invitation"
ALICE_PASSWORD = "alice's own long passphrase 1"
WRONG_PASSWORD = "not alice's passphrase at all"
CHANGED_PASSWORD = "alice changed her passphrase 2"
RESET_PASSWORD = "alice reset her passphrase 3"
DAVE_PASSWORD = "dave verifies his address 4"
GRANT = {"grant_type": "client_credentials"}
# Loggers of the test's own HTTP client (httpx logs each request URL, query string included):
# they are not lines the service writes.
CLIENT_SIDE = ("httpx",)


# -- capturing -------------------------------------------------------------------------------


@dataclass
class Line:
    logger: str
    level: str
    texts: list[str]  # message, text line, JSON line, exception text
    undated: list[str]  # the same without the timestamps (for the six-digit codes)


class Capture(logging.Handler):
    """Every record, rendered at emit time every way the service could write it."""

    def __init__(self) -> None:
        super().__init__(level=logging.DEBUG)
        self.addFilter(RequestIdFilter())
        self.text = TextFormatter()
        self.json = JsonFormatter()
        self.lines: list[Line] = []

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        text = self.text.format(record)
        as_json = self.json.format(record)
        extra = ""
        if record.exc_info:
            extra = "".join(traceback.format_exception(*record.exc_info))
        extra += (record.exc_text or "") + (record.stack_info or "")
        undated_json = {k: v for k, v in json.loads(as_json).items() if k != "at"}
        self.lines.append(
            Line(
                logger=record.name,
                level=record.levelname,
                texts=[message, text, as_json, extra],
                # TextFormatter starts with asctime, "2026-01-05 09:00:00,123 ".
                undated=[message, text[24:], json.dumps(undated_json), extra],
            )
        )


class StderrLines:
    """The access log's sink (stderr when served): each line written becomes a captured line."""

    def __init__(self, capture: Capture) -> None:
        self.capture = capture

    def write(self, text: str) -> int:
        for line in text.splitlines():
            undated = line[24:]
            if line.startswith("{"):
                undated = json.dumps({k: v for k, v in json.loads(line).items() if k != "at"})
            self.capture.lines.append(Line("auth_service.access", "INFO", [line], [undated]))
        return len(text)

    def flush(self) -> None:
        return None


@pytest.fixture
def capture() -> Iterator[Capture]:
    """A capturing handler on the root logger, root and the service's loggers at DEBUG (as
    ``configure_logging("DEBUG")`` sets them); everything restored afterwards."""
    handler = Capture()
    root = logging.getLogger()
    saved_root = root.level
    levels = {name: logging.getLogger(name).level for name in logging_config()["loggers"]}
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    for name, options in logging_config("DEBUG")["loggers"].items():
        logging.getLogger(name).setLevel(options["level"])
    try:
        yield handler
    finally:
        root.removeHandler(handler)
        root.setLevel(saved_root)
        for name, level in levels.items():
            logging.getLogger(name).setLevel(level)


class BothMailers:
    """The configured backend (``log``) and a ``file`` backend, each sent every message."""

    def __init__(self, first: Mailer, second: Mailer) -> None:
        self.backends = (first, second)

    async def send(self, message: MailMessage) -> None:
        for backend in self.backends:
            await backend.send(message)


@pytest.fixture
def tee_mail(monkeypatch: pytest.MonkeyPatch, mail_file: Path) -> None:
    """Containers built from now on mail through their backend and into ``mail_file``."""
    original = container_parts.create_mailer

    def create(settings: Settings, clock: Clock) -> Mailer:
        configured = original(settings, clock)
        assert isinstance(configured, LogMailer), settings.mail_backend
        return BothMailers(configured, FileMailer(mail_file, clock))

    monkeypatch.setattr(container_parts, "create_mailer", create)


# -- the sensitive values ----------------------------------------------------------------------


@dataclass
class Secrets:
    values: dict[str, set[str]] = field(default_factory=dict)
    codes: set[str] = field(default_factory=set)  # TOTP codes: six digits

    def add(self, kind: str, value: str) -> None:
        assert value, kind
        found = self.values.setdefault(kind, set())
        found.update({value, quote(value, safe="")})
        self.values.setdefault(f"{kind} (its sha256)", set()).add(
            hashlib.sha256(value.encode()).hexdigest()
        )
        if value.count(".") == 2:  # a JWS: its payload and signature alone count as well
            found.update(part for part in value.split(".")[1:] if len(part) > 16)

    def email(self, address: str) -> None:
        self.values.setdefault("email", set()).update({address, quote(address, safe="")})


def link_and_token(mail: dict[str, Any], base: str) -> tuple[str, str]:
    links = [word for word in mail["text"].split() if word.startswith(base + "?")]
    assert len(links) == 1, mail["text"]
    return links[0], str(parse_qs(urlsplit(links[0]).query)["token"][0])


def last_mail(mail_file: Path, to: str) -> dict[str, Any]:
    sent = [mail for mail in mails(mail_file) if mail["to"] == to]
    assert sent, (to, mails(mail_file))
    return sent[-1]


# -- the flows --------------------------------------------------------------------------------


async def ok(response: Any, status: int = 200) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body: dict[str, Any] = response.json() if response.content else {}
    return body


async def login(service: Service, email: str, password: str, status: int = 200) -> dict[str, Any]:
    answer = await service.client.post("/auth/login", json={"email": email, "password": password})
    return await ok(answer, status)


def add_pair(secrets: Secrets, pair: dict[str, Any]) -> None:
    secrets.add("access token", pair["access_token"])
    secrets.add("refresh token", pair["refresh_token"])


async def user_flows(
    service: Service, clock: FrozenClock, mail_file: Path, secrets: Secrets
) -> dict[str, str]:
    """Register, login, TOTP, MFA login, refresh, logout, password change/forgot/reset."""
    for address in ("admin@example.com", "alice@example.com", "bob@example.com"):
        secrets.email(address)
    secrets.email("nobody@example.com")
    for password in (PASSWORD, ALICE_PASSWORD, WRONG_PASSWORD, CHANGED_PASSWORD, RESET_PASSWORD):
        secrets.add("password", password)
    admin = await admin_headers(service)
    secrets.add("access token", admin["Authorization"].removeprefix("Bearer "))

    alice = await register_and_login(service, "alice@example.com", ALICE_PASSWORD)
    add_pair(secrets, alice.pair)
    await login(service, "alice@example.com", WRONG_PASSWORD, 401)
    await login(service, "nobody@example.com", WRONG_PASSWORD, 401)

    # TOTP: setup (secret, otpauth URI), confirm (recovery codes), both second steps.
    bob = await register_and_login(service, "bob@example.com")
    add_pair(secrets, bob.pair)
    setup = await ok(
        await service.client.post(
            "/auth/mfa/totp/setup", json={"password": PASSWORD}, headers=bob.bearer
        )
    )
    secrets.add("TOTP secret", setup["secret"])
    secrets.add("otpauth URI", setup["otpauth_uri"])
    code = code_at(setup["secret"], clock)
    secrets.codes.add(code)
    confirmed = await ok(
        await service.client.post("/auth/mfa/totp/confirm", json={"code": code}, headers=bob.bearer)
    )
    for recovery in confirmed["recovery_codes"]:
        secrets.add("recovery code", recovery)
        secrets.add("recovery code", recovery.replace("-", ""))
    clock.advance(30)
    mfa_token = await password_step(service, "bob@example.com")
    secrets.add("mfa token", mfa_token)
    code = code_at(setup["secret"], clock)
    secrets.codes.add(code)
    add_pair(secrets, await ok(await second_step(service, mfa_token, code)))
    mfa_token = await password_step(service, "bob@example.com")
    secrets.add("mfa token", mfa_token)
    wrong = "000000" if code != "000000" else "111111"
    assert (await second_step(service, mfa_token, wrong)).status_code == 401
    pair = await ok(await second_step(service, mfa_token, confirmed["recovery_codes"][0]))
    add_pair(secrets, pair)

    # Refresh, then the same refresh token again (reuse: the family is revoked).
    refreshed = await ok(
        await service.client.post(
            "/auth/refresh", json={"refresh_token": alice.pair["refresh_token"]}
        )
    )
    add_pair(secrets, refreshed)
    clock.advance(11)  # past refresh_reuse_grace_seconds: a reuse now
    reused = await service.client.post(
        "/auth/refresh", json={"refresh_token": alice.pair["refresh_token"]}
    )
    assert reused.status_code == 401, reused.text

    # Logout (with its refresh token), logout-all.
    pair = await login(service, "alice@example.com", ALICE_PASSWORD)
    add_pair(secrets, pair)
    await ok(
        await service.client.post(
            "/auth/logout",
            json={"refresh_token": pair["refresh_token"]},
            headers=bearer(pair["access_token"]),
        ),
        204,
    )
    pair = await login(service, "alice@example.com", ALICE_PASSWORD)
    add_pair(secrets, pair)
    await ok(
        await service.client.post("/auth/logout-all", headers=bearer(pair["access_token"])), 204
    )

    # Password change (a wrong current password first), forgot (known and unknown), reset.
    clock.advance(1)
    pair = await login(service, "alice@example.com", ALICE_PASSWORD)
    add_pair(secrets, pair)
    change = "/auth/password/change"
    wrong_change = {"current_password": WRONG_PASSWORD, "new_password": CHANGED_PASSWORD}
    answer = await service.client.post(
        change, json=wrong_change, headers=bearer(pair["access_token"])
    )
    assert answer.status_code == 401, answer.text
    body = {"current_password": ALICE_PASSWORD, "new_password": CHANGED_PASSWORD}
    await ok(
        await service.client.post(change, json=body, headers=bearer(pair["access_token"])), 204
    )
    for address in ("alice@example.com", "nobody@example.com"):
        answer = await service.client.post("/auth/password/forgot", json={"email": address})
        assert answer.status_code == 202, answer.text
    link, token = link_and_token(last_mail(mail_file, "alice@example.com"), RESET_URL)
    secrets.add("reset link", link)
    secrets.add("reset token", token)
    reset = {"token": token, "new_password": RESET_PASSWORD}
    await ok(await service.client.post("/auth/password/reset", json=reset), 204)
    again = await service.client.post("/auth/password/reset", json=reset)
    assert again.status_code == 400, again.text
    clock.advance(1)
    pair = await login(service, "alice@example.com", RESET_PASSWORD)
    add_pair(secrets, pair)
    return {"admin": admin["Authorization"], "alice": pair["access_token"], "bob": bob.user_id}


async def client_flows(service: Service, admin: str, token: str, secrets: Secrets) -> None:
    """/validate, /validate/batch, /oauth/introspect, /oauth/token, secret rotation."""
    client = await new_client(service, scopes=["revoke"])
    secrets.add("client secret", client.secret)
    answer = await service.client.post("/validate", json={"token": token}, headers=client.basic)
    assert (await ok(answer))["valid"] is True
    batch = {"tokens": [token, "not.a.token"]}
    await ok(await service.client.post("/validate/batch", json=batch, headers=client.basic))
    wrong = ServiceClient(client.client_id, client.secret[::-1])
    secrets.add("client secret", wrong.secret)
    refused = await service.client.post("/validate", json={"token": token}, headers=wrong.basic)
    assert refused.status_code == 401, refused.text
    assert (await ok(await form(service, "/oauth/introspect", {"token": token}, client)))["active"]

    issued = await ok(await form(service, "/oauth/token", GRANT, client))
    secrets.add("service token", issued["access_token"])
    introspected = await form(
        service, "/oauth/introspect", {"token": issued["access_token"]}, client
    )
    assert (await ok(introspected))["active"] is True

    headers = {"Authorization": admin}
    created = await ok(
        await service.client.post("/admin/clients", json={"name": "reports"}, headers=headers), 201
    )
    secrets.add("client secret", created["client_secret"])
    rotated = await ok(
        await service.client.post(
            f"/admin/clients/{created['client_id']}/rotate-secret",
            json={"overlap_seconds": 0},
            headers=headers,
        )
    )
    secrets.add("client secret", rotated["client_secret"])
    rotated_client = ServiceClient(created["client_id"], rotated["client_secret"])
    issued = await ok(await form(service, "/oauth/token", GRANT, rotated_client))
    secrets.add("service token", issued["access_token"])
    old = ServiceClient(created["client_id"], created["client_secret"])
    assert (await form(service, "/oauth/token", GRANT, old)).status_code == 401


async def admin_flows(
    service: Service, ids: dict[str, str], mail_file: Path, secrets: Secrets
) -> None:
    """User search by email, disable/enable, roles, MFA reset, webhooks, invitations."""
    headers = {"Authorization": ids["admin"]}
    found = await ok(
        await service.client.get(
            "/admin/users", params={"email": "alice@example.com"}, headers=headers
        )
    )
    [alice] = found["users"]
    path = f"/admin/users/{alice['id']}"
    await ok(await service.client.post(f"{path}/disable", headers=headers), 204)
    await login(service, "alice@example.com", RESET_PASSWORD, 403)
    await ok(await service.client.post(f"{path}/enable", headers=headers), 204)
    await ok(
        await service.client.put(f"{path}/roles", json={"roles": ["billing"]}, headers=headers)
    )
    reset = f"/admin/users/{ids['bob']}/mfa/reset"
    await ok(await service.client.post(reset, headers=headers), 204)
    assert "reset" in last_mail(mail_file, "bob@example.com")["subject"]

    hook = {"url": "https://hooks.example.com/auth", "event_types": ["key.rotated"]}
    created = await ok(
        await service.client.post("/admin/webhooks", json=hook, headers=headers), 201
    )
    assert created["secret"].startswith("whsec_")
    secrets.add("webhook secret", created["secret"])
    secrets.add("webhook secret", created["secret"].removeprefix("whsec_"))

    secrets.email("carol@example.com")
    invited = {"email": "carol@example.com", "roles": []}
    await ok(await service.client.post("/admin/invitations", json=invited, headers=headers), 201)
    link, token = link_and_token(last_mail(mail_file, "carol@example.com"), INVITE_URL)
    secrets.add("invitation link", link)
    secrets.add("invitation token", token)
    body = {"email": "carol@example.com", "password": PASSWORD, "invitation_token": token}
    await ok(await service.client.post("/auth/register", json=body), 201)
    add_pair(secrets, await login(service, "carol@example.com", PASSWORD))


async def verification_flows(service: Service, mail_file: Path, secrets: Secrets) -> None:
    """Register (202) → verify → login; resend for an unverified and an unknown address."""
    for address in ("dave@example.com", "erin@example.com", "frank@example.com"):
        secrets.email(address)
    secrets.add("password", DAVE_PASSWORD)
    for address in ("Dave@Example.com", "erin@example.com"):
        answer = await service.client.post(
            "/auth/register", json={"email": address, "password": DAVE_PASSWORD}
        )
        assert answer.status_code == 202, answer.text
    link, token = link_and_token(last_mail(mail_file, "dave@example.com"), VERIFY_URL)
    secrets.add("verification link", link)
    secrets.add("verification token", token)
    await login(service, "dave@example.com", DAVE_PASSWORD, 403)
    verified = {"token": token, "password": DAVE_PASSWORD}
    await ok(await service.client.post("/auth/verify-email", json=verified), 204)
    add_pair(secrets, await login(service, "dave@example.com", DAVE_PASSWORD))
    for address in ("erin@example.com", "frank@example.com"):
        answer = await service.client.post("/auth/verify-email/resend", json={"email": address})
        assert answer.status_code == 202, answer.text
    for mail in mails(mail_file):
        if mail["to"] == "erin@example.com":
            link, token = link_and_token(mail, VERIFY_URL)
            secrets.add("verification link", link)
            secrets.add("verification token", token)


# -- the test ---------------------------------------------------------------------------------


@pytest.fixture
def verifying(make_settings: Callable[..., Settings]) -> Settings:
    return make_settings(
        mail_backend="log",
        log_format="json",  # its access lines as JSON (the first service's are text)
        require_email_verification=True,
        email_verification_url=VERIFY_URL,
        password_reset_url=RESET_URL,
    )


@pytest.fixture
async def service(
    capture: Capture,
    tee_mail: None,
    make_container: Callable[..., Container],
    make_settings: Callable[..., Settings],
) -> AsyncIterator[Service]:
    settings = make_settings(
        mail_backend="log",
        password_reset_url=RESET_URL,
        invitation_url=INVITE_URL,
        email_verification_url=VERIFY_URL,
    )
    async with started(make_container(settings)) as running:
        running.app.state.access_log.sink = partial(StderrLines, capture)
        yield running


def leaks(lines: list[Line], secrets: Secrets) -> list[tuple[str, str, str, str]]:
    """(logger, level, kind, line) for each captured line holding a sensitive value."""
    found: list[tuple[str, str, str, str]] = []
    code_patterns = [re.compile(rf"(?<![0-9A-Za-z]){c}(?![0-9A-Za-z])") for c in secrets.codes]
    for line in lines:
        if line.logger.startswith(CLIENT_SIDE):
            continue
        joined = "\n".join(line.texts)
        lowered = joined.lower()
        for kind, values in secrets.values.items():
            if kind == "email":  # an address in any case
                hit = any(value.lower() in lowered for value in values)
            else:
                hit = any(value in joined for value in values)
            if hit:
                found.append((line.logger, line.level, kind, line.texts[0][:300]))
        if "$argon2" in joined:
            found.append((line.logger, line.level, "password hash", line.texts[0][:300]))
        undated = "\n".join(line.undated)
        if any(pattern.search(undated) for pattern in code_patterns):
            found.append((line.logger, line.level, "TOTP code", line.texts[0][:300]))
    return found


async def test_no_log_line_holds_a_secret_an_address_or_a_link(
    capture: Capture,
    service: Service,
    clock: FrozenClock,
    mail_file: Path,
    make_container: Callable[..., Container],
    verifying: Settings,
) -> None:
    secrets = Secrets()
    ids = await user_flows(service, clock, mail_file, secrets)
    await client_flows(service, ids["admin"], ids["alice"], secrets)
    await admin_flows(service, ids, mail_file, secrets)
    async with started(make_container(verifying)) as second:
        second.app.state.access_log.sink = partial(StderrLines, capture)
        await verification_flows(second, mail_file, secrets)
    service.app.state.access_log.flush()

    mail_lines = [line for line in capture.lines if line.logger == "auth_service.mail"]
    sent = mails(mail_file)
    assert len(sent) >= 6 and len(mail_lines) >= len(sent), (len(sent), len(mail_lines))
    assert all("[redacted]" in line.texts[0] for line in mail_lines if "token=" in line.texts[0])
    assert len(capture.lines) > len(mail_lines)  # more than the mail lines were seen
    access = [line for line in capture.lines if line.logger == "auth_service.access"]
    assert len(access) > 50 and any(line.texts[0].startswith("{") for line in access)

    found = leaks(capture.lines, secrets)
    # The database drivers print each statement's parameters at DEBUG: logs.py keeps them
    # at WARNING whatever AUTH_LOG_LEVEL says (this caught it: aiosqlite printed emails).
    assert not found, "sensitive values in log lines:\n" + "\n".join(map(repr, found))
