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
from collections.abc import Mapping

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


class AuditMac:
    def __init__(self, secret: str) -> None:
        if not secret:
            raise ValueError("the audit chain needs a non-empty secret")
        self._key = HKDF(algorithm=hashes.SHA256(), length=32, salt=_SALT, info=_INFO).derive(
            secret.encode()
        )

    def row(self, prev_mac: str, record: Mapping[str, object]) -> str:
        message = _ROW + prev_mac.encode("ascii") + b"\x00" + canonical(record)
        return hmac.new(self._key, message, hashlib.sha256).hexdigest()

    def checkpoint(self, record: Mapping[str, object]) -> str:
        return hmac.new(self._key, _CHECKPOINT + canonical(record), hashlib.sha256).hexdigest()

    @staticmethod
    def same(expected: str, presented: str) -> bool:
        return hmac.compare_digest(expected.encode("ascii"), presented.encode("ascii"))
