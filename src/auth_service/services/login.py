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
from sqlalchemy.ext.asyncio import AsyncSession

from auth_service.clock import Clock
from auth_service.crypto.passwords import PasswordHasher, hash_opaque
from auth_service.db.models import Session, User
from auth_service.db.session import Database
from auth_service.errors import (
    AccountDisabledError,
    EmailNotVerifiedError,
    InvalidCredentialsError,
    InvalidMfaCodeError,
    InvalidMfaTokenError,
    ServerBusyError,
)
from auth_service.services import store_keys
from auth_service.services.accounts import find_by_email, try_normalize_email
from auth_service.services.audit import Audit
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
from auth_service.services.sessions import Sessions, TokenPair
from auth_service.services.totp import Totp, looks_like_totp, use_recovery_code
from auth_service.settings import Settings
from auth_service.store.base import Store, StoreUnavailableError

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


@dataclass(frozen=True, slots=True)
class LoginRules:
    ip_limit: int  # AUTH_LOGIN_IP_LIMIT
    pair_limit: int  # AUTH_LOGIN_FAILURE_LIMIT
    account_limit: int  # AUTH_LOGIN_ACCOUNT_FAILURE_LIMIT
    known_client: timedelta  # AUTH_KNOWN_CLIENT_DAYS (0: no pair is known)
    mfa_token_ttl: timedelta
    email_verification: bool = False  # AUTH_REQUIRE_EMAIL_VERIFICATION

    @classmethod
    def from_settings(cls, settings: Settings) -> LoginRules:
        return cls(
            ip_limit=settings.login_ip_limit,
            pair_limit=settings.login_failure_limit,
            account_limit=settings.login_account_failure_limit,
            known_client=timedelta(days=settings.known_client_days),
            mfa_token_ttl=timedelta(seconds=settings.mfa_token_ttl_seconds),
            email_verification=settings.require_email_verification,
        )


class Logins:
    """The password step and the second step of a login."""

    def __init__(
        self,
        db: Database,
        store: Store,
        hasher: PasswordHasher,
        sessions: Sessions,
        totp: Totp,
        rules: LoginRules,
        clock: Clock,
        audit: Audit,
    ) -> None:
        self._db = db
        self._audit = audit
        self._store = store
        self._hasher = hasher
        self._sessions = sessions
        self._totp = totp
        self._rules = rules
        self._clock = clock
        # Urgent (known-pair) hashes in flight per IP group on this instance (``_verify``).
        self._urgent: dict[str, int] = {}

    async def with_password(
        self, *, email: str, password: str, ip: str | None, user_agent: str | None
    ) -> TokenPair | MfaChallenge:
        rules = self._rules
        if await self.sheds(email, ip):
            raise ServerBusyError()
        await take_attempt(self._store, from_ip_key(ip), rules.ip_limit)
        address = try_normalize_email(email)
        candidate = await self._find_candidate(address, ip) if address is not None else None
        if address is not None:
            limits = [(pair_key(address, ip), rules.pair_limit)]
            if candidate is None or not candidate.known:
                limits.append((account_key(address), rules.account_limit))
            await take_attempts(self._store, limits)
        if candidate is None or address is None:
            await self._hasher.verify_dummy(password)
            if address is not None:
                await self._failed(address, "unknown_account")
            raise InvalidCredentialsError()
        user = candidate.user
        if not await self._verify(user, address, password, ip, known=candidate.known):
            await self._failed(str(user.id), "wrong_password")
            raise InvalidCredentialsError()
        if user.disabled:
            await self._failed(str(user.id), "account_disabled")
            raise AccountDisabledError()
        if rules.email_verification and user.email_verified_at is None:
            # Only now, after the password: before it, this would tell who has an account.
            await self._failed(str(user.id), "email_not_verified")
            raise EmailNotVerifiedError()
        # A known pair was not held by the account-wide counter, so its success does not
        # reset it either: the owner logging in from home must not hand a sprayer a fresh
        # budget.
        spent = [pair_key(address, ip)]
        if not candidate.known:
            spent.append(account_key(address))
        await reset_counters(self._store, spent)
        stale = self._hasher.needs_rehash(user.password_hash)
        rehashed = await self._hasher.hash(password) if stale else None
        async with self._db.transaction() as db:
            current = await db.get(User, user.id, with_for_update=True)
            if current is None or current.disabled:
                raise AccountDisabledError() if current is not None else InvalidCredentialsError()
            if rehashed is not None and current.password_hash == user.password_hash:
                current.password_hash = rehashed
                current.updated_at = self._clock.now()
            await self._remember_device(address, ip)
            if current.mfa_enabled:
                challenge = await self._challenge(current)  # a store write, before the lock
                await self._audit.record(db, "login.password_ok_mfa_required", subject=str(user.id))
                return challenge
            pair = await self._sessions.start(
                db, current, amr=["pwd"], ip=ip, user_agent=user_agent
            )
            await self._succeeded(db, current, ["pwd"])
            return pair

    async def sheds(self, email: str, ip: str | None) -> bool:
        """Whether a login is refused at once (503 server_busy). Under a flood the strangers'
        hashing lane is full, and a stranger's login would be refused after store writes and
        a database read: refused first instead, at the cost of one store read, so the flood
        cannot take the event loop from everyone else (``api/shedding.py`` asks this before
        the app parses the request). A login whose (account, IP group) logged in before goes
        on: the database read then decides whether it is a known device. The hint
        (``device_key``) grants nothing else; if the store cannot answer, the login is shed."""
        if not self.hashing_full():
            return False
        address = try_normalize_email(email)
        if address is None:
            return True
        try:
            seen = await self._store.get_many([device_key(address, ip)])
        except StoreUnavailableError:
            return True
        return seen[0] is None

    @property
    def urgent_in_flight(self) -> dict[str, int]:
        """Urgent hashes in flight per IP group on this instance (a copy)."""
        return dict(self._urgent)

    def hashing_full(self) -> bool:
        """Whether the strangers' hashing lane is full (new work would be refused)."""
        return self._hasher.queue.full(urgent=False)

    async def with_second_factor(
        self, *, mfa_token: str, code: str, ip: str | None, user_agent: str | None
    ) -> TokenPair:
        """The second step: a TOTP code (``amr: pwd, otp``) or a recovery code
        (``pwd, recovery``).

        The recovery code is burnt, the mfa_token consumed and the session created in one
        transaction, committed before the pair is returned: of two concurrent right answers
        one wins, and a failure after the burn rolls the burn back."""
        key = _mfa_key(mfa_token)
        stored = (await guard_store(self._store.get_many([key])))[0]
        user = await self._challenged_user(stored)
        if user is None:
            raise InvalidMfaTokenError()
        await take_attempt(self._store, mfa_user_key(user.id), MFA_USER_ATTEMPTS)
        totp_code = looks_like_totp(code)
        if totp_code and not await self._totp.accept(user, code.strip()):
            await self._count_failure(mfa_token, key, user)
        async with self._db.transaction() as db:
            if totp_code:
                amr = ["pwd", "otp"]
            elif await use_recovery_code(db, user.id, code, self._clock.now()):
                amr = ["pwd", "recovery"]
            else:
                amr = []  # a wrong code: counted after this (empty) transaction ends
            if amr:
                current = await db.get(User, user.id)
                if current is None or current.disabled or not current.mfa_enabled:
                    raise InvalidMfaTokenError()
                if not await guard_store(self._store.delete(key)):
                    raise InvalidMfaTokenError()  # a concurrent right answer used it first
                await guard_store(self._store.reset_counter(mfa_user_key(user.id)))
                pair = await self._sessions.start(
                    db, current, amr=amr, ip=ip, user_agent=user_agent
                )
                await self._succeeded(db, current, amr)
                return pair
        await self._count_failure(mfa_token, key, user)

    async def _succeeded(self, db: AsyncSession, user: User, amr: list[str]) -> None:
        """The last step of a login's transaction: the audit head lock is taken after every
        store call, so it is never held across one."""
        subject = str(user.id)
        if "recovery" in amr:
            await self._audit.record(db, "mfa.recovery_code_used", subject=subject)
        await self._audit.record(
            db, "login.succeeded", actor=subject, subject=subject, details={"amr": amr}
        )

    async def _failed(self, subject: str, reason: str) -> None:
        """A refused password step, in the audit log (never the password)."""
        await self._audit.append("login.failed", subject=subject, details={"reason": reason})

    async def _remember_device(self, address: str, ip: str | None) -> None:
        ttl = self._rules.known_client
        if ttl > timedelta(0) and ip_group(ip) != "-":
            await guard_store(self._store.put(device_key(address, ip), "1", ttl))

    async def _verify(
        self, user: User, address: str, password: str, ip: str | None, *, known: bool
    ) -> bool:
        """A known pair's verification is urgent, within two budgets, so that accounts an
        attacker made "known" cannot fill the urgent lane and starve the other users' known
        devices: at most ``URGENT_LOGINS_PER_IP`` of one IP group in flight on this instance,
        and at most ``URGENT_LOGINS_PER_ACCOUNT`` per account per window. Past either, it
        queues as normal."""
        group = ip_group(ip)
        urgent = self._urgent
        if known and urgent.get(group, 0) < URGENT_LOGINS_PER_IP:
            urgent[group] = urgent.get(group, 0) + 1  # reserved at once
            try:
                budget = await guard_store(
                    self._store.hit(urgent_key(address), URGENT_LOGINS_PER_ACCOUNT, LOGIN_WINDOW)
                )
                if budget.allowed:
                    return await self._hasher.verify(user.password_hash, password, urgent=True)
            finally:
                left = urgent[group] - 1
                if left:
                    urgent[group] = left
                else:
                    del urgent[group]
        return await self._hasher.verify(user.password_hash, password)

    async def _find_candidate(self, address: str, ip: str | None) -> _Candidate | None:
        """The user, and whether this IP (group) is one it logged in from; one short read."""
        async with self._db.read() as db:
            user = await find_by_email(db, address)
            if user is None:
                return None
            group = ip_group(ip)
            window = self._rules.known_client
            if window <= timedelta(0) or group == "-":
                return _Candidate(user, known=False)
            query = (
                select(Session.ip)
                .where(Session.user_id == user.id, Session.created_at >= self._clock.now() - window)
                .order_by(Session.created_at.desc())
                .limit(KNOWN_SESSIONS_LOOKED_AT)
            )
            seen = (await db.scalars(query)).all()
        return _Candidate(user, known=any(ip_group(past) == group for past in seen if past))

    async def _challenge(self, user: User) -> MfaChallenge:
        token = secrets.token_urlsafe(32)
        ttl = self._rules.mfa_token_ttl
        await guard_store(
            self._store.put(_mfa_key(token), json.dumps({"user_id": str(user.id)}), ttl)
        )
        return MfaChallenge(mfa_token=token, expires_in=int(ttl.total_seconds()))

    async def _count_failure(self, mfa_token: str, key: str, user: User) -> NoReturn:
        """A wrong code: counted against the mfa_token (the 5th burns it), audited; always
        raises."""
        await self._audit.append("login.mfa_failed", subject=str(user.id))
        failures = await guard_store(
            self._store.hit(
                store_keys.mfa_failure_key(hash_opaque(mfa_token)),
                MFA_TOKEN_FAILURES,
                self._rules.mfa_token_ttl,
            )
        )
        if failures.count >= MFA_TOKEN_FAILURES:
            await guard_store(self._store.delete(key))
        raise InvalidMfaCodeError()

    async def _challenged_user(self, stored: str | None) -> User | None:
        if stored is None:
            return None
        async with self._db.read() as db:
            user = await db.get(User, uuid.UUID(json.loads(stored)["user_id"]))
        if user is None or user.disabled or not user.mfa_enabled:
            return None
        return user


def _mfa_key(token: str) -> str:
    return store_keys.mfa_token_key(hash_opaque(token))


__all__ = ["LoginRules", "Logins", "MfaChallenge"]
