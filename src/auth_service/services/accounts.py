"""Accounts: registration, password login, password changes, enabling and disabling.

Framework-free use cases: each function gets the session, hasher and clock it needs. They
flush but never commit; the caller owns the transaction. Emails are stored normalised
(trimmed, validated, lower-cased), which makes the unique index on ``users.email``
case-insensitive.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence

from email_validator import EmailNotValidError, validate_email
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from auth_service.clock import Clock
from auth_service.crypto.passwords import PasswordHasher
from auth_service.db.models import User
from auth_service.errors import (
    AccountDisabledError,
    EmailTakenError,
    InvalidCredentialsError,
    InvalidRequestError,
    NotFoundError,
)
from auth_service.services.password_policy import check_password

MAX_EMAIL_LENGTH = 254  # RFC 5321 path limit less the angle brackets; also the column size


def normalize_email(raw: str) -> str:
    """The canonical form of an email address, or ``InvalidRequestError`` (422).

    The submitted value is never repeated in the error.
    """
    candidate = raw.strip().lower()
    if not candidate:
        raise InvalidRequestError("email: an email address is required")
    if len(candidate) > 4 * MAX_EMAIL_LENGTH:  # do not parse megabytes of text
        raise InvalidRequestError(f"email: must be at most {MAX_EMAIL_LENGTH} characters")
    try:
        validated = validate_email(candidate, check_deliverability=False)
    except EmailNotValidError:
        if len(candidate) > MAX_EMAIL_LENGTH:
            raise InvalidRequestError(
                f"email: must be at most {MAX_EMAIL_LENGTH} characters"
            ) from None
        raise InvalidRequestError("email: not a valid email address") from None
    normalized = validated.normalized.lower()
    if len(normalized) > MAX_EMAIL_LENGTH:
        raise InvalidRequestError(f"email: must be at most {MAX_EMAIL_LENGTH} characters")
    return normalized


async def register_user(
    session: AsyncSession,
    hasher: PasswordHasher,
    clock: Clock,
    *,
    email: str,
    password: str,
    roles: Sequence[str] = (),
) -> User:
    """Create an enabled user; ``EmailTakenError`` if the (normalised) email exists."""
    if isinstance(roles, str):
        raise TypeError("roles must be a sequence of role names, not one string")
    address = normalize_email(email)
    check_password(password, email=address)
    if await _find_by_email(session, address) is not None:
        raise EmailTakenError()
    password_hash = await hasher.hash(password)
    now = clock.now()
    user = User(
        email=address,
        password_hash=password_hash,
        roles=list(roles),
        disabled=False,
        mfa_enabled=False,
        password_changed_at=now,
        created_at=now,
        updated_at=now,
    )
    try:
        # A concurrent registration may insert the same email between the check and the
        # flush: the unique index decides. The savepoint keeps the caller's transaction usable.
        async with session.begin_nested():
            session.add(user)
    except IntegrityError as exc:
        if not _is_email_conflict(exc):
            raise
        raise EmailTakenError() from None
    return user


async def authenticate(
    session: AsyncSession,
    hasher: PasswordHasher,
    clock: Clock,
    *,
    email: str,
    password: str,
) -> User:
    """The user with this email and password.

    An unknown or malformed email and a wrong password raise the same
    ``InvalidCredentialsError`` after the same argon2 work. A disabled account is reported
    only to someone who knows its password. A hash made with old parameters is replaced.
    """
    try:
        address: str | None = normalize_email(email)
    except InvalidRequestError:
        address = None
    user = await _find_by_email(session, address) if address is not None else None
    if user is None:
        await hasher.verify_dummy(password)
        raise InvalidCredentialsError()
    if not await hasher.verify(user.password_hash, password):
        raise InvalidCredentialsError()
    if user.disabled:
        raise AccountDisabledError()
    if hasher.needs_rehash(user.password_hash):
        user.password_hash = await hasher.hash(password)
        user.updated_at = clock.now()
        await session.flush()
    return user


async def get_user(session: AsyncSession, user_id: uuid.UUID) -> User | None:
    return await session.get(User, user_id)


async def set_password(
    session: AsyncSession,
    hasher: PasswordHasher,
    clock: Clock,
    user: User,
    new_password: str,
) -> None:
    """Replace the user's password (policy checked); revoking sessions is the caller's part."""
    check_password(new_password, email=user.email)
    user.password_hash = await hasher.hash(new_password)
    now = clock.now()
    user.password_changed_at = now
    user.updated_at = now
    await session.flush()


async def set_disabled(
    session: AsyncSession, clock: Clock, user_id: uuid.UUID, disabled: bool
) -> User:
    """Disable or enable a user; ``NotFoundError`` if there is no such user."""
    user = await session.get(User, user_id)
    if user is None:
        raise NotFoundError("No user has this id.")
    if user.disabled != disabled:
        user.disabled = disabled
        user.updated_at = clock.now()
        await session.flush()
    return user


async def _find_by_email(session: AsyncSession, address: str) -> User | None:
    result = await session.execute(select(User).where(User.email == address))
    return result.scalar_one_or_none()


def _is_email_conflict(exc: IntegrityError) -> bool:
    """Whether the violated constraint is the unique email index (Postgres or SQLite text)."""
    return "email" in str(exc.orig).lower()


__all__ = [
    "MAX_EMAIL_LENGTH",
    "authenticate",
    "get_user",
    "normalize_email",
    "register_user",
    "set_disabled",
    "set_password",
]
