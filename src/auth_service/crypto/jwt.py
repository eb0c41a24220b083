"""Access tokens as JWS compact tokens (RFC 7515/7519/9068), RS256 only.

Verification is done by hand, not by pyjwt, because the signature cache in
``services/validation.py`` keeps each outcome per token string and the header and claims checks
must run against an injected clock and an alg allow-list before any signature work; encoding
(``encode_token``) is pyjwt's.

Token formats (API.md "Tokens"), header ``{"alg": "RS256", "typ": "at+jwt", "kid": <thumbprint>}``:
- user access token claims: ``iss, sub, aud, exp, iat, nbf, jti, sid, roles, amr``.
- service access token claims: ``iss, sub, aud, exp, iat, nbf, jti, roles, client_id, scope``.

Verify in order (the validator's path): ``parse_token``; ``check_token_type``; the caller looks
the kid up (``unknown_key``/``key_revoked``); ``verify_parsed`` with that key;
``check_static_claims``; ``TimeBounds.check`` against an injected ``now``. Failures raise
``TokenRejected(reason)``; no pyjwt exception leaves this module. Every alg but RS256 (the only
one settings allow) is ``algorithm_not_allowed`` whatever allow-list a caller passes, ``none``
and HMAC included. Header members ``jku``, ``x5u``, ``jwk``, ``x5c`` are ignored: never fetched,
never used to pick or build a key (``TokenHeader`` does not carry them); ``kid`` names one of
this service's published keys.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Final

import jwt
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.padding import PKCS1v15
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey, RSAPublicKey

MAX_TOKEN_LENGTH: Final = 8192
AT_JWT: Final = "at+jwt"  # RFC 9068 §2.1
DEFAULT_REQUIRED_CLAIMS: Final = ("iss", "sub", "aud", "exp", "iat", "nbf", "jti")

_SEGMENT = re.compile(r"[A-Za-z0-9_-]*")
_KID = re.compile(r"[A-Za-z0-9_-]{1,128}")  # RFC 7638 thumbprints are 43 characters
_MAX_NUMERIC_DATE = 253_402_300_799  # 9999-12-31T23:59:59Z, the last second a datetime holds
_RS256: Final = "RS256"  # the only alg supported; settings allow nothing else (_only_asymmetric)


class TokenRejected(Exception):
    """The token is not valid; ``reason`` is its API.md code for ``{"valid": false}``: malformed,
    invalid_signature, algorithm_not_allowed, wrong_token_type, expired, not_yet_valid,
    invalid_issuer or invalid_audience (``unknown_key``/``key_revoked`` are the caller's)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class TokenHeader:
    alg: str
    kid: str
    typ: str | None


@dataclass(frozen=True, slots=True)
class ParsedToken:
    """A token split and decoded once: the vetted header and the raw parts the signature
    covers (RFC 7515 §5.2). Nothing in it is trusted until ``verify_parsed`` succeeds."""

    header: TokenHeader
    signing_input: bytes
    payload: bytes
    signature: bytes


def parse_token(token: str, *, allowed_algorithms: Sequence[str]) -> ParsedToken:
    """Split the token and parse and vet its unverified JOSE header, keeping the decoded parts
    for ``verify_parsed``; nothing here is trusted until the signature is.

    ``malformed``: not a str, longer than ``MAX_TOKEN_LENGTH`` (checked before any parsing), not
    three non-empty canonical unpadded base64url segments, a header that is not a UTF-8 JSON
    object (duplicate members refused), a missing or non-string ``alg``, a ``kid`` that is not
    1-128 characters of ``[A-Za-z0-9_-]``, a non-string ``typ``, ``crit`` present.
    ``algorithm_not_allowed``: ``alg`` is not RS256 or not in ``allowed_algorithms`` (exact,
    case-sensitive), so always for ``none`` and ``HS*``. ``typ`` is returned as given.
    """
    allowed = _allow_list(allowed_algorithms)
    header_segment, payload_segment, signature_segment = _split(token)
    header = _parse_header(_b64url_decode(header_segment))
    if not isinstance(alg := header.get("alg"), str) or not alg:
        raise TokenRejected("malformed")
    if alg not in allowed:
        raise TokenRejected("algorithm_not_allowed")
    kid, typ = header.get("kid"), header.get("typ")
    if not isinstance(kid, str) or not _KID.fullmatch(kid) or not isinstance(typ, str | None):
        raise TokenRejected("malformed")
    if "crit" in header:  # no extension is understood here, so none may be critical
        raise TokenRejected("malformed")
    return ParsedToken(
        header=TokenHeader(alg=alg, kid=kid, typ=typ),
        signing_input=f"{header_segment}.{payload_segment}".encode("ascii"),
        payload=_b64url_decode(payload_segment),
        signature=_b64url_decode(signature_segment),
    )


def check_token_type(header: TokenHeader, *, expected: str = AT_JWT) -> None:
    """``wrong_token_type`` unless ``typ`` is ``expected``, case-insensitively, ``application/``
    prefix optional (RFC 7515 §4.1.9; RFC 9068 §4 accepts ``at+jwt`` and ``application/at+jwt``)."""
    if header.typ is None or header.typ.lower().removeprefix("application/") != expected.lower():
        raise TokenRejected("wrong_token_type")


def verify_parsed(parsed: ParsedToken, public_key: RSAPublicKey) -> dict[str, Any]:
    """Verify the signature of a token ``parse_token`` split and return the claims, unchecked
    (see ``check_static_claims``). The RSA check runs on the exact signed bytes with
    ``cryptography`` (no second parse), and only then is the payload decoded, so no
    attacker-chosen payload is parsed before its signature holds.

    ``algorithm_not_allowed``: alg is not RS256 (``parse_token`` already refuses it).
    ``invalid_signature``: it does not verify. ``malformed``: a payload that is not a UTF-8
    JSON object.
    """
    if parsed.header.alg != _RS256:
        raise TokenRejected("algorithm_not_allowed")
    try:
        public_key.verify(parsed.signature, parsed.signing_input, PKCS1v15(), hashes.SHA256())
    except InvalidSignature:
        raise TokenRejected("invalid_signature") from None
    try:
        claims = json.loads(parsed.payload.decode("utf-8"))
    except (ValueError, RecursionError):
        raise TokenRejected("malformed") from None
    if not isinstance(claims, dict):
        raise TokenRejected("malformed")
    return claims


@dataclass(frozen=True, slots=True)
class TimeBounds:
    """A token's ``exp``/``nbf``/``iat`` (absent ones are None): the part of the claims check
    that depends on the time, so a verified token's static checks need not run again."""

    exp: datetime | None
    nbf: datetime | None
    iat: datetime | None

    def check(self, now: datetime, leeway: timedelta) -> None:
        """``expired`` when ``now >= exp + leeway``; ``not_yet_valid`` when ``now < nbf -
        leeway`` or ``iat > now + leeway``. So, with leeway L: ``now = exp + L - 1s`` is valid,
        ``now = exp + L`` expired; ``now = nbf - L`` valid, ``nbf - L - 1s`` not yet; ``now =
        iat - L`` still valid. ``ValueError`` unless ``now`` is timezone-aware and ``leeway`` not
        negative."""
        if now.utcoffset() is None or leeway < timedelta(0):
            raise ValueError("now must be timezone-aware and leeway not negative")
        if self.exp is not None and now - leeway >= self.exp:
            raise TokenRejected("expired")
        if self.nbf is not None and now + leeway < self.nbf:
            raise TokenRejected("not_yet_valid")
        if self.iat is not None and self.iat > now + leeway:
            raise TokenRejected("not_yet_valid")


def check_static_claims(
    claims: Mapping[str, Any],
    *,
    issuer: str,
    audiences: Sequence[str],
    required: Sequence[str] = DEFAULT_REQUIRED_CLAIMS,
) -> TimeBounds:
    """Check the registered claims that do not depend on the time; return the rest.

    In order: ``malformed`` when a ``required`` claim is absent or null, ``exp``/``iat``/``nbf``
    is not a number (bool excluded) in [0, 253402300799], ``aud`` is neither a string nor a list
    of strings, or ``iss``/``sub``/``jti`` is not a non-empty string; ``invalid_issuer`` unless
    ``iss == issuer`` exactly; ``invalid_audience`` unless ``aud`` intersects ``audiences``.
    """
    if isinstance(audiences, str) or not audiences or not issuer:
        raise ValueError("issuer must be non-empty and audiences a non-empty list of strings")
    if any(claims.get(name) is None for name in required):
        raise TokenRejected("malformed")
    times = {name: _numeric_date(claims[name]) for name in ("exp", "iat", "nbf") if name in claims}
    strings = [claims[name] for name in ("iss", "sub", "jti") if name in claims]
    if not all(isinstance(value, str) and value for value in strings):
        raise TokenRejected("malformed")
    token_audiences = _audiences(claims["aud"]) if "aud" in claims else frozenset()
    if claims.get("iss") != issuer:
        raise TokenRejected("invalid_issuer")
    if token_audiences.isdisjoint(audiences):
        raise TokenRejected("invalid_audience")
    return TimeBounds(exp=times.get("exp"), nbf=times.get("nbf"), iat=times.get("iat"))


def encode_token(
    claims: Mapping[str, Any],
    *,
    private_key: RSAPrivateKey,
    kid: str,
    typ: str = AT_JWT,
) -> str:
    """Sign ``claims`` RS256 with pyjwt; the header is exactly ``{"alg", "typ", "kid"}``."""
    if not _KID.fullmatch(kid) or not typ:
        raise ValueError("kid must be 1-128 characters of [A-Za-z0-9_-] and typ non-empty")
    return jwt.encode(dict(claims), private_key, algorithm=_RS256, headers={"typ": typ, "kid": kid})


def _allow_list(algorithms: Sequence[str]) -> frozenset[str]:
    if isinstance(algorithms, str):  # a programming error: "RS256" would be a set of letters
        raise TypeError("algorithms must be a sequence of names, not a str")
    return frozenset(algorithms) & {_RS256}  # none, HS* and every other alg are never allowed


def _split(token: str) -> tuple[str, str, str]:
    # The length is checked before any parsing, so an over-long token costs nothing more.
    if not isinstance(token, str) or len(token) > MAX_TOKEN_LENGTH:
        raise TokenRejected("malformed")
    parts = token.split(".")
    if len(parts) != 3 or not all(_SEGMENT.fullmatch(part) for part in parts):
        raise TokenRejected("malformed")
    return parts[0], parts[1], parts[2]


def _b64url_decode(segment: str) -> bytes:
    """Strict RFC 7515 base64url: unpadded and canonical (no stray bits in the last character)."""
    if not segment or len(segment) % 4 == 1 or not _SEGMENT.fullmatch(segment):
        raise TokenRejected("malformed")
    raw = base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))
    if base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii") != segment:
        raise TokenRejected("malformed")
    return raw


def _unique_members(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    if len(members := dict(pairs)) != len(pairs):
        raise ValueError("duplicate member name")
    return members


def _parse_header(raw: bytes) -> dict[str, Any]:
    try:
        header = json.loads(raw.decode("utf-8"), object_pairs_hook=_unique_members)
    except (ValueError, RecursionError):  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        raise TokenRejected("malformed") from None
    if not isinstance(header, dict):
        raise TokenRejected("malformed")
    return header


def _numeric_date(value: object) -> datetime:
    # The range test also refuses NaN, infinities and ints too large for a float.
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TokenRejected("malformed")
    if not 0 <= value <= _MAX_NUMERIC_DATE:
        raise TokenRejected("malformed")
    return datetime.fromtimestamp(value, tz=UTC)


def _audiences(value: object) -> frozenset[str]:
    if isinstance(value, str):
        return frozenset({value})
    if isinstance(value, list) and all(isinstance(member, str) for member in value):
        return frozenset(value)
    raise TokenRejected("malformed")
