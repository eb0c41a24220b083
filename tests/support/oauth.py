"""Service clients and form posts for the RFC endpoint tests."""

from __future__ import annotations

import base64
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

import httpx

from tests.support.service import Service


@dataclass(frozen=True)
class ServiceClient:
    client_id: str
    secret: str

    @property
    def basic(self) -> dict[str, str]:
        raw = f"{self.client_id}:{self.secret}".encode()
        return {"Authorization": "Basic " + base64.b64encode(raw).decode()}

    @property
    def post_credentials(self) -> dict[str, str]:
        return {"client_id": self.client_id, "client_secret": self.secret}


async def new_client(
    service: Service, scopes: Sequence[str] = (), name: str = "billing"
) -> ServiceClient:
    created = await service.container.clients.create(name=name, scopes=scopes)
    return ServiceClient(created.client.client_id, created.client_secret)


async def form(
    service: Service,
    path: str,
    data: dict[str, str] | list[tuple[str, str]],
    client: ServiceClient | None = None,
) -> httpx.Response:
    headers = client.basic if client else {}
    if isinstance(data, list):  # pairs: the same name may be given twice
        headers = {**headers, "Content-Type": "application/x-www-form-urlencoded"}
        return await service.client.post(path, content=urlencode(data), headers=headers)
    return await service.client.post(path, data=data, headers=headers)


async def service_token(service: Service, client: ServiceClient, scope: str | None = None) -> str:
    data = {"grant_type": "client_credentials", **({"scope": scope} if scope else {})}
    response = await form(service, "/oauth/token", data, client)
    assert response.status_code == 200, response.text
    token: str = response.json()["access_token"]
    return token


async def introspect(service: Service, token: str, client: ServiceClient) -> dict[str, Any]:
    response = await form(service, "/oauth/introspect", {"token": token}, client)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body
