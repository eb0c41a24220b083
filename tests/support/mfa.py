"""Shared steps for the two-factor and password tests: a started app on a given container,
a user with TOTP on, the two login steps, and raw reads of the database."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import httpx
import jwt
import pyotp
from sqlalchemy import text

from auth_service.clock import FrozenClock
from auth_service.container import Container
from tests.support.http import PASSWORD, LoggedIn, register_and_login
from tests.support.service import Service


@dataclass
class MfaUser:
    user: LoggedIn
    secret: str
    recovery_codes: list[str]

    @property
    def email(self) -> str:
        return self.user.email

    @property
    def user_id(self) -> str:
        return self.user.user_id


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def claims(token: str) -> dict[str, Any]:
    """The payload of a JWS, signature not checked (the service's /validate checks it)."""
    decoded: dict[str, Any] = jwt.decode(token, options={"verify_signature": False})
    return decoded


def code_at(secret: str, clock: FrozenClock, offset_seconds: float = 0) -> str:
    """The TOTP code of ``secret`` at the service's time plus ``offset_seconds``."""
    return pyotp.TOTP(secret).at(clock.now() + timedelta(seconds=offset_seconds))


async def enable_totp(
    service: Service, clock: FrozenClock, email: str = "alice@example.com"
) -> MfaUser:
    """Register, log in, set up and confirm TOTP; the clock then moves to the next step (the
    confirming code's step is used up)."""
    user = await register_and_login(service, email)
    setup = await service.client.post(
        "/auth/mfa/totp/setup", json={"password": PASSWORD}, headers=user.bearer
    )
    assert setup.status_code == 200, setup.text
    secret = str(setup.json()["secret"])
    confirmed = await service.client.post(
        "/auth/mfa/totp/confirm", json={"code": code_at(secret, clock)}, headers=user.bearer
    )
    assert confirmed.status_code == 200, confirmed.text
    clock.advance(30)
    return MfaUser(user=user, secret=secret, recovery_codes=confirmed.json()["recovery_codes"])


async def password_step(service: Service, email: str, password: str = PASSWORD) -> str:
    """The first login step of a user with TOTP on: the mfa_token."""
    response = await service.client.post("/auth/login", json={"email": email, "password": password})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body.get("mfa_required") is True, body
    return str(body["mfa_token"])


async def second_step(service: Service, mfa_token: str, code: str) -> httpx.Response:
    return await service.client.post("/auth/login/mfa", json={"mfa_token": mfa_token, "code": code})


def assert_error(response: httpx.Response, status: int, error: str) -> None:
    assert response.status_code == status, response.text
    assert response.json()["error"] == error, response.text


async def raw_rows(container: Container, sql: str, **params: Any) -> Sequence[Any]:
    """Rows read with plain SQL, around the ORM."""
    async with container.engine.connect() as connection:
        result = await connection.execute(text(sql), params)
        return result.all()


async def execute(container: Container, sql: str, **params: Any) -> None:
    async with container.engine.begin() as connection:
        await connection.execute(text(sql), params)


RECOVERY_FORMAT = re.compile(r"[A-Z2-7]{5}(-[A-Z2-7]{5}){3}")
TOKEN_PAIR_KEYS = {
    "access_token",
    "token_type",
    "expires_in",
    "refresh_token",
    "refresh_expires_in",
}


def wrong_code(mfa: MfaUser, clock: FrozenClock) -> str:
    """Six digits that are none of the codes the service accepts right now (±1 step)."""
    valid = {code_at(mfa.secret, clock, offset) for offset in (-30, 0, 30)}
    return next(code for code in ("000000", "111111", "222222", "333333") if code not in valid)


def canonical(code: str) -> str:
    return code.replace("-", "").upper()


async def login_tokens(service: Service, email: str) -> dict[str, object]:
    response = await service.client.post("/auth/login", json={"email": email, "password": PASSWORD})
    assert response.status_code == 200, response.text
    body: dict[str, object] = response.json()
    return body


async def mfa_enabled(service: Service, access_token: str) -> bool:
    me = await service.client.get("/auth/me", headers=bearer(access_token))
    assert me.status_code == 200, me.text
    return bool(me.json()["mfa_enabled"])


# -- the flow --------------------------------------------------------------------------------
