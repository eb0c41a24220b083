"""Registration over HTTP: open, invited, or with email verification
(docs/design/invitations-verification.md).

- With an invitation token: allowed while registration is closed; the token must be pending
  and for this normalised address (else 400 ``invalid_invitation``, one answer for every
  reason); consumed in the transaction that inserts the user; 201, the invitation's roles,
  the address verified.
- Verification off: ``Accounts.register`` (201 or 409 ``email_taken``), as before.
- Verification on: ``Pending`` (the route answers 202, one body). Every check that can refuse
  (closed, busy, IP and per-address limits, the policy) is independent of whether the
  address has an account; then the password is hashed and one transaction appends one audit
  row whatever the branch; the mail goes after the answer.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import exists, select
from sqlalchemy.exc import IntegrityError

from auth_service.clock import Clock
from auth_service.crypto.passwords import PasswordHasher
from auth_service.db.models import Session, User
from auth_service.db.session import Database
from auth_service.errors import EmailTakenError, InvalidInvitationError
from auth_service.services.accounts import (
    Accounts,
    find_by_email,
    is_email_conflict,
    normalize_email,
    raise_if_email_conflict,
)
from auth_service.services.audit import Audit
from auth_service.services.invitations import Invitations
from auth_service.services.mail import FollowUp
from auth_service.services.password_policy import PasswordPolicy
from auth_service.services.verification import EmailVerification


@dataclass(frozen=True, slots=True)
class Pending:
    """Registration accepted, to be verified: the mail to send after the answer."""

    mail: FollowUp | None


class Registrations:
    def __init__(
        self,
        db: Database,
        hasher: PasswordHasher,
        policy: PasswordPolicy,
        accounts: Accounts,
        verification: EmailVerification,
        invitations: Invitations,
        clock: Clock,
        audit: Audit,
    ) -> None:
        self._db = db
        self._hasher = hasher
        self._policy = policy
        self._accounts = accounts
        self._verification = verification
        self._invitations = invitations
        self._clock = clock
        self._audit = audit

    async def register(
        self, *, email: str, password: str, ip: str | None, invitation: str | None = None
    ) -> User | Pending:
        if invitation is not None:
            return await self._invited(email, password, ip, invitation)
        if not self._verification.rules.required:
            return await self._accounts.register(email=email, password=password, ip=ip)
        return await self._pending(email, password, ip)

    async def _invited(self, email: str, password: str, ip: str | None, token: str) -> User:
        await self._accounts.admit(ip, need_open=False)
        address = normalize_email(email)
        invitation = await self._invitations.find_usable(token)
        if invitation is None or invitation.email != address:
            raise InvalidInvitationError()
        await self._policy.check(password, email=address)
        async with self._db.read() as db:
            if await find_by_email(db, address) is not None:
                raise EmailTakenError()
        password_hash = await self._hasher.hash(password)
        try:
            async with self._db.transaction() as db:
                now = self._clock.now()
                user = await self._accounts.create(
                    db, address, password_hash, invitation.roles, verified_at=now
                )
                if not await self._invitations.consume(db, invitation, user.id):
                    raise InvalidInvitationError()  # rolls the new user back
                return user
        except IntegrityError as exc:
            raise_if_email_conflict(exc)
            raise

    async def _pending(self, email: str, password: str, ip: str | None) -> Pending:
        await self._accounts.admit(ip, need_open=True)
        address = normalize_email(email)
        await self._policy.check(password, email=address)  # 422 spends no mail budget
        await self._verification.count_mail(address)
        password_hash = await self._hasher.hash(password)  # in every branch: the same time
        verification = self._verification
        try:
            async with self._db.transaction() as db:
                user = await db.scalar(select(User).where(User.email == address).with_for_update())
                if user is None:
                    user = await self._accounts.create(db, address, password_hash, [], None)
                    return Pending(verification.link_mail(address, verification.issue(db, user.id)))
                await self._audit.record(db, "user.registered_again", subject=str(user.id))
                if user.email_verified_at is not None or user.disabled:
                    return Pending(verification.existing_mail(address))
                ever_signed_in = await db.scalar(select(exists().where(Session.user_id == user.id)))
                if not ever_signed_in:
                    # Never usable yet: the latest registration's password replaces the
                    # earlier one (a squatter's is gone when the owner registers); the link
                    # needs it, so whoever lacks the mailbox or the password gets nothing.
                    user.password_hash = password_hash
                    user.password_changed_at = user.updated_at = self._clock.now()
                    await verification.burn(db, user.id)
                # Used before verification was required: its password stays.
                return Pending(verification.link_mail(address, verification.issue(db, user.id)))
        except IntegrityError as exc:
            # A concurrent registration inserted the address first: its mail is on its way.
            if is_email_conflict(exc):
                return Pending(None)
            raise
