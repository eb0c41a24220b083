from __future__ import annotations

import pytest

from auth_service.crypto.envelope import Envelope, EnvelopeError

SECRET = "s" * 10 + "a-strong-enough-secret-for-unit-tests-0123456789"


def test_seal_and_open_round_trip() -> None:
    envelope = Envelope(SECRET, purpose="signing-key")
    sealed = envelope.seal(b"private bytes", associated_data="kid-1")
    assert b"private bytes" not in sealed
    assert envelope.open(sealed, associated_data="kid-1") == b"private bytes"


def test_each_seal_uses_a_fresh_nonce() -> None:
    envelope = Envelope(SECRET, purpose="signing-key")
    assert envelope.seal(b"x", associated_data="k") != envelope.seal(b"x", associated_data="k")


@pytest.mark.parametrize(
    ("secret", "purpose", "associated_data"),
    [
        (SECRET + "x", "signing-key", "kid-1"),  # wrong secret
        (SECRET, "totp", "kid-1"),  # sealed for another purpose
        (SECRET, "signing-key", "kid-2"),  # moved to another row
    ],
)
def test_open_refuses_any_other_binding(secret: str, purpose: str, associated_data: str) -> None:
    sealed = Envelope(SECRET, purpose="signing-key").seal(b"data", associated_data="kid-1")
    with pytest.raises(EnvelopeError):
        Envelope(secret, purpose=purpose).open(sealed, associated_data=associated_data)


def test_tampered_or_truncated_values_do_not_open() -> None:
    envelope = Envelope(SECRET, purpose="p")
    sealed = bytearray(envelope.seal(b"data", associated_data="a"))
    sealed[-1] ^= 1
    with pytest.raises(EnvelopeError):
        envelope.open(bytes(sealed), associated_data="a")
    with pytest.raises(EnvelopeError):
        envelope.open(b"\x01short", associated_data="a")
    with pytest.raises(EnvelopeError):
        envelope.open(b"\x02" + bytes(sealed[1:]), associated_data="a")


def test_an_empty_secret_is_refused() -> None:
    with pytest.raises(ValueError, match="secret"):
        Envelope("", purpose="p")
