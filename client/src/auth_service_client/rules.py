"""The contract's token checks as pure functions, mirroring the service's own
(``crypto/jwt.py`` and ``services/validation.py``) with the same reason codes and order:

``parse`` (size, three canonical base64url segments, header JSON object without duplicate
members, ``alg`` in the allow-list, ``kid`` charset, ``typ`` a string, no ``crit``) →
``check_type`` (``at+jwt``) → the caller's key lookup (``unknown_key``, ``key_revoked``) →
``verify_signature`` (RS256 on the exact signed bytes, then the payload) → ``check_claims``
(our claim shape, required claims, ``iss``, ``aud``) → ``TimeBounds.check`` (``exp``,
``nbf``, ``iat`` with the leeway) → revocation (``revocations.RevocationState``).

Every failure raises ``Rejected(reason)``. Header members ``jku``, ``x5u``, ``jwk``, ``x5c``
are never read. Only RS256 can ever be allowed: ``none`` and every HMAC alg are always
``algorithm_not_allowed``, whatever allow-list is passed.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final

from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicKey
from jwt.algorithms import RSAAlgorithm

MAX_TOKEN_LENGTH: Final = 8192
AT_JWT: Final = "at+jwt"
REQUIRED_CLAIMS: Final = ("iss", "sub", "aud", "exp", "iat", "nbf", "jti")
SUPPORTED_ALGORITHMS: Final = frozenset({"RS256"})

_SEGMENT = re.compile(r"[A-Za-z0-9_-]*")
_KID = re.compile(r"[A-Za-z0-9_-]{1,128}")
_MAX_NUMERIC_DATE: Final = 253_402_300_799  # 9999-12-31T23:59:59Z
_RS256 = RSAAlgorithm(RSAAlgorithm.SHA256)


class Rejected(Exception):
    """The token is not valid; ``reason`` is one of ``types.REASONS``."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Parsed:
    """A token split once; nothing in it is trusted until ``verify_signature`` holds."""

    alg: str
    kid: str
    typ: str | None
    signing_input: bytes
    payload: bytes
    signature: bytes


def allow_list(algorithms: Iterable[str]) -> frozenset[str]:
    """The algorithms that may be allowed: the asked ones that are supported (RS256)."""
    if isinstance(algorithms, str):
        raise TypeError("algorithms must be a sequence of names, not a str")
    return frozenset(algorithms) & SUPPORTED_ALGORITHMS


def parse(token: object, allowed: frozenset[str]) -> Parsed:
    """Split and vet the unverified header (``malformed``, ``algorithm_not_allowed``)."""
    if not isinstance(token, str) or len(token) > MAX_TOKEN_LENGTH:
        raise Rejected("malformed")
    parts = token.split(".")
    if len(parts) != 3 or not all(_SEGMENT.fullmatch(part) for part in parts):
        raise Rejected("malformed")
    header = _header(_b64url_decode(parts[0]))
    alg = header.get("alg")
    if not isinstance(alg, str) or not alg:
        raise Rejected("malformed")
    if alg not in allowed:
        raise Rejected("algorithm_not_allowed")
    kid, typ = header.get("kid"), header.get("typ")
    if not isinstance(kid, str) or not _KID.fullmatch(kid) or not isinstance(typ, str | None):
        raise Rejected("malformed")
    if "crit" in header:
        raise Rejected("malformed")
    return Parsed(
        alg=alg,
        kid=kid,
        typ=typ,
        signing_input=f"{parts[0]}.{parts[1]}".encode("ascii"),
        payload=_b64url_decode(parts[1]),
        signature=_b64url_decode(parts[2]),
    )


def check_type(parsed: Parsed, expected: str = AT_JWT) -> None:
    """``wrong_token_type`` unless ``typ`` is ``at+jwt`` (case-insensitive, optional
    ``application/`` prefix)."""
    if parsed.typ is None or parsed.typ.lower().removeprefix("application/") != expected:
        raise Rejected("wrong_token_type")


def verify_signature(parsed: Parsed, key: RSAPublicKey) -> dict[str, Any]:
    """RS256 over the signed bytes (``invalid_signature``), then the payload (``malformed``
    unless a JSON object). The claims are returned unchecked."""
    if parsed.alg not in SUPPORTED_ALGORITHMS:
        raise Rejected("algorithm_not_allowed")
    if not _RS256.verify(parsed.signing_input, key, parsed.signature):
        raise Rejected("invalid_signature")
    try:
        claims = json.loads(parsed.payload.decode("utf-8"))
    except (ValueError, RecursionError):
        raise Rejected("malformed") from None
    if not isinstance(claims, dict):
        raise Rejected("malformed")
    return claims


@dataclass(frozen=True, slots=True)
class TimeBounds:
    """``exp``/``nbf``/``iat`` as epoch seconds (None when absent)."""

    exp: float | None
    nbf: float | None
    iat: float | None

    def check(self, now: float, leeway: float) -> None:
        """``expired`` when ``now >= exp + leeway``; ``not_yet_valid`` when ``now < nbf -
        leeway`` or ``iat > now + leeway``."""
        if self.exp is not None and now - leeway >= self.exp:
            raise Rejected("expired")
        if self.nbf is not None and now + leeway < self.nbf:
            raise Rejected("not_yet_valid")
        if self.iat is not None and self.iat > now + leeway:
            raise Rejected("not_yet_valid")


def check_claims(
    claims: Mapping[str, Any], *, issuer: str, audiences: frozenset[str]
) -> TimeBounds:
    """The checks that do not depend on the time: claim shape (``malformed``), ``iss``
    (``invalid_issuer``), ``aud`` (``invalid_audience``); returns the time bounds."""
    sid, client_id, roles = claims.get("sid"), claims.get("client_id"), claims.get("roles", [])
    if not isinstance(sid, str) and not isinstance(client_id, str):
        raise Rejected("malformed")
    if not isinstance(roles, list) or not all(isinstance(role, str) for role in roles):
        raise Rejected("malformed")
    if any(claims.get(name) is None for name in REQUIRED_CLAIMS):
        raise Rejected("malformed")
    times = {name: _numeric_date(claims[name]) for name in ("exp", "iat", "nbf")}
    if not all(isinstance(claims[name], str) and claims[name] for name in ("iss", "sub", "jti")):
        raise Rejected("malformed")
    token_audiences = _audiences(claims["aud"])
    if claims["iss"] != issuer:
        raise Rejected("invalid_issuer")
    if token_audiences.isdisjoint(audiences):
        raise Rejected("invalid_audience")
    return TimeBounds(exp=times["exp"], nbf=times["nbf"], iat=times["iat"])


def is_service(claims: Mapping[str, Any]) -> bool:
    """A service token (client credentials) names its client and no session."""
    return not isinstance(claims.get("sid"), str)


def _b64url_decode(segment: str) -> bytes:
    """Strict base64url: unpadded, canonical (no stray bits in the last character)."""
    if not segment or len(segment) % 4 == 1:
        raise Rejected("malformed")
    try:
        raw = base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))
    except (binascii.Error, ValueError):
        raise Rejected("malformed") from None
    if base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii") != segment:
        raise Rejected("malformed")
    return raw


def _unique_members(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    if len(members := dict(pairs)) != len(pairs):
        raise ValueError("duplicate member name")
    return members


def _header(raw: bytes) -> dict[str, Any]:
    try:
        header = json.loads(raw.decode("utf-8"), object_pairs_hook=_unique_members)
    except (ValueError, RecursionError):
        raise Rejected("malformed") from None
    if not isinstance(header, dict):
        raise Rejected("malformed")
    return header


def _numeric_date(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise Rejected("malformed")
    if not 0 <= value <= _MAX_NUMERIC_DATE:
        raise Rejected("malformed")
    return float(value)


def _audiences(value: object) -> frozenset[str]:
    if isinstance(value, str):
        return frozenset({value})
    if isinstance(value, list) and all(isinstance(member, str) for member in value):
        return frozenset(value)
    raise Rejected("malformed")
