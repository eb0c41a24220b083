"""A container started as an app (lifespan run) with an in-process HTTP client."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import httpx
from fastapi import FastAPI

from auth_service.app import create_app
from auth_service.container import Container


@dataclass
class Service:
    app: FastAPI
    container: Container
    client: httpx.AsyncClient


@asynccontextmanager
async def started(
    container: Container, base_url: str = "http://testserver"
) -> AsyncIterator[Service]:
    """``container`` as a started app (lifespan run) with an in-process HTTP client (an
    ``https://`` base URL makes it send ``Secure`` cookies, as a browser does)."""
    app = create_app(container=container)
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url=base_url) as client,
    ):
        yield Service(app=app, container=container, client=client)
