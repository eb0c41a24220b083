"""Operators' view and control of users: search, detail, roles, revoking tokens, MFA reset.

Disabling and enabling stay ``Accounts.set_disabled`` (the CLI's use case). Every write here
owns its transaction and commits before it returns; the store's revocation entries are
written inside it (docs/design/layers.md), so the mirror announces them to every instance.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import unicodedata
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import partial

from sqlalchemy import delete, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from auth_service.clock import Clock
from auth_service.db.models import RecoveryCode, Session, User
from auth_service.db.session import Database
from auth_service.errors import InvalidRequestError, MfaNotEnabledError, NotFoundError
from auth_service.services.accounts import MAX_EMAIL_LENGTH, try_normalize_email
from auth_service.services.admins import ADMIN_ROLE, ensure_another_admin
from auth_service.services.audit import Audit
from auth_service.services.mail import FollowUp, Mailer, MailMessage, send_quietly
from auth_service.services.sessions import Sessions

ROLE_NAME = re.compile(r"[a-z][a-z0-9_.:-]{0,63}")
MAX_ROLES = 32
MAX_PAGE = 100


@dataclass(frozen=True, slots=True)
class UserDetail:
    user: User
    last_login_at: datetime | None
    active_sessions: int


@dataclass(frozen=True, slots=True)
class UserPage:
    users: list[User]
    next_cursor: str | None


def storable(text: str, field: str) -> str:
    """``text`` unless a database cannot hold it (NUL, a lone surrogate): then 422."""
    if "\x00" in text:
        raise InvalidRequestError(f"{field}: must not contain NUL")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidRequestError(f"{field}: not valid Unicode text") from None
    return text


def email_prefix(raw: str) -> str:
    """A search prefix in the form emails are stored: a whole address goes through the one
    normaliser (``normalize_email``); a partial one through its steps that apply to a
    prefix (NFKC, trim, lower case)."""
    if len(raw) > MAX_EMAIL_LENGTH:
        raise InvalidRequestError(f"email: must be at most {MAX_EMAIL_LENGTH} characters")
    storable(raw, "email")
    whole = try_normalize_email(raw) if "@" in raw else None
    return whole or unicodedata.normalize("NFKC", raw).strip().lower()


def clean_roles(roles: Sequence[str]) -> list[str]:
    names = sorted(set(roles))
    if len(names) > MAX_ROLES:
        raise InvalidRequestError(f"roles: at most {MAX_ROLES}")
    bad = [name for name in names if not ROLE_NAME.fullmatch(name)]
    if bad:
        raise InvalidRequestError(
            "roles: each must match [a-z][a-z0-9_.:-]{0,63} (lower-case letters first)"
        )
    return names


def _encode_cursor(user: User) -> str:
    raw = json.dumps([user.email, str(user.id)], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def _decode_cursor(cursor: str) -> tuple[str, uuid.UUID]:
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        email, user_id = json.loads(base64.urlsafe_b64decode(padded.encode("ascii")))
        if not isinstance(email, str):
            raise TypeError(email)
        return storable(email, "cursor"), uuid.UUID(str(user_id))
    except (ValueError, TypeError, UnicodeError, binascii.Error):
        raise InvalidRequestError("cursor: not a cursor this service returned") from None


def _like_escaped(prefix: str) -> str:
    return prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


class AdminUsers:
    def __init__(
        self, db: Database, sessions: Sessions, mailer: Mailer, clock: Clock, audit: Audit
    ) -> None:
        self._db = db
        self._audit = audit
        self._sessions = sessions
        self._mailer = mailer
        self._clock = clock

    async def search(self, *, email: str | None, limit: int, cursor: str | None) -> UserPage:
        """Users by normalised email prefix, in email order, ``limit`` a page (keyset)."""
        query = select(User).order_by(User.email, User.id).limit(min(limit, MAX_PAGE) + 1)
        if email:
            query = query.where(User.email.like(_like_escaped(email_prefix(email)), escape="\\"))
        if cursor:
            after_email, after_id = _decode_cursor(cursor)
            query = query.where(
                (User.email > after_email) | ((User.email == after_email) & (User.id > after_id))
            )
        async with self._db.read() as db:
            rows = [*(await db.scalars(query)).all()]
        page = rows[: min(limit, MAX_PAGE)]
        more = len(rows) > len(page)
        return UserPage(page, _encode_cursor(page[-1]) if more and page else None)

    async def detail(self, user_id: uuid.UUID) -> UserDetail:
        async with self._db.read() as db:
            return await self._detail(db, user_id)

    async def revoke_tokens(self, user_id: uuid.UUID) -> None:
        """Every session and token of the user is invalid, on every instance."""
        async with self._db.transaction() as db:
            user = await db.get(User, user_id, with_for_update=True)
            if user is None:
                raise NotFoundError("No user has this id.")
            await self._sessions.end_all(db, user, reason="revoked_by_admin")
            await self._audit.record(db, "admin.user_tokens_revoked", subject=str(user_id))

    async def set_roles(self, user_id: uuid.UUID, roles: Sequence[str]) -> UserDetail:
        """Replace the user's roles. Removing any role also revokes every session and token
        (a backend authorising on ``roles`` must not honour a removed one until expiry);
        adding roles revokes nothing: the next refresh carries them."""
        names = clean_roles(roles)
        async with self._db.transaction() as db:
            if ADMIN_ROLE not in names:
                await ensure_another_admin(db, user_id)
            user = await db.get(User, user_id, with_for_update=True)
            if user is None:
                raise NotFoundError("No user has this id.")
            removed = set(user.roles) - set(names)
            user.roles = names
            user.updated_at = self._clock.now()
            if removed:
                await self._sessions.end_all(db, user, reason="roles_changed")
            await self._audit.record(
                db, "admin.user_roles_changed", subject=str(user_id), details={"roles": names}
            )
            await db.flush()
            return await self._detail(db, user_id)

    async def reset_mfa(self, user_id: uuid.UUID) -> FollowUp:
        """For a user who lost the authenticator and the recovery codes: TOTP off, recovery
        codes deleted, every session and token revoked. Returns the mail to the user."""
        async with self._db.transaction() as db:
            user = await db.get(User, user_id, with_for_update=True)
            if user is None:
                raise NotFoundError("No user has this id.")
            if not user.mfa_enabled and user.totp_secret_encrypted is None:
                raise MfaNotEnabledError()
            user.mfa_enabled = False
            user.totp_secret_encrypted = None
            user.totp_confirmed_at = None
            await db.execute(delete(RecoveryCode).where(RecoveryCode.user_id == user.id))
            await self._sessions.end_all(db, user, reason="mfa_reset")
            await self._audit.record(db, "admin.user_mfa_reset", subject=str(user_id))
            email = user.email
        return partial(send_quietly, self._mailer, _mfa_reset_notice(email))

    async def _detail(self, db: AsyncSession, user_id: uuid.UUID) -> UserDetail:
        user = await db.get(User, user_id)
        if user is None:
            raise NotFoundError("No user has this id.")
        now = self._clock.now()
        live = (Session.revoked_at.is_(None)) & (Session.expires_at > now)
        query = select(
            func.max(Session.created_at),
            func.count(Session.id).filter(live),
        ).where(Session.user_id == user_id)
        last_login, active = (await db.execute(query)).one()
        return UserDetail(user, last_login, int(active or 0))


def _mfa_reset_notice(email: str) -> MailMessage:
    return MailMessage(
        to=email,
        subject="Two-factor authentication was reset",
        text=(
            f"An administrator reset two-factor authentication for {email}, and every "
            "session of the account was signed out. Sign in with your password and set up "
            "two-factor authentication again.\n\n"
            "If you did not ask for this, contact support at once."
        ),
    )
