"""``auth-service keys rewrap``: everything protected by the master secret moves to the
current one (``AUTH_KEY_ENCRYPTION_SECRET``), opened with whichever of the configured secrets
sealed it (``AUTH_KEY_DECRYPTION_SECRETS``). SECURITY.md has the zero-downtime procedure.

In one transaction, under the audit head's lock (appends wait; nothing else does):
- every private signing key, TOTP secret and webhook secret not sealed by the current secret
  is opened and sealed again (its row records the secret: ``Envelope.sealed_by_current``);
- the audit chain is verified under the accepted secrets and MACed again under the current
  one (a broken chain refuses the rewrap, naming its first bad id), with its checkpoints;
- a ``keys.rewrapped`` event is appended.
A failure leaves everything as it was; running it again after an interruption, or twice, is
harmless (sealed rows are skipped, the MACs come out the same).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from auth_service.crypto.audit_mac import GENESIS, AuditMac
from auth_service.crypto.envelope import Envelope, EnvelopeError
from auth_service.db.models import (
    AuditCheckpoint,
    AuditEvent,
    AuditHead,
    SigningKey,
    User,
    WebhookEndpoint,
)
from auth_service.db.session import Database
from auth_service.errors import ConfigurationError
from auth_service.services.audit import Audit, canonical_record, checkpoint_record
from auth_service.services.keys import signing_envelope
from auth_service.services.totp import Totp
from auth_service.services.webhooks import sealer as webhook_sealer

_PAGE = 500


@dataclass(frozen=True, slots=True)
class RewrapReport:
    signing_keys: int
    totp_secrets: int
    webhook_secrets: int
    audit_rows: int
    checkpoints: int

    def describe(self) -> str:
        return (
            f"rewrapped {self.signing_keys} signing keys, {self.totp_secrets} TOTP secrets, "
            f"{self.webhook_secrets} webhook secrets; audit chain MACed again: "
            f"{self.audit_rows} rows, {self.checkpoints} checkpoints"
        )


class _Resealer:
    def __init__(self, envelope: Envelope, what: str) -> None:
        self._envelope = envelope
        self._what = what
        self.count = 0

    def __call__(self, sealed: bytes, binding: str) -> bytes:
        if self._envelope.sealed_by_current(sealed):
            return sealed
        try:
            plain = self._envelope.open(sealed, associated_data=binding)
        except EnvelopeError:
            raise ConfigurationError(
                f"{self._what} {binding} opens with none of the configured secrets: set "
                "AUTH_KEY_DECRYPTION_SECRETS to the secret it was sealed with (nothing changed)"
            ) from None
        self.count += 1
        return self._envelope.seal(plain, associated_data=binding)


async def rewrap(db: Database, secrets: Sequence[str], audit: Audit) -> RewrapReport:
    keys = _Resealer(signing_envelope(secrets), "signing key")
    totp = _Resealer(Totp.envelope_for(secrets), "the TOTP secret of user")
    hooks = _Resealer(webhook_sealer(secrets), "the secret of webhook endpoint")
    mac = AuditMac(secrets)
    async with db.transaction() as session:
        head = await session.get(AuditHead, 1, with_for_update=True)
        for key in (await session.scalars(select(SigningKey))).all():
            key.private_key_encrypted = keys(key.private_key_encrypted, key.kid)
        users = select(User).where(User.totp_secret_encrypted.is_not(None))
        for user in (await session.scalars(users)).all():
            assert user.totp_secret_encrypted is not None
            user.totp_secret_encrypted = totp(user.totp_secret_encrypted, str(user.id))
        for endpoint in (await session.scalars(select(WebhookEndpoint))).all():
            endpoint.secret_sealed = hooks(endpoint.secret_sealed, str(endpoint.id))
        rows, checkpoints = await _remac(session, mac, head)
        await session.flush()  # the new head MAC, before the event below reads the head
        report = RewrapReport(keys.count, totp.count, hooks.count, rows, checkpoints)
        await audit.record(
            session,
            "keys.rewrapped",
            subject=None,
            details={
                "signing_keys": report.signing_keys,
                "totp_secrets": report.totp_secrets,
                "webhook_secrets": report.webhook_secrets,
            },
        )
    return report


async def _remac(session: AsyncSession, mac: AuditMac, head: AuditHead | None) -> tuple[int, int]:
    """Verify the chain under every accepted secret and MAC it again under the current one;
    (rows, checkpoints) MACed."""
    if head is None:
        return 0, 0
    checkpoints = (
        await session.scalars(select(AuditCheckpoint).order_by(AuditCheckpoint.id))
    ).all()
    for checkpoint in checkpoints:
        record = checkpoint_record(checkpoint)
        if not mac.checkpoint_ok(record, checkpoint.mac):
            raise ConfigurationError(
                f"audit checkpoint {checkpoint.id} does not verify: the rewrap is refused "
                "(nothing changed); run `auth-service audit verify`"
            )
        checkpoint.mac = mac.checkpoint(record)
    newest = checkpoints[-1] if checkpoints else None
    old_prev = new_prev = newest.through_mac if newest is not None else GENESIS
    after = newest.through_id if newest is not None else 0
    count = 0
    while True:
        query = select(AuditEvent).where(AuditEvent.id > after).order_by(AuditEvent.id)
        rows = (await session.scalars(query.limit(_PAGE))).all()
        if not rows:
            break
        for row in rows:
            if row.prev_mac != old_prev or not mac.row_ok(old_prev, canonical_record(row), row.mac):
                raise ConfigurationError(
                    f"the audit chain is broken at id {row.id}: the rewrap is refused (nothing "
                    "changed); run `auth-service audit verify`"
                )
            old_prev = row.mac
            row.prev_mac = new_prev
            row.mac = new_prev = mac.row(new_prev, canonical_record(row))
            count += 1
        after = rows[-1].id
        await session.flush()
    if old_prev != head.last_mac:
        raise ConfigurationError("the audit head does not match the chain: the rewrap is refused")
    head.last_mac = new_prev
    return count, len(checkpoints)
