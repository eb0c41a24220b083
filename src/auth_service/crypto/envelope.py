"""AEAD envelope for secrets at rest (private keys, TOTP secrets).

Format of a sealed value: ``b"\\x01" || nonce (12 bytes) || AES-256-GCM ciphertext+tag``.
The AES key is derived with HKDF-SHA256 from ``AUTH_KEY_ENCRYPTION_SECRET`` and the
purpose; the caller binds the row (e.g. ``kid``) as associated data, so a ciphertext
moved to another row, or sealed for another purpose, does not open.
"""

from __future__ import annotations

import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

_VERSION = b"\x01"
_NONCE_BYTES = 12
_SALT = b"auth-service/envelope/v1"


class EnvelopeError(Exception):
    """The value does not open: wrong secret, wrong associated data, or tampering."""


class Envelope:
    def __init__(self, secret: str, purpose: str) -> None:
        if not secret:
            raise ValueError("an envelope needs a non-empty secret")
        key = HKDF(algorithm=hashes.SHA256(), length=32, salt=_SALT, info=purpose.encode()).derive(
            secret.encode()
        )
        self._aead = AESGCM(key)
        self._purpose = purpose.encode()

    def seal(self, plaintext: bytes, *, associated_data: str) -> bytes:
        nonce = os.urandom(_NONCE_BYTES)
        return _VERSION + nonce + self._aead.encrypt(nonce, plaintext, self._aad(associated_data))

    def open(self, sealed: bytes, *, associated_data: str) -> bytes:
        if len(sealed) < 1 + _NONCE_BYTES + 16 or sealed[:1] != _VERSION:
            raise EnvelopeError("not a sealed value of a known version")
        nonce, body = sealed[1 : 1 + _NONCE_BYTES], sealed[1 + _NONCE_BYTES :]
        try:
            return self._aead.decrypt(nonce, body, self._aad(associated_data))
        except InvalidTag as exc:
            raise EnvelopeError("the value does not open with this secret and binding") from exc

    def _aad(self, associated_data: str) -> bytes:
        return self._purpose + b"\x00" + associated_data.encode()
