"""The tamper-evident audit log: one HMAC chain that every instance appends to.

``record`` appends inside the caller's transaction (the event and its row commit together);
``append`` opens a transaction of its own, for events with nothing else to write (a failed
login). Appenders serialise on the ``audit_head`` row (``FOR UPDATE``; SQLite's writer lock):
the new row gets the head's ``last_id + 1`` and ``prev_mac = last_mac``, so ids are gapless
and the chain has one order. The lock is held until the caller's commit, so the append is the
last step of a transaction, never before a hash or a network wait.

Never put a password, token, code or secret in ``details``: the log is read by operators.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import delete, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from auth_service.clock import Clock
from auth_service.crypto.audit_mac import GENESIS, AuditMac
from auth_service.db.models import AuditCheckpoint, AuditEvent, AuditHead
from auth_service.db.session import Database
from auth_service.errors import ConfigurationError
from auth_service.request_context import current_request
from auth_service.services.webhooks import Outbox

log = logging.getLogger(__name__)
_PAGE = 500


@dataclass(frozen=True, slots=True)
class Verdict:
    ok: bool
    checked: int
    first_bad_id: int | None = None


def canonical_record(row: AuditEvent) -> dict[str, object]:
    """What the MAC covers: every column but the two MACs."""
    return {
        "id": row.id,
        "at": row.at.astimezone(UTC).isoformat(timespec="microseconds"),
        "type": row.type,
        "actor": row.actor,
        "subject": row.subject,
        "ip": row.ip,
        "request_id": row.request_id,
        "details": row.details,
    }


def checkpoint_record(row: AuditCheckpoint) -> dict[str, object]:
    return {
        "at": row.at.astimezone(UTC).isoformat(timespec="microseconds"),
        "through_id": row.through_id,
        "through_mac": row.through_mac,
        "pruned": row.pruned,
    }


class Audit:
    def __init__(self, db: Database, mac: AuditMac, clock: Clock, outbox: Outbox) -> None:
        self._db = db
        self._mac = mac
        self._clock = clock
        self._outbox = outbox  # the webhook deliveries this event owes, in its transaction

    async def record(
        self,
        db: AsyncSession,
        type_: str,
        *,
        actor: str | None = None,
        subject: str | None = None,
        details: Mapping[str, object] | None = None,
    ) -> None:
        """Append in the caller's transaction (it commits). The actor defaults to the
        request's signed-in caller; the IP and request id come from the request context."""
        context = current_request()
        head = await db.get(AuditHead, 1, with_for_update=True, populate_existing=True)
        if head is None:
            raise ConfigurationError("the audit chain has no head row: run `auth-service migrate`")
        # Microseconds only: what every database stores and returns unchanged.
        at = self._clock.now().astimezone(UTC)
        row = AuditEvent(
            id=head.last_id + 1,
            at=at,
            type=type_,
            actor=actor if actor is not None else context.actor,
            subject=subject,
            ip=context.ip,
            request_id=context.request_id,
            details=dict(details or {}),
            prev_mac=head.last_mac,
        )
        row.mac = self._mac.row(head.last_mac, canonical_record(row))
        db.add(row)
        head.last_id, head.last_mac = row.id, row.mac
        data = {"audit_event_id": row.id, "subject": subject, "actor": row.actor}
        await self._outbox.enqueue(db, type_, {**data, "details": row.details})

    async def append(
        self,
        type_: str,
        *,
        actor: str | None = None,
        subject: str | None = None,
        details: Mapping[str, object] | None = None,
    ) -> None:
        async with self._db.transaction() as db:
            await self.record(db, type_, actor=actor, subject=subject, details=details)

    async def events(
        self, *, limit: int, before: int | None, type_: str | None, subject: str | None
    ) -> list[AuditEvent]:
        """Newest first; ``before`` an id (keyset paging)."""
        query = select(AuditEvent).order_by(AuditEvent.id.desc()).limit(limit)
        if before is not None:
            query = query.where(AuditEvent.id < before)
        if type_:
            query = query.where(AuditEvent.type == type_)
        if subject:
            query = query.where(AuditEvent.subject == subject)
        async with self._db.read() as db:
            return [*(await db.scalars(query)).all()]

    async def verify(self) -> Verdict:
        async with self._db.read() as db:
            return await self._verify(db, upto=None)

    async def prune_older_than(self, days: int) -> int:
        """The retention job: ``prune`` at ``days`` before now."""
        return await self.prune(self._clock.now() - timedelta(days=days))

    async def prune(self, older_than: datetime) -> int:
        """Delete the oldest rows older than ``older_than`` (from the start of the chain) and
        sign a checkpoint where verification starts. A chain that does not verify is not
        pruned (that would launder the tampering): logged, 0."""
        async with self._db.transaction() as db:
            head = await db.get(AuditHead, 1, with_for_update=True, populate_existing=True)
            if head is None:
                return 0
            newer = await db.scalar(
                select(func.min(AuditEvent.id)).where(AuditEvent.at >= older_than)
            )
            through = (newer - 1) if newer is not None else head.last_id
            start = await self._start(db)
            if through < start[0]:
                return 0
            verdict = await self._verify(db, upto=through)
            if not verdict.ok:
                log.error("audit chain broken at id %s: not pruned", verdict.first_bad_id)
                return 0
            last = await db.get(AuditEvent, through)
            assert last is not None  # the verification just read it
            checkpoint = AuditCheckpoint(
                at=self._clock.now().astimezone(UTC),
                through_id=through,
                through_mac=last.mac,
                pruned=verdict.checked,
            )
            checkpoint.mac = self._mac.checkpoint(checkpoint_record(checkpoint))
            await db.execute(delete(AuditEvent).where(AuditEvent.id <= through))
            db.add(checkpoint)
        log.info("audit chain pruned through id %s; head mac %s", through, head.last_mac)
        return verdict.checked

    async def _start(self, db: AsyncSession) -> tuple[int, str, bool]:
        """(first id expected, its previous MAC, whether the newest checkpoint verifies)."""
        query = select(AuditCheckpoint).order_by(AuditCheckpoint.id.desc()).limit(1)
        checkpoint = (await db.scalars(query)).one_or_none()
        if checkpoint is None:
            return 1, GENESIS, True
        ok = self._mac.checkpoint_ok(checkpoint_record(checkpoint), checkpoint.mac)
        return checkpoint.through_id + 1, checkpoint.through_mac, ok

    async def _verify(self, db: AsyncSession, *, upto: int | None) -> Verdict:
        # The head first: every row up to its last id was committed with it.
        head = await db.get(AuditHead, 1, populate_existing=True)
        if head is None:
            return Verdict(ok=False, checked=0, first_bad_id=None)
        last_id = head.last_id if upto is None else upto
        expected, prev_mac, checkpoint_ok = await self._start(db)
        if not checkpoint_ok:
            return Verdict(ok=False, checked=0, first_bad_id=expected)
        checked = 0
        after = expected - 1
        while after < last_id:
            query = (
                select(AuditEvent)
                .where(AuditEvent.id > after, AuditEvent.id <= last_id)
                .order_by(AuditEvent.id)
                .limit(_PAGE)
            )
            rows = (await db.scalars(query)).all()
            if not rows:
                break
            for row in rows:
                if (
                    row.id != expected
                    or row.prev_mac != prev_mac
                    or not self._mac.row_ok(prev_mac, canonical_record(row), row.mac)
                ):
                    return Verdict(ok=False, checked=checked, first_bad_id=row.id)
                prev_mac, expected, checked = row.mac, expected + 1, checked + 1
            after = rows[-1].id
        if expected - 1 != last_id or (upto is None and prev_mac != head.last_mac):
            return Verdict(ok=False, checked=checked, first_bad_id=expected)
        return Verdict(ok=True, checked=checked)
