"""AEAD envelope for secrets at rest (private keys, TOTP secrets, webhook secrets).

Format of a sealed value: ``b"\\x02" || fingerprint (8 bytes) || nonce (12 bytes) ||
AES-256-GCM ciphertext+tag``; the fingerprint names the secret that sealed it (an HKDF output
of its own: it tells nothing of the secret or the key), which is how a row records its
secret's version. Values of the first format, ``b"\\x01" || nonce || ciphertext``, still open.
The AES key is derived with HKDF-SHA256 from the secret and the purpose; the caller binds the
row (e.g. ``kid``) as associated data, so a ciphertext moved to another row, or sealed for
another purpose, does not open.

An envelope holds one or more secrets (``Settings.secret_values``): it seals with the first
and opens with whichever sealed the value, so replicas keep working while the master secret
is rotated (``keys rewrap``; SECURITY.md).
"""

from __future__ import annotations

import os
from collections.abc import Sequence

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

_V1 = b"\x01"
_V2 = b"\x02"
_NONCE_BYTES = 12
_FINGERPRINT_BYTES = 8
_SALT = b"auth-service/envelope/v1"
_FINGERPRINT_SALT = b"auth-service/secret-fingerprint/v1"


class EnvelopeError(Exception):
    """The value does not open: wrong secret, wrong associated data, or tampering."""


def fingerprint(secret: str) -> bytes:
    """Which secret sealed a value (8 bytes, derived one way from the secret)."""
    return HKDF(
        algorithm=hashes.SHA256(), length=_FINGERPRINT_BYTES, salt=_FINGERPRINT_SALT, info=b"fp"
    ).derive(secret.encode())


class Envelope:
    def __init__(self, secrets: str | Sequence[str], purpose: str) -> None:
        candidates = [secrets] if isinstance(secrets, str) else list(secrets)
        if not candidates or not all(candidates):
            raise ValueError("an envelope needs a non-empty secret")
        self._purpose = purpose.encode()
        self._keys = [
            (
                fingerprint(secret),
                AESGCM(
                    HKDF(
                        algorithm=hashes.SHA256(), length=32, salt=_SALT, info=purpose.encode()
                    ).derive(secret.encode())
                ),
            )
            for secret in candidates
        ]

    def seal(self, plaintext: bytes, *, associated_data: str) -> bytes:
        current, aead = self._keys[0]
        nonce = os.urandom(_NONCE_BYTES)
        body = aead.encrypt(nonce, plaintext, self._aad(associated_data))
        return _V2 + current + nonce + body

    def sealed_by_current(self, sealed: bytes) -> bool:
        """Whether ``sealed`` is of the current format and secret (nothing to rewrap)."""
        return sealed[:1] == _V2 and sealed[1 : 1 + _FINGERPRINT_BYTES] == self._keys[0][0]

    def open(self, sealed: bytes, *, associated_data: str) -> bytes:
        aad = self._aad(associated_data)
        if sealed[:1] == _V2 and len(sealed) >= 1 + _FINGERPRINT_BYTES + _NONCE_BYTES + 16:
            marked = sealed[1 : 1 + _FINGERPRINT_BYTES]
            rest = sealed[1 + _FINGERPRINT_BYTES :]
            keys = [aead for fp, aead in self._keys if fp == marked]
            if not keys:
                raise EnvelopeError("the value was sealed under a secret this instance lacks")
        elif sealed[:1] == _V1 and len(sealed) >= 1 + _NONCE_BYTES + 16:
            rest, keys = sealed[1:], [aead for _fp, aead in self._keys]
        else:
            raise EnvelopeError("not a sealed value of a known version")
        nonce, body = rest[:_NONCE_BYTES], rest[_NONCE_BYTES:]
        for aead in keys:
            try:
                return aead.decrypt(nonce, body, aad)
            except InvalidTag:
                continue
        raise EnvelopeError("the value does not open with this secret and binding")

    def _aad(self, associated_data: str) -> bytes:
        return self._purpose + b"\x00" + associated_data.encode()
