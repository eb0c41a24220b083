"""Providers for route dependencies, and their ``Annotated`` aliases."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.ext.asyncio import AsyncSession

from auth_service.clock import Clock
from auth_service.container import Container
from auth_service.services.keyring import KeyRing
from auth_service.settings import Settings
from auth_service.store.base import Store


async def get_container(request: Request) -> Container:
    container: Container = request.app.state.container
    return container


ContainerDep = Annotated[Container, Depends(get_container)]


async def get_settings(container: ContainerDep) -> Settings:
    return container.settings


async def get_clock(container: ContainerDep) -> Clock:
    return container.clock


async def get_store(container: ContainerDep) -> Store:
    return container.store


async def get_keyring(container: ContainerDep) -> KeyRing:
    return container.keyring


async def get_session(container: ContainerDep) -> AsyncIterator[AsyncSession]:
    """One session per request: committed when the route returns, rolled back on error."""
    async with container.sessionmaker() as session:
        try:
            yield session
            await session.commit()
        except BaseException:
            await session.rollback()
            raise


SettingsDep = Annotated[Settings, Depends(get_settings)]
ClockDep = Annotated[Clock, Depends(get_clock)]
StoreDep = Annotated[Store, Depends(get_store)]
KeyRingDep = Annotated[KeyRing, Depends(get_keyring)]
SessionDep = Annotated[AsyncSession, Depends(get_session)]
