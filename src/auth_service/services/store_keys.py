"""Every store key, lock name and channel name the services use: built here, nowhere else.

Keys are relative: the store adds its own prefix (``auth:``), and lock names additionally
go under its ``lock:`` namespace, so a lock name here is bare. Parts that name a client IP
are ``limits.ip_group(ip)`` (an IPv6 /64 is one client); parts that name an account are the
normalised email (``accounts.normalize_email``). Each entry says what it holds and who sets
its TTL (the module that writes it).
"""

from __future__ import annotations

# -- revocation entries (mirrored in memory by ``store.mirror.MirroredStore``) --------------
REVOKED_PREFIX = "revoked:"
USER_PREFIX = "user:"
MIRRORED_PREFIXES = (REVOKED_PREFIX, USER_PREFIX)  # the prefixes MirroredStore mirrors


def jti_key(jti: str) -> str:
    """One revoked access token; TTL: revocation.revoke_jti (token expiry + leeway)."""
    return f"{REVOKED_PREFIX}jti:{jti}"


def sid_key(sid: str) -> str:
    """A revoked session; TTL: revocation.revoke_sessions (access TTL + leeway)."""
    return f"{REVOKED_PREFIX}sid:{sid}"


def revoked_after_key(user_id: str) -> str:
    """Epoch seconds: user's tokens issued at or before are revoked; TTL: revocation (horizon)."""
    return f"{USER_PREFIX}{user_id}:revoked-after"


def client_deleted_key(client_id: str) -> str:
    """Set when the client was deleted: every token of it is revoked, whenever issued (an
    instance that had not yet heard of the delete may have issued more); TTL:
    revocation.revoke_client_tokens (``client_horizon``)."""
    return f"{REVOKED_PREFIX}client:{client_id}:deleted"


def disabled_key(user_id: str) -> str:
    """Set while the user is disabled; TTL: revocation.mark_disabled (horizon)."""
    return f"{USER_PREFIX}{user_id}:disabled"


def parse_revocation_key(key: str) -> tuple[str, str] | None:
    """What a mirrored key revokes: ``(kind, id)`` with kind ``jti``, ``sid``, ``client``
    (a deleted client), ``revoked_after`` or ``disabled`` (a user); None for other keys
    (the index marker). The inverse of the builders above, for the revocation stream."""
    if key.startswith(USER_PREFIX):
        user, _, what = key[len(USER_PREFIX) :].rpartition(":")
        kinds = {"revoked-after": "revoked_after", "disabled": "disabled"}
        return (kinds[what], user) if user and what in kinds else None
    if not key.startswith(REVOKED_PREFIX):
        return None
    kind, _, rest = key[len(REVOKED_PREFIX) :].partition(":")
    if kind in ("jti", "sid") and rest:
        return kind, rest
    if kind == "client" and rest.endswith(":deleted") and len(rest) > len(":deleted"):
        return "client", rest[: -len(":deleted")]
    return None


# -- the revocation stream ------------------------------------------------------------------
def stream_connect_key(client_id: str) -> str:
    """Counter: a client's stream connections (all instances); TTL: revocation_feed's window."""
    return f"events-connect:{client_id}"


EVENTS_PREFIX = "events:"
"""``events:<id>``: one announcement, for resuming streams; TTL: the access TTL + leeway."""


# The revocation index marker (a random id); TTL: revocation.INDEX_MARKER_TTL, written by
# revocation_index. Under ``revoked:`` so the mirror answers it from memory.
INDEX_MARKER_KEY = f"{REVOKED_PREFIX}epoch"


# -- login and second-factor limits -----------------------------------------------------------
def login_from_key(group: str) -> str:
    """Counter: password attempts from one IP group; TTL: limits.LOGIN_WINDOW (login)."""
    return f"login:from:{group}"


def login_pair_key(address: str, group: str) -> str:
    """Counter: attempts on one account from one IP group; TTL: limits.LOGIN_WINDOW (login)."""
    return f"login:pair:{address}:{group}"


def login_device_key(address: str, group: str) -> str:
    """Hint: the account logged in from this IP group; TTL: login (AUTH_KNOWN_CLIENT_DAYS)."""
    return f"login:device:{address}:{group}"


def login_urgent_key(address: str) -> str:
    """Counter: an account's urgent (known-device) logins; TTL: login (LOGIN_WINDOW)."""
    return f"login:urgent:{address}"


def login_account_key(address: str) -> str:
    """Counter: attempts on one account from all IPs; TTL: limits.LOGIN_WINDOW (login etc.)."""
    return f"login:acct:{address}"


def mfa_user_key(user_id: object) -> str:
    """Counter: one user's second-factor attempts; TTL: limits.LOGIN_WINDOW (login, totp)."""
    return f"mfa:user:{user_id}"


def mfa_token_key(token_hash: str) -> str:
    """A pending MFA challenge (JSON user id) by token hash; TTL: login (mfa_token_ttl)."""
    return f"mfa:{token_hash}"


def mfa_failure_key(token_hash: str) -> str:
    """Counter: wrong codes against one MFA challenge; TTL: login (mfa_token_ttl window)."""
    return f"mfa-fail:{token_hash}"


def totp_used_key(user_id: object, step: int) -> str:
    """A TOTP code (time step) already used by the user; TTL: totp._USED_CODE_TTL."""
    return f"totp-used:{user_id}:{step}"


# -- sessions and passwords ----------------------------------------------------------------
def refresh_grace_key(token_hash: str, successor_id: str) -> str:
    """The sealed pair a rotation of the refresh token (by its hash) minted with that
    successor; only the successor the database holds is ever read. TTL: refresh
    (refresh_reuse_grace + 5 s)."""
    return f"refresh-grace:{token_hash}:{successor_id}"


def register_ip_key(group: str) -> str:
    """Registrations from one IP group (AUTH_REGISTER_IP_LIMIT per hour; the counter's window)."""
    return f"register:ip:{group}"


def forgot_email_key(email: str) -> str:
    """Counter: reset requests for one email; TTL: passwords.FORGOT_WINDOW."""
    return f"forgot:email:{email}"


def forgot_ip_key(group: str) -> str:
    """Counter: reset requests from one IP group; TTL: passwords.FORGOT_WINDOW."""
    return f"forgot:ip:{group}"


def verify_email_key(email: str) -> str:
    """Counter: verification mails asked for one email (registration with verification on,
    and resend); TTL: verification.VERIFY_WINDOW."""
    return f"verify:email:{email}"


def verify_ip_key(group: str) -> str:
    """Counter: verification resends from one IP group; TTL: verification.VERIFY_WINDOW."""
    return f"verify:ip:{group}"


_LIMITER_KINDS = frozenset({"from", "pair", "acct", "ip", "email", "id", "device", "urgent"})


def limiter_name(key: str) -> str:
    """The limiter a counter key belongs to, for the metrics: its first segment, and the
    second when it names the kind of counter (``login:pair``, ``forgot:ip``): never a part
    that names an account, an IP or a client."""
    first, _, rest = key.partition(":")
    kind = rest.partition(":")[0]
    return f"{first}:{kind}" if kind in _LIMITER_KINDS else first


# -- service clients -------------------------------------------------------------------------
def client_ip_failure_key(group: str) -> str:
    """Counter: failed client authentications from one IP group; TTL: clients (window)."""
    return f"client-fail:ip:{group}"


def client_id_failure_key(client_id: str) -> str:
    """Counter: failed authentications of one client id; TTL: clients (window)."""
    return f"client-fail:id:{client_id}"


def client_seen_key(client_id: str, group: str) -> str:
    """Set when the client authenticated from this IP group; TTL: clients (familiar_ttl)."""
    return f"client-seen:{client_id}:{group}"


# -- locks (bare names: the store puts them under ``lock:``) and channels ---------------------
SIGNING_KEYS_LOCK = "signing-keys"  # signing-key changes; TTL: keys/rotation (ctx.lock_ttl)
REVOCATION_REBUILD_LOCK = "revocation-rebuild"  # index rebuild; TTL: revocation_index
CLIENTS_CHANNEL = "clients-changed"  # a client id whose secrets changed (clients); no TTL
KEYS_CHANNEL = "keys-changed"  # "keys changed" events (keys, rotation -> key_events); no TTL
