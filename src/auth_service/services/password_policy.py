"""The password policy (NIST SP 800-63B style: length and a block list, no composition rules).

A password is refused, with a ``WeakPasswordError`` saying why, when it is:

- shorter than 12 characters (Unicode code points);
- longer than 1024 bytes in UTF-8 (or not encodable as UTF-8 at all);
- the account's email address, or the part of it before the ``@`` (case-insensitive);
- one of the 10,000 most common passwords (case-insensitive), shipped as package data in
  ``auth_service/data/common-passwords.tsv`` (``rank<TAB>password``, most common first;
  provenance in ``data/README.md``).

Descriptions never repeat the password.
"""

from __future__ import annotations

import functools
from importlib import resources

from auth_service.errors import WeakPasswordError

MIN_LENGTH = 12
MAX_BYTES = 1024
COMMON_PASSWORDS_FILE = "common-passwords.tsv"


@functools.cache
def common_passwords() -> frozenset[str]:
    """The common-password list, lower-cased; read from the package once per process."""
    text = (
        resources.files("auth_service")
        .joinpath("data")
        .joinpath(COMMON_PASSWORDS_FILE)
        .read_text(encoding="utf-8")
    )
    rows = (line.split("\t", 1) for line in text.splitlines() if line.strip())
    return frozenset(row[1] for row in rows if len(row) == 2)


def check_password(password: str, *, email: str | None) -> None:
    """Raise ``WeakPasswordError`` unless ``password`` meets the policy for ``email``."""
    if len(password) < MIN_LENGTH:
        raise WeakPasswordError(f"The password must be at least {MIN_LENGTH} characters long.")
    try:
        size = len(password.encode("utf-8"))
    except UnicodeEncodeError:
        raise WeakPasswordError("The password must be valid Unicode text.") from None
    if size > MAX_BYTES:
        raise WeakPasswordError(f"The password must be at most {MAX_BYTES} bytes in UTF-8.")
    folded = password.casefold()
    if email:
        address = email.strip().casefold()
        local_part = address.rsplit("@", 1)[0] if "@" in address else address
        if folded in (address, local_part):
            raise WeakPasswordError(
                "The password must not be the email address or the part before its @."
            )
    if password.lower() in common_passwords():
        raise WeakPasswordError(
            "The password is one of the most commonly used passwords; choose another."
        )


__all__ = ["MAX_BYTES", "MIN_LENGTH", "check_password", "common_passwords"]
