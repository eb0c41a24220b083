"""The MAC of the audit chain: ``HMAC-SHA256(k_audit, domain || prev_mac || canonical row)``.

``k_audit`` is derived with HKDF-SHA256 from the key-encryption secret with a salt and info
of its own, so it is neither the envelope key nor the CSRF key, and knowing one tells
nothing of the others. The canonical form is JSON with sorted keys, no whitespace, UTF-8,
so the MAC does not depend on how a database returns the row.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Mapping, Sequence

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

_SALT = b"auth-service/audit/v1"
_INFO = b"audit-chain"
_ROW = b"audit-row-v1\x00"
_CHECKPOINT = b"audit-checkpoint-v1\x00"
GENESIS = "0" * 64  # the previous MAC of the first row


def canonical(record: Mapping[str, object]) -> bytes:
    return json.dumps(
        record, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    ).encode()


def _derive(secret: str) -> bytes:
    if not secret:
        raise ValueError("the audit chain needs a non-empty secret")
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=_SALT, info=_INFO).derive(
        secret.encode()
    )


class AuditMac:
    """MACs with the first secret; ``row_ok``/``checkpoint_ok`` accept any of them, so the
    chain verifies while the master secret is rotated (``keys rewrap`` re-MACs it)."""

    def __init__(self, secrets: str | Sequence[str]) -> None:
        candidates = [secrets] if isinstance(secrets, str) else list(secrets)
        if not candidates:
            raise ValueError("the audit chain needs a non-empty secret")
        self._keys = [_derive(secret) for secret in candidates]

    def row(self, prev_mac: str, record: Mapping[str, object]) -> str:
        return _row_mac(self._keys[0], prev_mac, record)

    def checkpoint(self, record: Mapping[str, object]) -> str:
        return _checkpoint_mac(self._keys[0], record)

    def row_ok(self, prev_mac: str, record: Mapping[str, object], presented: str) -> bool:
        return any(self.same(_row_mac(key, prev_mac, record), presented) for key in self._keys)

    def checkpoint_ok(self, record: Mapping[str, object], presented: str) -> bool:
        return any(self.same(_checkpoint_mac(key, record), presented) for key in self._keys)

    @staticmethod
    def same(expected: str, presented: str) -> bool:
        return hmac.compare_digest(expected.encode("ascii"), presented.encode("ascii"))


def _row_mac(key: bytes, prev_mac: str, record: Mapping[str, object]) -> str:
    message = _ROW + prev_mac.encode("ascii") + b"\x00" + canonical(record)
    return hmac.new(key, message, hashlib.sha256).hexdigest()


def _checkpoint_mac(key: bytes, record: Mapping[str, object]) -> str:
    return hmac.new(key, _CHECKPOINT + canonical(record), hashlib.sha256).hexdigest()
