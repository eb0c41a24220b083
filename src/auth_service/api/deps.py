"""Providers for route dependencies, and their ``Annotated`` aliases."""

from __future__ import annotations

import base64
import uuid
from typing import Annotated, Any
from urllib.parse import unquote_plus

from fastapi import Depends, Request

from auth_service.container import Container
from auth_service.errors import InvalidClientError, UnauthorizedError
from auth_service.services.accounts import Accounts
from auth_service.services.clients import Clients
from auth_service.services.health import Health
from auth_service.services.keyring import KeyRing
from auth_service.services.login import Logins
from auth_service.services.passwords import Passwords
from auth_service.services.rotation import KeyRotation
from auth_service.services.sessions import Sessions
from auth_service.services.totp import Totp
from auth_service.services.validation import TokenValidator
from auth_service.settings import Settings


def container_of(request: Request) -> Container:
    container: Container = request.app.state.container
    return container


async def get_container(request: Request) -> Container:
    return container_of(request)


ContainerDep = Annotated[Container, Depends(get_container)]


# One typed dependency per service: a route names the service it calls, never the container.
async def get_settings(container: ContainerDep) -> Settings:
    return container.settings


async def get_keyring(container: ContainerDep) -> KeyRing:
    return container.keyring


async def get_accounts(container: ContainerDep) -> Accounts:
    return container.accounts


async def get_logins(container: ContainerDep) -> Logins:
    return container.logins


async def get_sessions(container: ContainerDep) -> Sessions:
    return container.sessions


async def get_passwords(container: ContainerDep) -> Passwords:
    return container.passwords


async def get_totp(container: ContainerDep) -> Totp:
    return container.totp


async def get_rotation(container: ContainerDep) -> KeyRotation:
    return container.rotation


async def get_validator(container: ContainerDep) -> TokenValidator:
    return container.validator


async def get_clients(container: ContainerDep) -> Clients:
    return container.clients


async def get_health(container: ContainerDep) -> Health:
    return container.health


SettingsDep = Annotated[Settings, Depends(get_settings)]
KeyRingDep = Annotated[KeyRing, Depends(get_keyring)]
AccountsDep = Annotated[Accounts, Depends(get_accounts)]
LoginsDep = Annotated[Logins, Depends(get_logins)]
SessionsDep = Annotated[Sessions, Depends(get_sessions)]
PasswordsDep = Annotated[Passwords, Depends(get_passwords)]
TotpDep = Annotated[Totp, Depends(get_totp)]
KeyRotationDep = Annotated[KeyRotation, Depends(get_rotation)]
ValidatorDep = Annotated[TokenValidator, Depends(get_validator)]
ClientsDep = Annotated[Clients, Depends(get_clients)]
HealthDep = Annotated[Health, Depends(get_health)]


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


async def get_access_claims(request: Request, validator: ValidatorDep) -> dict[str, Any]:
    """Claims of the caller's valid user access token (service tokens are refused here)."""
    verdict = await validator.validate(_bearer_token(request))
    if not verdict.valid or verdict.claims is None:
        raise UnauthorizedError(f"The access token is not valid ({verdict.error}).")
    if not isinstance(verdict.claims.get("sid"), str):
        raise UnauthorizedError("A user access token is required.")
    return verdict.claims


AccessClaimsDep = Annotated[dict[str, Any], Depends(get_access_claims)]


def user_id(claims: dict[str, Any]) -> uuid.UUID:
    """The user id of a user access token's claims (``get_access_claims``)."""
    return uuid.UUID(str(claims["sub"]))


def user_ids(claims: dict[str, Any]) -> tuple[uuid.UUID, uuid.UUID]:
    """(user id, session id) of a user access token's claims (``get_access_claims``)."""
    return user_id(claims), uuid.UUID(str(claims["sid"]))


def basic_credentials(request: Request) -> tuple[str, str] | None:
    """``(client_id, secret)`` from HTTP Basic (RFC 6749 §2.3.1: each part form-urlencoded),
    None without a Basic header; ``InvalidClientError`` for a malformed one."""
    scheme, _, credentials = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(credentials.strip(), validate=True).decode()
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidClientError() from exc
    client_id, separator, secret = decoded.partition(":")
    if not separator:
        raise InvalidClientError()
    return unquote_plus(client_id), unquote_plus(secret)


async def authenticate_client(
    request: Request, container: Container, credentials: tuple[str, str] | None
) -> str:
    """The authenticated client's id; failures are limited per client IP too."""
    if credentials is None:
        raise InvalidClientError("Client authentication (HTTP Basic) is required.")
    ip = await get_client_ip(request, container.settings)
    return await container.clients.authenticate(*credentials, ip)


async def get_client_id(request: Request, container: ContainerDep) -> str:
    """HTTP Basic client authentication (``/validate``)."""
    return await authenticate_client(request, container, basic_credentials(request))
