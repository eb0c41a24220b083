"""Invitations: an admin lets one address register, with roles, once, within 7 days, even
while ``AUTH_REGISTRATION_OPEN=false`` (docs/design/invitations-verification.md).

The token (256 random bits) is only in the mail; the table keeps its SHA-256. Whoever can
read the mailbox is the invitee, so registering with it also verifies the address.
``consume`` is one conditional UPDATE in the registering transaction: two registrations
with one token create one account, and a registration that fails (address taken) leaves the
invitation usable.
"""

from __future__ import annotations

import secrets
import uuid
from collections.abc import Sequence
from datetime import datetime, timedelta
from urllib.parse import urlencode

from sqlalchemy import ColumnElement, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from auth_service.clock import Clock
from auth_service.crypto.passwords import hash_opaque
from auth_service.db.models import Invitation, User
from auth_service.db.session import Database
from auth_service.errors import EmailTakenError, NotFoundError
from auth_service.services.accounts import find_by_email, normalize_email
from auth_service.services.admin_users import clean_roles
from auth_service.services.admins import ADMIN_ROLE
from auth_service.services.audit import Audit
from auth_service.services.mail import Mailer, MailMessage, send_quietly

INVITATION_TTL = timedelta(days=7)
MAX_PENDING_LISTED = 500


class Invitations:
    def __init__(self, db: Database, mailer: Mailer, url: str, clock: Clock, audit: Audit) -> None:
        self._db = db
        self._mailer = mailer
        self._url = url
        self._clock = clock
        self._audit = audit

    async def create(
        self, *, invited_by: uuid.UUID, email: str, roles: Sequence[str]
    ) -> tuple[Invitation, bool]:
        """Store and mail an invitation; the row and whether the mail went. 409
        ``email_taken`` if the address already has an account."""
        address = normalize_email(email)
        names = clean_roles(roles)
        token = secrets.token_urlsafe(32)
        now = self._clock.now()
        invitation = Invitation(
            email=address,
            roles=names,
            token_hash=hash_opaque(token),
            invited_by=invited_by,
            created_at=now,
            expires_at=now + INVITATION_TTL,
        )
        async with self._db.transaction() as db:
            if await find_by_email(db, address) is not None:
                raise EmailTakenError()
            db.add(invitation)
            await db.flush()
            await self._audit.record(
                db,
                "invitation.created",
                subject=str(invitation.id),
                details={"email": address, "roles": names},
            )
        link = f"{self._url}?{urlencode({'token': token})}"
        message = MailMessage(
            to=address,
            subject="You are invited",
            text=(
                f"You are invited to create an account for {address}. Open this link within "
                f"7 days and choose a password:\n{link}\n\nIf you did not expect this, ignore "
                "this mail."
            ),
        )
        return invitation, await send_quietly(self._mailer, message)

    async def pending(self) -> list[Invitation]:
        """Unused, unrevoked, unexpired invitations, newest first."""
        async with self._db.read() as db:
            rows = await db.scalars(
                select(Invitation)
                .where(
                    Invitation.used_at.is_(None),
                    Invitation.revoked_at.is_(None),
                    Invitation.expires_at > self._clock.now(),
                )
                .order_by(Invitation.created_at.desc(), Invitation.id)
                .limit(MAX_PENDING_LISTED)
            )
            return list(rows)

    async def revoke(self, invitation_id: uuid.UUID) -> None:
        """404 unless the invitation is still pending (a used one cannot be revoked)."""
        now = self._clock.now()
        async with self._db.transaction() as db:
            result = await db.execute(
                update(Invitation)
                .where(Invitation.id == invitation_id, *_pending_at(now))
                .values(revoked_at=now)
                .execution_options(synchronize_session=False)
            )
            if getattr(result, "rowcount", 0) != 1:
                raise NotFoundError("No pending invitation has this id.")
            await self._audit.record(db, "invitation.revoked", subject=str(invitation_id))

    async def find_usable(self, token: str) -> Invitation | None:
        async with self._db.read() as db:
            return await db.scalar(
                select(Invitation).where(
                    Invitation.token_hash == hash_opaque(token), *_pending_at(self._clock.now())
                )
            )

    async def consume(self, db: AsyncSession, invitation: Invitation, user_id: uuid.UUID) -> bool:
        """Use the invitation up for ``user_id`` in the caller's transaction; False if another
        registration (or a revoke) got there first, it expired meanwhile, or its inviter is no
        longer an enabled admin (authorisation reads current state: a disabled or demoted
        admin's invitations die with their rights)."""
        inviter = await db.get(User, invitation.invited_by) if invitation.invited_by else None
        if inviter is None or inviter.disabled or ADMIN_ROLE not in inviter.roles:
            return False
        now = self._clock.now()
        result = await db.execute(
            update(Invitation)
            .where(Invitation.id == invitation.id, *_pending_at(now))
            .values(used_at=now, used_by=user_id)
            .execution_options(synchronize_session=False)
        )
        if getattr(result, "rowcount", 0) != 1:
            return False
        await self._audit.record(
            db,
            "invitation.accepted",
            subject=str(user_id),
            details={"invitation": str(invitation.id)},
        )
        return True


def _pending_at(now: datetime) -> tuple[ColumnElement[bool], ...]:
    return (
        Invitation.used_at.is_(None),
        Invitation.revoked_at.is_(None),
        Invitation.expires_at > now,
    )
