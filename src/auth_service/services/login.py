"""Login: the password step, with its attempt limits (``services/limits.py``), and the second
(TOTP or recovery code) step for users with two-factor authentication on.

Order of the password step, each step before any slower one:
1. ``login:from:<ip>`` counts the attempt, whatever the email (malformed ones too: they can
   match no account but still count);
2. one short read (the user, and whether this (account, IP) pair logged in within
   ``AUTH_KNOWN_CLIENT_DAYS``: a session of the user created from the same IP or IPv6 /64);
   the connection is released before argon2;
3. ``login:pair:<email>:<ip>`` and, unless the pair is known, ``login:acct:<email>``;
4. argon2 (a known pair's verification is urgent in the hashing queue; an unknown email runs
   the dummy verification, for the same time and the same answer);
5. on success the pair counter resets (and the account counter, unless the pair is known: it
   was not held by it, and the owner's login must not re-arm a sprayer), and one write
   transaction (a rehash, the session) commits before the token pair is returned.

Second step: ``mfa:<sha256(mfa_token)>`` → ``{"user_id"}`` for ``AUTH_MFA_TOKEN_TTL_SECONDS``
(opaque, 256 bits, bound to the user, deleted on use: single use even under concurrency);
``mfa-fail:<sha256>`` counts its wrong codes and the 5th burns it; ``mfa:user:<id>`` limits
second-step attempts per user across mfa tokens (``MFA_USER_ATTEMPTS`` per 15 minutes).
"""

from __future__ import annotations

import json
import secrets
import uuid
from dataclasses import dataclass
from datetime import timedelta
from typing import NoReturn

from sqlalchemy import select

from auth_service.crypto.passwords import hash_opaque
from auth_service.db.models import Session, User
from auth_service.errors import (
    AccountDisabledError,
    InvalidCredentialsError,
    InvalidMfaCodeError,
    InvalidMfaTokenError,
    ServerBusyError,
)
from auth_service.services import store_keys
from auth_service.services.accounts import find_by_email, try_normalize_email
from auth_service.services.limits import (
    LOGIN_WINDOW,
    MFA_USER_ATTEMPTS,
    account_key,
    device_key,
    from_ip_key,
    guard_store,
    ip_group,
    mfa_user_key,
    pair_key,
    reset_counters,
    take_attempt,
    take_attempts,
    urgent_key,
)
from auth_service.services.sessions import SessionContext, TokenPair, start_session
from auth_service.services.totp import TotpContext, accept_totp, looks_like_totp, use_recovery_code
from auth_service.store.base import StoreUnavailableError

MFA_TOKEN_FAILURES = 5  # wrong codes that burn an mfa_token
KNOWN_SESSIONS_LOOKED_AT = 200  # the user's newest sessions searched for the client's IP
URGENT_LOGINS_PER_IP = 2  # urgent hashes in flight per IP group (per instance)
URGENT_LOGINS_PER_ACCOUNT = 60  # per LOGIN_WINDOW: more than any person logs in; an
# attacker needs over a thousand accounts to keep two urgent slots busy with them


@dataclass(frozen=True, slots=True)
class MfaChallenge:
    mfa_token: str
    expires_in: int


@dataclass(frozen=True, slots=True)
class _Candidate:
    user: User
    known: bool  # this (account, IP) pair logged in within AUTH_KNOWN_CLIENT_DAYS


async def login_with_password(
    ctx: SessionContext,
    *,
    email: str,
    password: str,
    ip: str | None,
    user_agent: str | None,
) -> TokenPair | MfaChallenge:
    settings = ctx.settings
    if await sheds_login(ctx, email, ip):
        raise ServerBusyError()
    await take_attempt(ctx.store, from_ip_key(ip), settings.login_ip_limit)
    address = try_normalize_email(email)
    candidate = await _find_candidate(ctx, address, ip) if address is not None else None
    if address is not None:
        limits = [(pair_key(address, ip), settings.login_failure_limit)]
        if candidate is None or not candidate.known:
            limits.append((account_key(address), settings.login_account_failure_limit))
        await take_attempts(ctx.store, limits)
    if candidate is None or address is None:
        await ctx.hasher.verify_dummy(password)
        raise InvalidCredentialsError()
    user = candidate.user
    if not await _verify(ctx, user, address, password, ip, known=candidate.known):
        raise InvalidCredentialsError()
    if user.disabled:
        raise AccountDisabledError()
    # A known pair was not held by the account-wide counter, so its success does not reset
    # it either: the owner logging in from home must not hand a sprayer a fresh budget.
    spent = (
        [pair_key(address, ip)]
        if candidate.known
        else [pair_key(address, ip), account_key(address)]
    )
    await reset_counters(ctx.store, spent)
    stale = ctx.hasher.needs_rehash(user.password_hash)
    rehashed = await ctx.hasher.hash(password) if stale else None
    async with ctx.sessionmaker.begin() as db:
        current = await db.get(User, user.id, with_for_update=True)
        if current is None or current.disabled:
            raise AccountDisabledError() if current is not None else InvalidCredentialsError()
        if rehashed is not None and current.password_hash == user.password_hash:
            current.password_hash = rehashed
            current.updated_at = ctx.clock.now()
        await _remember_device(ctx, address, ip)
        if current.mfa_enabled:
            return await _challenge(ctx, current)
        return await start_session(ctx, db, current, amr=["pwd"], ip=ip, user_agent=user_agent)


async def sheds_login(ctx: SessionContext, email: str, ip: str | None) -> bool:
    """Whether a login is refused at once (503 server_busy). Under a flood the strangers'
    hashing lane is full, and a stranger's login would be refused after store writes and a
    database read: refused first instead, at the cost of one store read, so the flood cannot
    take the event loop from everyone else (``api/shedding.py`` asks this before the app
    parses the request). A login whose (account, IP group) logged in before goes on: the
    database read then decides whether it is a known device. The hint (``device_key``)
    grants nothing else; if the store cannot answer, the login is shed."""
    if not ctx.hasher.queue.full(urgent=False):
        return False
    address = try_normalize_email(email)
    if address is None:
        return True
    try:
        seen = await ctx.store.get_many([device_key(address, ip)])
    except StoreUnavailableError:
        return True
    return seen[0] is None


async def _remember_device(ctx: SessionContext, address: str, ip: str | None) -> None:
    days = ctx.settings.known_client_days
    if days > 0 and ip_group(ip) != "-":
        await guard_store(ctx.store.put(device_key(address, ip), "1", timedelta(days=days)))


async def _verify(
    ctx: SessionContext,
    user: User,
    address: str,
    password: str,
    ip: str | None,
    *,
    known: bool,
) -> bool:
    """A known pair's verification is urgent, within two budgets, so that accounts an attacker
    made "known" cannot fill the urgent lane and starve the other users' known devices: at
    most ``URGENT_LOGINS_PER_IP`` of one IP group in flight on this instance, and at most
    ``URGENT_LOGINS_PER_ACCOUNT`` per account per window. Past either, it queues as normal."""
    group = ip_group(ip)
    if known and ctx.urgent_logins.get(group, 0) < URGENT_LOGINS_PER_IP:
        ctx.urgent_logins[group] = ctx.urgent_logins.get(group, 0) + 1  # reserved at once
        try:
            budget = await guard_store(
                ctx.store.hit(urgent_key(address), URGENT_LOGINS_PER_ACCOUNT, LOGIN_WINDOW)
            )
            if budget.allowed:
                return await ctx.hasher.verify(user.password_hash, password, urgent=True)
        finally:
            left = ctx.urgent_logins[group] - 1
            if left:
                ctx.urgent_logins[group] = left
            else:
                del ctx.urgent_logins[group]
    return await ctx.hasher.verify(user.password_hash, password)


async def _find_candidate(ctx: SessionContext, address: str, ip: str | None) -> _Candidate | None:
    """The user, and whether this IP (group) is one it logged in from; one short read."""
    async with ctx.reader() as db:
        user = await find_by_email(db, address)
        if user is None:
            return None
        group = ip_group(ip)
        days = ctx.settings.known_client_days
        if days <= 0 or group == "-":
            return _Candidate(user, known=False)
        since = ctx.clock.now() - timedelta(days=days)
        query = (
            select(Session.ip)
            .where(Session.user_id == user.id, Session.created_at >= since)
            .order_by(Session.created_at.desc())
            .limit(KNOWN_SESSIONS_LOOKED_AT)
        )
        seen = (await db.scalars(query)).all()
    return _Candidate(user, known=any(ip_group(past) == group for past in seen if past))


async def _challenge(ctx: SessionContext, user: User) -> MfaChallenge:
    token = secrets.token_urlsafe(32)
    ttl = ctx.settings.mfa_token_ttl_seconds
    await guard_store(
        ctx.store.put(
            _mfa_key(token), json.dumps({"user_id": str(user.id)}), timedelta(seconds=ttl)
        )
    )
    return MfaChallenge(mfa_token=token, expires_in=ttl)


async def login_with_second_factor(
    ctx: SessionContext,
    totp: TotpContext,
    *,
    mfa_token: str,
    code: str,
    ip: str | None,
    user_agent: str | None,
) -> TokenPair:
    """The second step: a TOTP code (``amr: pwd, otp``) or a recovery code (``pwd, recovery``).

    The recovery code is burnt, the mfa_token consumed and the session created in one
    transaction, committed before the pair is returned: of two concurrent right answers one
    wins, and a failure after the burn rolls the burn back."""
    key = _mfa_key(mfa_token)
    stored = (await guard_store(ctx.store.get_many([key])))[0]
    user = await _challenged_user(ctx, stored)
    if user is None:
        raise InvalidMfaTokenError()
    await take_attempt(ctx.store, mfa_user_key(user.id), MFA_USER_ATTEMPTS)
    totp_code = looks_like_totp(code)
    if totp_code and not await accept_totp(totp, user, code.strip()):
        await _count_failure(ctx, mfa_token, key)
    async with ctx.sessionmaker.begin() as db:
        if totp_code:
            amr = ["pwd", "otp"]
        elif await use_recovery_code(db, user.id, code, ctx.clock.now()):
            amr = ["pwd", "recovery"]
        else:
            await _count_failure(ctx, mfa_token, key)  # raises: the transaction rolls back
        current = await db.get(User, user.id)
        if current is None or current.disabled or not current.mfa_enabled:
            raise InvalidMfaTokenError()
        if not await guard_store(ctx.store.delete(key)):
            raise InvalidMfaTokenError()  # a concurrent right answer used it first
        await guard_store(ctx.store.reset_counter(mfa_user_key(user.id)))
        return await start_session(ctx, db, current, amr=amr, ip=ip, user_agent=user_agent)


async def _count_failure(ctx: SessionContext, mfa_token: str, key: str) -> NoReturn:
    """A wrong code: counted against the mfa_token (the 5th burns it); always raises."""
    window = timedelta(seconds=ctx.settings.mfa_token_ttl_seconds)
    failures = await guard_store(
        ctx.store.hit(
            store_keys.mfa_failure_key(hash_opaque(mfa_token)), MFA_TOKEN_FAILURES, window
        )
    )
    if failures.count >= MFA_TOKEN_FAILURES:
        await guard_store(ctx.store.delete(key))
    raise InvalidMfaCodeError()


async def _challenged_user(ctx: SessionContext, stored: str | None) -> User | None:
    if stored is None:
        return None
    async with ctx.reader() as db:
        user = await db.get(User, uuid.UUID(json.loads(stored)["user_id"]))
    if user is None or user.disabled or not user.mfa_enabled:
        return None
    return user


def _mfa_key(token: str) -> str:
    return store_keys.mfa_token_key(hash_opaque(token))


__all__ = ["MfaChallenge", "login_with_password", "login_with_second_factor"]
