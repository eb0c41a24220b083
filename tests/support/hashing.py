"""Swapping the hashing of a built container (the one hasher every service shares)."""

from __future__ import annotations

from auth_service.container import Container
from auth_service.crypto.passwords import PasswordHasher


def divert_hashing(container: Container, to: PasswordHasher) -> None:
    """From now on the container's hasher hashes, verifies and judges hashes through ``to``
    (its queue stays the container's: what the services check for load)."""
    for name in ("hash", "verify", "verify_dummy", "needs_rehash"):
        setattr(container.hasher, name, getattr(to, name))
