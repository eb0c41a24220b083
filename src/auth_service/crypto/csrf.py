"""The CSRF token of browser mode: an HMAC of the refresh token, so it binds to the session.

``token = base64url(HMAC-SHA256(k_csrf, "csrf-v1\\0" || refresh_token))``, ``k_csrf`` derived
with HKDF-SHA256 from the key-encryption secret (a key of its own: salt and info differ from
every other derivation). A cookie-authenticated request passes only when its ``X-CSRF-Token``
header, its CSRF cookie and the HMAC of its refresh cookie are all equal: a sibling subdomain
that plants a CSRF cookie cannot compute the HMAC of the victim's refresh token, and a foreign
page cannot send the header without a CORS grant.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Sequence

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

_SALT = b"auth-service/csrf/v1"
_INFO = b"csrf-token"
_DOMAIN = b"csrf-v1\x00"
# base64url of 32 bytes, no padding; anything longer is refused before any HMAC.
TOKEN_LENGTH = 43


class CsrfBinding:
    def __init__(self, secrets: str | Sequence[str]) -> None:
        candidates = [secrets] if isinstance(secrets, str) else list(secrets)
        if not candidates or not all(candidates):
            raise ValueError("the CSRF binding needs a non-empty secret")
        # The first key makes tokens; any of them checks one (a master-secret rotation does
        # not log browsers out).
        self._keys = [
            HKDF(algorithm=hashes.SHA256(), length=32, salt=_SALT, info=_INFO).derive(
                secret.encode()
            )
            for secret in candidates
        ]

    def token_for(self, refresh_token: str, key: bytes | None = None) -> str:
        used = self._keys[0] if key is None else key
        mac = hmac.new(used, _DOMAIN + refresh_token.encode(), hashlib.sha256).digest()
        return base64.urlsafe_b64encode(mac).rstrip(b"=").decode("ascii")

    def verify(self, refresh_token: str | None, cookie: str | None, header: str | None) -> bool:
        """True only if header, cookie and the refresh token's HMAC are one value."""
        if not refresh_token or not cookie or not header:
            return False
        if len(cookie) != TOKEN_LENGTH or len(header) != TOKEN_LENGTH:
            return False
        try:
            presented_cookie, presented_header = cookie.encode("ascii"), header.encode("ascii")
            expected = [self.token_for(refresh_token, key).encode("ascii") for key in self._keys]
        except UnicodeEncodeError:
            return False
        # Both compares always run: no early exit tells which of the two differed.
        for one in expected:
            cookie_ok = hmac.compare_digest(presented_cookie, one)
            header_ok = hmac.compare_digest(presented_header, one)
            if cookie_ok and header_ok:
                return True
        return False
