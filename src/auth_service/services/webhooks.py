"""Security webhooks: the endpoints operators register, and the outbox the audit log fills.

An event is put in the outbox (``webhook_deliveries``) by ``Outbox.enqueue``, which the audit
log calls in the transaction of the change: a delivery exists exactly when its event
committed, and nothing is sent from the request (``webhook_sender.py`` sends). Secrets are
``whsec_`` + base64 of 32 random bytes (the Standard Webhooks form), sealed at rest.
"""

from __future__ import annotations

import base64
import ipaddress
import re
import secrets
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from auth_service.clock import Clock
from auth_service.crypto.envelope import Envelope
from auth_service.db.models import WebhookDelivery, WebhookEndpoint
from auth_service.db.session import Database
from auth_service.errors import InvalidRequestError, NotFoundError

if TYPE_CHECKING:
    from auth_service.services.audit import Audit

SECRET_PURPOSE = "webhook-secret"  # noqa: S105  (an envelope purpose, not a secret)
MAX_ENDPOINTS = 20
# Audit types → the event a subscriber sees (docs/api.md lists them).
EVENTS: Mapping[str, str] = {
    "user.disabled": "user.disabled",
    "logout_all": "sessions.revoked",
    "admin.user_tokens_revoked": "sessions.revoked",
    "admin.user_roles_changed": "user.roles_changed",
    "refresh.reuse_detected": "refresh.reuse_detected",
    "key.promoted": "key.rotated",
    "key.revoked": "key.revoked",
    "mfa.enabled": "mfa.changed",
    "mfa.disabled": "mfa.changed",
    "admin.user_mfa_reset": "mfa.changed",
}
EVENT_TYPES = frozenset(EVENTS.values())


@dataclass(frozen=True, slots=True)
class NewEndpoint:
    endpoint: WebhookEndpoint
    secret: str  # shown once


# Labels of 1-63 letters, digits and inner hyphens, dot-separated, an optional final dot.
_HOST_NAME = re.compile(
    r"(?=.{1,253}\.?$)(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)*"
    r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.?"
)


def check_url(url: str, *, production: bool) -> str:
    """An absolute http(s) URL without credentials, of a well-formed host and port; in
    production https only, and never an internal address (loopback, private, link-local
    such as the cloud metadata address, or ``localhost``): ``internal_address``."""
    bad = InvalidRequestError("url: an absolute https URL of at most 2048 characters")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise bad from None
    host = parts.hostname
    if len(url) > 2048 or parts.scheme not in ("https", "http") or not host:
        raise bad
    if port == 0 or (not _HOST_NAME.fullmatch(host) and _ip(host) is None):
        raise bad
    if parts.username is not None or parts.password is not None:
        raise InvalidRequestError("url: no credentials in the URL")
    if production and parts.scheme != "https":
        raise InvalidRequestError("url: https is required in production")
    if production and internal_address(host):
        raise InvalidRequestError("url: an internal address is refused in production")
    return url


_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
_SPECIAL_V4 = ipaddress.IPv4Network("192.0.0.0/24")  # IETF protocol assignments


def _ip(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return None


def internal_address(host: str) -> bool:
    """Whether ``host`` (a name or an address literal) is not a public internet address."""
    lowered = host.lower().rstrip(".")
    if lowered == "localhost" or lowered.endswith(".localhost"):
        return True
    address = _ip(host)
    if address is None:
        return False
    if isinstance(address, ipaddress.IPv6Address):
        # An IPv4 address carried inside IPv6 (mapped, 6to4, Teredo, NAT64) is judged as IPv4.
        embedded = address.ipv4_mapped or address.sixtofour
        if embedded is None and address.teredo is not None:
            embedded = address.teredo[1]
        if embedded is None and address in _NAT64:
            embedded = ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
        if embedded is None and int(address) >> 32 == 0:  # IPv4-compatible ::a.b.c.d
            embedded = ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
        if embedded is not None:
            return not embedded.is_global or embedded in _SPECIAL_V4
    return not address.is_global or address in _SPECIAL_V4


def sealer(secret: str | Sequence[str]) -> Envelope:
    return Envelope(secret, purpose=SECRET_PURPOSE)


class Outbox:
    """Writes deliveries in the caller's transaction (the audit log's)."""

    def __init__(self, clock: Clock) -> None:
        self._clock = clock

    async def enqueue(self, db: AsyncSession, audit_type: str, data: Mapping[str, object]) -> int:
        event = EVENTS.get(audit_type)
        if event is None:
            return 0
        query = select(WebhookEndpoint.id, WebhookEndpoint.event_types).where(
            WebhookEndpoint.deleted_at.is_(None)
        )
        now = self._clock.now()
        payload = {"type": event, "timestamp": now.isoformat(), "data": dict(data)}
        count = 0
        for endpoint_id, event_types in (await db.execute(query)).all():
            if event in event_types:
                db.add(
                    WebhookDelivery(
                        id="msg_" + secrets.token_urlsafe(18),
                        endpoint_id=endpoint_id,
                        event_type=event,
                        payload=payload,
                        created_at=now,
                        attempts=0,
                        next_attempt_at=now,
                    )
                )
                count += 1
        return count


class Webhooks:
    """The operators' endpoint registry."""

    def __init__(
        self, db: Database, envelope: Envelope, clock: Clock, audit: Audit, *, production: bool
    ):
        self._db = db
        self._audit = audit
        self._envelope = envelope
        self._clock = clock
        self._production = production

    async def create(self, *, url: str, event_types: Sequence[str]) -> NewEndpoint:
        types = sorted(set(event_types))
        unknown = [name for name in types if name not in EVENT_TYPES]
        if not types or unknown:
            raise InvalidRequestError(
                "event_types: one or more of " + ", ".join(sorted(EVENT_TYPES))
            )
        secret = "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode("ascii")
        endpoint = WebhookEndpoint(
            id=uuid.uuid4(),
            url=check_url(url, production=self._production),
            event_types=types,
            created_at=self._clock.now(),
        )
        endpoint.secret_sealed = self._envelope.seal(
            secret.encode(), associated_data=str(endpoint.id)
        )
        async with self._db.transaction() as db:
            live = await db.scalars(
                select(WebhookEndpoint.id).where(WebhookEndpoint.deleted_at.is_(None))
            )
            if len(live.all()) >= MAX_ENDPOINTS:
                raise InvalidRequestError(f"at most {MAX_ENDPOINTS} webhook endpoints")
            db.add(endpoint)
            await self._audit.record(  # a new receiver of security events: an admin action
                db,
                "admin.webhook_created",
                subject=str(endpoint.id),
                details={"url": endpoint.url, "event_types": types},
            )
        return NewEndpoint(endpoint, secret)

    async def active(self) -> list[WebhookEndpoint]:
        query = (
            select(WebhookEndpoint)
            .where(WebhookEndpoint.deleted_at.is_(None))
            .order_by(WebhookEndpoint.created_at)
        )
        async with self._db.read() as db:
            return [*(await db.scalars(query)).all()]

    async def delete(self, endpoint_id: uuid.UUID) -> None:
        """The endpoint stops receiving at once; its pending deliveries are given up."""
        now = self._clock.now()
        async with self._db.transaction() as db:
            endpoint = await db.get(WebhookEndpoint, endpoint_id, with_for_update=True)
            if endpoint is None or endpoint.deleted_at is not None:
                raise NotFoundError("No such webhook endpoint.")
            endpoint.deleted_at = now
            await db.execute(
                update(WebhookDelivery)
                .where(
                    WebhookDelivery.endpoint_id == endpoint_id,
                    WebhookDelivery.delivered_at.is_(None),
                    WebhookDelivery.gave_up_at.is_(None),
                )
                .values(gave_up_at=now, last_error="endpoint deleted")
                .execution_options(synchronize_session=False)
            )
            await self._audit.record(db, "admin.webhook_deleted", subject=str(endpoint_id))

    async def deliveries(self, endpoint_id: uuid.UUID) -> list[WebhookDelivery]:
        query = (
            select(WebhookDelivery)
            .where(WebhookDelivery.endpoint_id == endpoint_id)
            .order_by(WebhookDelivery.created_at)
        )
        async with self._db.read() as db:
            return [*(await db.scalars(query)).all()]
