"""Providers for route dependencies, and their ``Annotated`` aliases."""

from __future__ import annotations

import base64
import uuid
from typing import Annotated, Any
from urllib.parse import unquote_plus

from fastapi import Depends, Request

from auth_service.api.middleware import nearest_untrusted_hop
from auth_service.container import Container
from auth_service.errors import InvalidClientError, UnauthorizedError
from auth_service.metrics import Exporter
from auth_service.request_context import current_request
from auth_service.services.accounts import Accounts
from auth_service.services.admin_users import AdminUsers
from auth_service.services.audit import Audit
from auth_service.services.clients import Clients
from auth_service.services.health import Health
from auth_service.services.invitations import Invitations
from auth_service.services.keyring import KeyRing
from auth_service.services.login import Logins
from auth_service.services.passwords import Passwords
from auth_service.services.registration import Registrations
from auth_service.services.rotation import KeyRotation
from auth_service.services.sessions import Sessions
from auth_service.services.totp import Totp
from auth_service.services.validation import TokenValidator
from auth_service.services.verification import EmailVerification
from auth_service.services.webhooks import Webhooks
from auth_service.settings import Settings


def container_of(request: Request) -> Container:
    container: Container = request.app.state.container
    return container


async def get_container(request: Request) -> Container:
    return container_of(request)


ContainerDep = Annotated[Container, Depends(get_container)]


def part(name: str) -> Any:
    """``Depends`` on one part of the container (a route names the service it calls, never
    the container); ``name`` must be a field of ``Container``."""
    if name not in Container.__dataclass_fields__:
        raise AttributeError(f"the container has no part {name!r}")

    async def provide(request: Request) -> Any:
        return getattr(container_of(request), name)

    provide.__name__ = f"get_{name}"
    return Depends(provide)


SettingsDep = Annotated[Settings, part("settings")]
KeyRingDep = Annotated[KeyRing, part("keyring")]
AccountsDep = Annotated[Accounts, part("accounts")]
AdminUsersDep = Annotated[AdminUsers, part("admin_users")]
RegistrationsDep = Annotated[Registrations, part("registrations")]
VerificationDep = Annotated[EmailVerification, part("verification")]
InvitationsDep = Annotated[Invitations, part("invitations")]
AuditDep = Annotated[Audit, part("audit")]
WebhooksDep = Annotated[Webhooks, part("webhooks")]
LoginsDep = Annotated[Logins, part("logins")]
SessionsDep = Annotated[Sessions, part("sessions")]
PasswordsDep = Annotated[Passwords, part("passwords")]
TotpDep = Annotated[Totp, part("totp")]
KeyRotationDep = Annotated[KeyRotation, part("rotation")]
ValidatorDep = Annotated[TokenValidator, part("validator")]
ClientsDep = Annotated[Clients, part("clients")]
HealthDep = Annotated[Health, part("health")]
MetricsDep = Annotated[Exporter, part("metrics")]


async def get_client_ip(request: Request, settings: SettingsDep) -> str | None:
    """The peer's address; behind a trusted proxy, the nearest untrusted X-Forwarded-For hop."""
    peer = request.client.host if request.client else None
    return resolve_client_ip(peer, request.headers.get("x-forwarded-for", ""), settings)


def resolve_client_ip(peer: str | None, forwarded_for: str, settings: Settings) -> str | None:
    if peer is None or peer not in settings.trusted_proxies:
        return peer
    return nearest_untrusted_hop(peer, forwarded_for, settings.trusted_proxies)


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
    current_request().actor = str(verdict.claims["sub"])  # the audit log's actor
    return verdict.claims


AccessClaimsDep = Annotated[dict[str, Any], Depends(get_access_claims)]


async def get_optional_access_claims(
    request: Request, validator: ValidatorDep
) -> dict[str, Any] | None:
    """None without an Authorization header; else as ``get_access_claims`` (401 if bad)."""
    if "authorization" not in request.headers:
        return None
    return await get_access_claims(request, validator)


OptionalAccessClaimsDep = Annotated[dict[str, Any] | None, Depends(get_optional_access_claims)]


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
    client_id = await container.clients.authenticate(*credentials, ip)
    request.state.client_id = client_id  # for the access line
    return client_id


async def get_client_id(request: Request, container: ContainerDep) -> str:
    """HTTP Basic client authentication (``/validate``)."""
    return await authenticate_client(request, container, basic_credentials(request))
