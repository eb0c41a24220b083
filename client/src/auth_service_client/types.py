"""What every part of the library answers with: a ``Verdict``, and the contract's reasons."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

REASONS = (
    "malformed",
    "invalid_signature",
    "unknown_key",
    "key_revoked",
    "algorithm_not_allowed",
    "wrong_token_type",
    "expired",
    "not_yet_valid",
    "invalid_issuer",
    "invalid_audience",
    "token_revoked",
    "session_revoked",
    "user_disabled",
)
"""The reasons of ``{valid: false, error}`` (shared/API.md "Validation"), in its order."""


class Claims(dict[str, Any]):
    """A token's claims, read-only: verdicts are cached and shared between callers (the
    verifier's signature cache, the client's positive cache), so a caller that changed its
    copy would change every later answer for that token. A ``dict`` still (JSON encoders and
    equality work as before), with arrays as tuples."""

    def _read_only(self, *_args: object, **_kwargs: object) -> None:
        raise TypeError("token claims are read-only; copy them with dict(claims)")

    __setitem__ = __delitem__ = _read_only
    clear = pop = popitem = setdefault = update = __ior__ = _read_only  # type: ignore[assignment]


def freeze(value: Any) -> Any:
    """JSON data made read-only: objects as ``Claims``, arrays as tuples."""
    if isinstance(value, dict):
        frozen = Claims()
        for key, member in value.items():
            dict.__setitem__(frozen, key, freeze(member))
        return frozen
    if isinstance(value, list | tuple):
        return tuple(freeze(member) for member in value)
    return value


@dataclass(frozen=True, slots=True)
class Verdict:
    """The answer of ``/validate`` for one token, from the service or from a local check."""

    valid: bool
    claims: Mapping[str, Any] | None = None
    error: str | None = None  # one of REASONS when not valid

    @classmethod
    def from_json(cls, body: Mapping[str, Any]) -> Verdict:
        """One ``/validate`` result: ``{valid: true, claims}`` or ``{valid: false, error}``."""
        if body.get("valid") is True and isinstance(body.get("claims"), Mapping):
            return cls(True, freeze(dict(body["claims"])))
        error = body.get("error")
        return cls(False, None, error if isinstance(error, str) else "malformed")


Check = Callable[[str], Awaitable[Verdict]]
"""Anything that turns a token into a verdict: ``AuthClient.validate`` (remote) or
``LocalVerifier.verify`` (local). The framework helpers take one of these."""


class RevocationSource(Protocol):
    """What ``LocalVerifier`` offers the helpers that close live connections: the current
    revocation state, and a callback after every change to it (from the stream)."""

    def revoked_reason(self, claims: Mapping[str, Any]) -> str | None:
        """The reason (``token_revoked``, ``session_revoked``, ``user_disabled``,
        ``key_revoked``) the local state refuses these verified claims for, or None."""
        ...

    def on_revocation(self, callback: Callable[[], None]) -> Callable[[], None]:
        """Call ``callback`` (on the event loop) after each applied revocation event;
        returns a function that unregisters it."""
        ...
