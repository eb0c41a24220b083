from __future__ import annotations

from cryptography.hazmat.primitives.asymmetric import rsa

from auth_service.crypto.jwk import (
    private_key_from_pem,
    private_key_to_pem,
    public_jwk,
    public_jwk_members,
    thumbprint,
)

# RFC 7638 §3.1: the example key and its SHA-256 thumbprint.
RFC7638_N = (
    "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECP"
    "ebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY"
    "368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0f"
    "M4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw"
)


def test_thumbprint_matches_rfc7638_example() -> None:
    members = {"kty": "RSA", "n": RFC7638_N, "e": "AQAB"}
    assert thumbprint(members) == "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"


def test_thumbprint_ignores_member_order_and_extra_members(
    key_pool: list[rsa.RSAPrivateKey],
) -> None:
    members = public_jwk_members(key_pool[0].public_key())
    shuffled = {"e": members["e"], "n": members["n"], "kty": "RSA", "kid": "ignored"}
    assert thumbprint(shuffled) == thumbprint(members)


def test_public_jwk_has_no_private_members(key_pool: list[rsa.RSAPrivateKey]) -> None:
    jwk = public_jwk(key_pool[0].public_key(), kid="k", alg="RS256")
    assert set(jwk) == {"kty", "n", "e", "kid", "use", "alg"}
    assert jwk["e"] == "AQAB"


def test_pem_round_trip(key_pool: list[rsa.RSAPrivateKey]) -> None:
    key = key_pool[0]
    again = private_key_from_pem(private_key_to_pem(key))
    assert again.private_numbers() == key.private_numbers()
