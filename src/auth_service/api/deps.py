"""Providers for route dependencies, and their ``Annotated`` aliases."""

from __future__ import annotations

import base64
from typing import Annotated, Any
from urllib.parse import unquote_plus

from fastapi import Depends, Request

from auth_service.container import Container
from auth_service.errors import InvalidClientError, UnauthorizedError
from auth_service.services.keyring import KeyRing
from auth_service.settings import Settings


def container_of(request: Request) -> Container:
    container: Container = request.app.state.container
    return container


async def get_container(request: Request) -> Container:
    return container_of(request)


ContainerDep = Annotated[Container, Depends(get_container)]


async def get_settings(container: ContainerDep) -> Settings:
    return container.settings


async def get_keyring(container: ContainerDep) -> KeyRing:
    return container.keyring


SettingsDep = Annotated[Settings, Depends(get_settings)]
KeyRingDep = Annotated[KeyRing, Depends(get_keyring)]


async def get_client_ip(request: Request, settings: SettingsDep) -> str | None:
    """The peer's address; behind a trusted proxy, the nearest untrusted X-Forwarded-For hop."""
    peer = request.client.host if request.client else None
    return resolve_client_ip(peer, request.headers.get("x-forwarded-for", ""), settings)


def resolve_client_ip(peer: str | None, forwarded_for: str, settings: Settings) -> str | None:
    if peer is None or peer not in settings.trusted_proxies:
        return peer
    hops = [hop.strip() for hop in forwarded_for.split(",")]
    for hop in reversed([hop for hop in hops if hop]):
        if hop not in settings.trusted_proxies:
            return hop
    return peer


ClientIpDep = Annotated[str | None, Depends(get_client_ip)]


def _bearer_token(request: Request) -> str:
    scheme, _, credentials = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not credentials.strip():
        raise UnauthorizedError("A Bearer access token is required.")
    return credentials.strip()


async def get_access_claims(request: Request, container: ContainerDep) -> dict[str, Any]:
    """Claims of the caller's valid user access token (service tokens are refused here)."""
    verdict = await container.validator.validate(_bearer_token(request))
    if not verdict.valid or verdict.claims is None:
        raise UnauthorizedError(f"The access token is not valid ({verdict.error}).")
    if not isinstance(verdict.claims.get("sid"), str):
        raise UnauthorizedError("A user access token is required.")
    return verdict.claims


AccessClaimsDep = Annotated[dict[str, Any], Depends(get_access_claims)]


async def get_client_id(request: Request, container: ContainerDep) -> str:
    """HTTP Basic client authentication (RFC 6749 §2.3.1: each part form-urlencoded)."""
    scheme, _, credentials = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "basic":
        raise InvalidClientError("Client authentication (HTTP Basic) is required.")
    try:
        decoded = base64.b64decode(credentials.strip(), validate=True).decode()
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidClientError() from exc
    client_id, separator, secret = decoded.partition(":")
    if not separator:
        raise InvalidClientError()
    ip = await get_client_ip(request, container.settings)  # failures are limited per IP too
    return await container.clients.authenticate(unquote_plus(client_id), unquote_plus(secret), ip)
