"""The in-memory key cache every instance validates and signs from (no DB on the hot path).

A ``KeySnapshot`` is immutable and swapped in whole, so a request never sees half a reload.
It is built from the database at startup, on every "keys changed" event, and on a slow timer.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm

from auth_service.db.models import KeyStatus, SigningKey

# The keys JWKS publishes, in JWKS order (then oldest first): the one JWKS ordering.
JWKS_ORDER: dict[str, int] = {KeyStatus.ACTIVE: 0, KeyStatus.NEXT: 1, KeyStatus.RETIRED: 2}


@dataclass(frozen=True, slots=True)
class VerificationKey:
    kid: str
    status: str
    public_key: rsa.RSAPublicKey
    expires_at: datetime | None


@dataclass(frozen=True, slots=True)
class SigningMaterial:
    kid: str
    alg: str
    private_key: rsa.RSAPrivateKey


@dataclass(frozen=True, slots=True)
class JwksDocument:
    body: bytes
    etag: str  # strong validator: a quoted SHA-256 prefix of the body


@dataclass(frozen=True, slots=True)
class KeySnapshot:
    keys: dict[str, VerificationKey] = field(default_factory=dict)
    signing: SigningMaterial | None = None
    jwks: JwksDocument = field(default_factory=lambda: build_jwks([]))
    loaded_at: datetime | None = None


def in_jwks_order(rows: Iterable[SigningKey]) -> list[SigningKey]:
    """The rows JWKS publishes, in JWKS order: active, next, retired; oldest first within."""
    return sorted(
        (row for row in rows if row.status in JWKS_ORDER),
        key=lambda row: (JWKS_ORDER[row.status], row.created_at),
    )


def build_jwks(rows: Iterable[SigningKey]) -> JwksDocument:
    document: dict[str, Any] = {"keys": [_public_members(row) for row in in_jwks_order(rows)]}
    body = json.dumps(document, separators=(",", ":"), sort_keys=True).encode()
    return JwksDocument(body=body, etag=f'"{hashlib.sha256(body).hexdigest()[:32]}"')


def _public_members(row: SigningKey) -> dict[str, Any]:
    jwk = row.public_jwk
    return {
        "kty": jwk["kty"],
        "kid": row.kid,
        "use": "sig",
        "alg": row.alg,
        "n": jwk["n"],
        "e": jwk["e"],
    }


def verification_key(row: SigningKey) -> VerificationKey:
    public_key = RSAAlgorithm.from_jwk({**row.public_jwk, "kty": "RSA"})
    if not isinstance(public_key, rsa.RSAPublicKey):
        raise ValueError(f"key {row.kid} is not an RSA public key")
    return VerificationKey(
        kid=row.kid, status=row.status, public_key=public_key, expires_at=row.expires_at
    )


class KeyRing:
    """Holds the current snapshot; readers take ``ring.snapshot`` once per request."""

    def __init__(self) -> None:
        self._snapshot = KeySnapshot()
        # Reloads are serialised, so a slow reload that read the database earlier can never
        # replace the result of a later one (e.g. undo a revocation).
        self.reload_lock = asyncio.Lock()
        self._watchers: list[Callable[[KeySnapshot], None]] = []

    @property
    def snapshot(self) -> KeySnapshot:
        return self._snapshot

    def watch(self, callback: Callable[[KeySnapshot], None]) -> None:
        """Call ``callback`` with every snapshot swapped in (the revocation stream's key
        events)."""
        self._watchers.append(callback)

    def replace(self, snapshot: KeySnapshot) -> None:
        self._snapshot = snapshot
        for callback in self._watchers:
            callback(snapshot)

    def lookup(self, kid: str) -> VerificationKey | None:
        return self._snapshot.keys.get(kid)

    @property
    def signing(self) -> SigningMaterial | None:
        return self._snapshot.signing
