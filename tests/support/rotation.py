"""Shared set-up for the key-rotation tests: a started in-process service whose keys come
from a run-wide pool without repeats (a rotation makes a new key; a repeated key would
collide on its kid), an admin's Bearer headers and a client."""

from __future__ import annotations

import base64
import json
import uuid
from typing import Any

from sqlalchemy import select, update

from auth_service.container import Container
from auth_service.db.models import SigningKey, User
from tests.support.http import PASSWORD, register_and_login
from tests.support.service import Service


async def admin_headers(service: Service, email: str = "admin@example.com") -> dict[str, str]:
    user = await register_and_login(service, email)
    async with service.container.db.writer() as session, session.begin():
        await session.execute(
            update(User).where(User.id == uuid.UUID(user.user_id)).values(roles=["admin"])
        )
    login = await service.client.post("/auth/login", json={"email": email, "password": PASSWORD})
    assert login.status_code == 200, login.text
    return {"Authorization": f"Bearer {login.json()['access_token']}"}


async def access_token(service: Service, email: str) -> str:
    login = await service.client.post("/auth/login", json={"email": email, "password": PASSWORD})
    assert login.status_code == 200, login.text
    token: str = login.json()["access_token"]
    return token


async def statuses(container: Container) -> dict[str, list[str]]:
    """status → kids, oldest first."""
    async with container.db.writer() as session:
        rows = (await session.scalars(select(SigningKey).order_by(SigningKey.created_at))).all()
    found: dict[str, list[str]] = {}
    for row in rows:
        found.setdefault(row.status, []).append(row.kid)
    return found


async def jwks_kids(service: Service) -> list[str]:
    response = await service.client.get("/.well-known/jwks.json")
    assert response.status_code == 200
    return [key["kid"] for key in response.json()["keys"]]


def kid_of(token: str) -> str:
    segment = token.split(".")[0]
    header: dict[str, Any] = json.loads(
        base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))
    )
    return str(header["kid"])


async def verdict(service: Service, token: str, headers: dict[str, str]) -> dict[str, Any]:
    response = await service.client.post("/validate", json={"token": token}, headers=headers)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body
