"""crypto/jwt.py, the header and the signature: round trips and attack tests that each fail
without their defence, through the validator's ``parse_token`` and ``verify_parsed``. Attack
tokens are forged by hand (see ``tests/support/jwt.py``)."""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import hmac
import json
from functools import partial
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from auth_service.crypto.jwk import public_jwk
from auth_service.crypto.jwt import (
    MAX_TOKEN_LENGTH,
    TokenHeader,
    check_static_claims,
    check_token_type,
    encode_token,
    parse_token,
    verify_parsed,
)
from tests.support.jwt import (
    AUDIENCES,
    ISSUER,
    LEEWAY,
    NOW,
    RS256,
    Keys,
    b64,
    claims,
    forge,
    header,
    parsed_header,
    reason,
    segment,
    verify_token,
)

# --- the happy path ---------------------------------------------------------------------------


def test_encode_token_round_trips(keys: Keys) -> None:
    token = encode_token(claims(), private_key=keys.real, kid=keys.kid)
    raw_header = json.loads(base64.urlsafe_b64decode(token.split(".")[0] + "=="))
    assert raw_header == {"alg": "RS256", "typ": "at+jwt", "kid": keys.kid}
    # the validator's order: parse_token, check_token_type, (kid lookup), verify_parsed,
    # check_static_claims, TimeBounds.check
    parsed = parse_token(token, allowed_algorithms=RS256)
    assert parsed.header == TokenHeader(alg="RS256", kid=keys.kid, typ="at+jwt")
    check_token_type(parsed.header)
    payload = verify_parsed(parsed, keys.public)
    assert payload == claims()
    check_static_claims(payload, issuer=ISSUER, audiences=AUDIENCES).check(NOW, LEEWAY)


def test_encode_token_refuses_a_bad_kid_or_typ(keys: Keys) -> None:
    with pytest.raises(ValueError, match="kid"):
        encode_token(claims(), private_key=keys.real, kid="../k")
    with pytest.raises(ValueError, match="typ"):
        encode_token(claims(), private_key=keys.real, kid=keys.kid, typ="")


def sign_as(alg: str, signing_input: bytes, key: rsa.RSAPrivateKey) -> bytes:
    """A real RSA signature under ``alg`` (RFC 7518 §3.3/§3.5), any other alg signed RS256."""
    digest = {"256": hashes.SHA256(), "384": hashes.SHA384(), "512": hashes.SHA512()}[alg[2:]]
    if alg.startswith("PS"):
        pss = padding.PSS(mgf=padding.MGF1(digest), salt_length=digest.digest_size)
        return key.sign(signing_input, pss, digest)
    if alg.startswith("RS"):
        return key.sign(signing_input, padding.PKCS1v15(), digest)
    return key.sign(signing_input, padding.PKCS1v15(), hashes.SHA256())


@pytest.mark.parametrize("alg", ["RS384", "RS512", "PS256", "PS384", "PS512", "ES256"])
def test_every_alg_but_rs256_is_refused_even_when_a_caller_allows_it(keys: Keys, alg: str) -> None:
    """Settings allow RS256 only: a token really signed by the real key under another RSA alg
    is ``algorithm_not_allowed``, whatever allow-list is passed."""
    signing_input = f"{segment(header(keys, alg=alg))}.{segment(claims())}"
    token = f"{signing_input}.{b64(sign_as(alg, signing_input.encode(), keys.real))}"
    for allowed in (RS256, [alg], [*RS256, alg]):
        assert reason(partial(parsed_header, token, allowed_algorithms=allowed)) == (
            "algorithm_not_allowed"
        )
        assert reason(partial(verify_token, token, keys.public, algorithms=allowed)) == (
            "algorithm_not_allowed"
        )


# --- alg: none and HMAC -------------------------------------------------------------------------


@pytest.mark.parametrize("caller_allows_it", [False, True])
@pytest.mark.parametrize("alg", ["none", "None", "NONE", "nOnE"])
def test_alg_none_is_refused_even_when_a_caller_allows_it(
    keys: Keys, alg: str, caller_allows_it: bool
) -> None:
    token = forge(header(keys, alg=alg), claims())  # "h.p." with an empty signature
    allowed = [*RS256, alg] if caller_allows_it else RS256
    assert reason(lambda: parsed_header(token, allowed_algorithms=allowed)) == (
        "algorithm_not_allowed"
    )
    assert reason(lambda: verify_token(token, keys.public, algorithms=allowed)) == (
        "algorithm_not_allowed"
    )
    with_signature = f"{token}{b64(b'x' * 32)}"
    assert reason(lambda: parsed_header(with_signature, allowed_algorithms=[*RS256, alg])) == (
        "algorithm_not_allowed"
    )


@pytest.mark.parametrize("alg", ["none", "NONE"])
def test_alg_none_without_the_trailing_dot_is_malformed(keys: Keys, alg: str) -> None:
    token = forge(header(keys, alg=alg), claims()).rstrip(".")  # two segments
    assert reason(lambda: parsed_header(token, allowed_algorithms=[*RS256, alg])) == "malformed"
    assert reason(lambda: verify_token(token, keys.public, algorithms=RS256)) == "malformed"


def public_pem(key: rsa.RSAPrivateKey) -> bytes:
    return key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


@pytest.mark.parametrize("caller_allows_it", [False, True])
@pytest.mark.parametrize(
    ("alg", "digest"),
    [("HS256", hashlib.sha256), ("HS384", hashlib.sha384), ("HS512", hashlib.sha512)],
)
def test_hmac_signed_with_the_public_pem_is_refused(
    keys: Keys, alg: str, digest: Any, caller_allows_it: bool
) -> None:
    """Algorithm confusion: the published RSA key used as an HMAC secret."""
    signing_input = f"{segment(header(keys, alg=alg))}.{segment(claims(roles=['admin']))}"
    mac = hmac.new(public_pem(keys.real), signing_input.encode(), digest).digest()
    token = f"{signing_input}.{b64(mac)}"
    allowed = [*RS256, alg] if caller_allows_it else RS256
    assert reason(lambda: parsed_header(token, allowed_algorithms=allowed)) == (
        "algorithm_not_allowed"
    )
    assert reason(lambda: verify_token(token, keys.public, algorithms=allowed)) == (
        "algorithm_not_allowed"
    )


def test_only_forbidden_algorithms_allowed_refuses_everything(keys: Keys) -> None:
    token = encode_token(claims(), private_key=keys.real, kid=keys.kid)
    only_forbidden = ["none", "HS256", "hs512"]
    assert reason(lambda: parsed_header(token, allowed_algorithms=only_forbidden)) == (
        "algorithm_not_allowed"
    )
    assert reason(lambda: verify_token(token, keys.public, algorithms=only_forbidden)) == (
        "algorithm_not_allowed"
    )


@pytest.mark.parametrize("alg", ["ES256", "PS256", "HS256", "none"])
def test_verify_parsed_refuses_any_alg_but_rs256_on_its_own(keys: Keys, alg: str) -> None:
    """Defence in depth: even a ``ParsedToken`` that did not come from ``parse_token`` and
    whose signature is a valid RS256 one is not verified under another alg."""
    parsed = parse_token(
        encode_token(claims(), private_key=keys.real, kid=keys.kid), allowed_algorithms=RS256
    )
    assert verify_parsed(parsed, keys.public) == claims()
    forged = dataclasses.replace(parsed, header=dataclasses.replace(parsed.header, alg=alg))
    assert reason(lambda: verify_parsed(forged, keys.public)) == "algorithm_not_allowed"


@pytest.mark.parametrize("algorithms", ["RS256", ""])
def test_a_str_allow_list_is_a_programming_error(keys: Keys, algorithms: str) -> None:
    token = encode_token(claims(), private_key=keys.real, kid=keys.kid)
    with pytest.raises(TypeError, match="not a str"):
        parsed_header(token, allowed_algorithms=algorithms)
    with pytest.raises(TypeError, match="not a str"):
        verify_token(token, keys.public, algorithms=algorithms)


# --- keys: kid syntax, a foreign signature, key-selecting header members ------------------------


def test_a_token_signed_by_another_key_with_a_real_kid_fails_the_signature(keys: Keys) -> None:
    token = encode_token(claims(roles=["admin"]), private_key=keys.attacker, kid=keys.kid)
    assert parsed_header(token, allowed_algorithms=RS256).kid == keys.kid
    assert verify_token(token, keys.attacker.public_key(), algorithms=RS256)  # well formed
    assert reason(lambda: verify_token(token, keys.public, algorithms=RS256)) == (
        "invalid_signature"
    )


MISSING = object()


@pytest.mark.parametrize(
    "kid",
    [
        "../../etc/passwd",
        "a'b",
        '"quoted"',
        "1; DROP TABLE signing_keys",
        "",
        "a" * 200,
        "a" * 129,
        "kid\n",
        "kid with space",
        "ｋｉｄ",  # noqa: RUF001 - fullwidth letters look like ASCII
        123,
        None,
        ["kid"],
        MISSING,
    ],
)
def test_a_kid_outside_the_thumbprint_alphabet_is_malformed(keys: Keys, kid: object) -> None:
    hdr = header(keys)
    if kid is MISSING:
        del hdr["kid"]
    else:
        hdr["kid"] = kid
    token = forge(hdr, claims(), keys.real)
    assert reason(lambda: parsed_header(token, allowed_algorithms=RS256)) == "malformed"


@pytest.mark.parametrize("kid", ["a" * 128, "A-z_0", "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"])
def test_a_kid_in_the_thumbprint_alphabet_is_read(keys: Keys, kid: str) -> None:
    token = forge(header(keys, kid=kid), claims(), keys.real)
    assert parsed_header(token, allowed_algorithms=RS256).kid == kid


def test_the_header_carries_nothing_that_could_pick_a_key() -> None:
    assert [field.name for field in dataclasses.fields(TokenHeader)] == ["alg", "kid", "typ"]


def key_selecting_members(keys: Keys) -> dict[str, Any]:
    return {
        "jku": "https://attacker.example/jwks.json",
        "x5u": "https://attacker.example/cert.pem",
        "jwk": public_jwk(keys.attacker.public_key(), kid="attacker", alg="RS256"),
        "x5c": [b64(public_pem(keys.attacker))],
    }


@pytest.mark.parametrize("member", ["jku", "x5u", "jwk", "x5c", "all"])
def test_key_selecting_header_members_are_ignored(keys: Keys, member: str) -> None:
    members = key_selecting_members(keys)
    extra = members if member == "all" else {member: members[member]}
    token = forge(header(keys, **extra), claims(roles=["admin"]), keys.attacker)
    assert parsed_header(token, allowed_algorithms=RS256) == TokenHeader(
        alg="RS256", kid=keys.kid, typ="at+jwt"
    )
    assert reason(lambda: verify_token(token, keys.public, algorithms=RS256)) == (
        "invalid_signature"
    )


def test_an_embedded_jwk_does_not_stand_in_for_a_missing_kid(keys: Keys) -> None:
    hdr = {
        "alg": "RS256",
        "typ": "at+jwt",
        "jwk": public_jwk(keys.real.public_key(), kid=keys.kid, alg="RS256"),
    }
    token = forge(hdr, claims(), keys.attacker)
    assert reason(lambda: parsed_header(token, allowed_algorithms=RS256)) == "malformed"


# --- tampering and stripping --------------------------------------------------------------------


def test_a_tampered_payload_fails_the_signature(keys: Keys) -> None:
    h, _, s = encode_token(claims(), private_key=keys.real, kid=keys.kid).split(".")
    token = f"{h}.{segment(claims(roles=['admin']))}.{s}"
    assert parsed_header(token, allowed_algorithms=RS256).kid == keys.kid
    assert reason(lambda: verify_token(token, keys.public, algorithms=RS256)) == (
        "invalid_signature"
    )


def test_a_tampered_header_fails_the_signature(keys: Keys) -> None:
    _, p, s = encode_token(claims(), private_key=keys.real, kid=keys.kid, typ="JWT").split(".")
    token = f"{segment(header(keys))}.{p}.{s}"  # typ rewritten to at+jwt
    assert parsed_header(token, allowed_algorithms=RS256).typ == "at+jwt"
    assert reason(lambda: verify_token(token, keys.public, algorithms=RS256)) == (
        "invalid_signature"
    )


def test_a_stripped_signature_is_refused(keys: Keys) -> None:
    h, p, _ = encode_token(claims(), private_key=keys.real, kid=keys.kid).split(".")
    empty_signature, two_segments = f"{h}.{p}.", f"{h}.{p}"
    # An empty signature segment is refused as malformed before any RSA work.
    assert reason(lambda: parsed_header(empty_signature, allowed_algorithms=RS256)) == "malformed"
    assert reason(lambda: verify_token(empty_signature, keys.public, algorithms=RS256)) == (
        "malformed"
    )
    assert reason(lambda: parsed_header(two_segments, allowed_algorithms=RS256)) == "malformed"
    assert reason(lambda: verify_token(two_segments, keys.public, algorithms=RS256)) == (
        "malformed"
    )


def test_the_payload_is_not_parsed_before_the_signature_holds(keys: Keys) -> None:
    h, _, s = encode_token(claims(), private_key=keys.real, kid=keys.kid).split(".")
    for payload in (b"not json", b"[1, 2]", b'{"a": ' * 800):
        token = f"{h}.{segment(payload)}.{s}"
        assert reason(partial(verify_token, token, keys.public, algorithms=RS256)) == (
            "invalid_signature"
        )


def test_a_signature_of_the_wrong_length_is_invalid(keys: Keys) -> None:
    h, p, _ = encode_token(claims(), private_key=keys.real, kid=keys.kid).split(".")
    for signature in (b"\x00", b"\x01" * 255, b"\xff" * 257, b"\xff" * 256):
        token = f"{h}.{p}.{segment(signature)}"
        assert reason(partial(verify_token, token, keys.public, algorithms=RS256)) == (
            "invalid_signature"
        )


def test_non_canonical_or_padded_base64url_is_malformed(keys: Keys) -> None:
    token = encode_token(claims(), private_key=keys.real, kid=keys.kid)
    h, p, s = token.split(".")
    assert len(base64.urlsafe_b64decode(s + "==")) % 3 == 1  # last character carries 4 spare bits
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    same_bytes = s[:-1] + alphabet[alphabet.index(s[-1]) + 1]
    assert base64.urlsafe_b64decode(same_bytes + "==") == base64.urlsafe_b64decode(s + "==")
    for bad in (f"{h}.{p}.{same_bytes}", f"{h}.{p}.{s}==", f"{h}.{p}.{s}.", f"{h}.{p}!.{s}"):
        assert reason(partial(parsed_header, bad, allowed_algorithms=RS256)) == "malformed"
        assert reason(partial(verify_token, bad, keys.public, algorithms=RS256)) == ("malformed")


@pytest.mark.parametrize(
    "raw_header",
    [
        b"[]",
        b'"RS256"',
        b"\xff\xfe{}",
        b"{",
        b"",
        b"\xef\xbb\xbf{}",
        b'{"alg": "none", "alg": "RS256", "kid": "k"}',  # duplicate members: refused, not last-wins
        b'{"alg": "RS256", "kid": "k", "crit": ["exp"], "exp": 1}',
        b'{"alg": "RS256", "kid": "k", "crit": ["b64"], "b64": false}',
        b'{"alg": "RS256", "kid": "k", "typ": 1}',
        b'{"alg": ["RS256"], "kid": "k"}',
        b'{"alg": "", "kid": "k"}',
        b'{"kid": "k"}',
        b"[" * 5000 + b"]" * 5000,
    ],
)
def test_a_header_that_is_not_a_plain_json_object_is_malformed(
    keys: Keys, raw_header: bytes
) -> None:
    token = forge(raw_header, claims(), keys.real)
    assert reason(lambda: parsed_header(token, allowed_algorithms=RS256)) == "malformed"


def test_a_signed_payload_that_is_not_an_object_is_malformed(keys: Keys) -> None:
    for payload in (b"[1, 2]", b'"claims"', b"\xff", b"{"):
        token = forge(header(keys), payload, keys.real)
        assert parsed_header(token, allowed_algorithms=RS256).kid == keys.kid
        assert reason(partial(verify_token, token, keys.public, algorithms=RS256)) == ("malformed")


@pytest.mark.parametrize("token", [None, 42, b"a.b.c", ["a", "b", "c"], "", "a.b", "a.b.c.d.e"])
def test_non_tokens_are_malformed(keys: Keys, token: Any) -> None:
    assert reason(lambda: parsed_header(token, allowed_algorithms=RS256)) == "malformed"
    assert reason(lambda: verify_token(token, keys.public, algorithms=RS256)) == "malformed"


# --- size ----------------------------------------------------------------------------------------


def test_a_1mb_token_that_is_otherwise_valid_is_malformed(keys: Keys) -> None:
    token = encode_token(claims(pad="a" * 1_000_000), private_key=keys.real, kid=keys.kid)
    assert len(token) > 1_000_000
    assert reason(lambda: parsed_header(token, allowed_algorithms=RS256)) == "malformed"
    assert reason(lambda: verify_token(token, keys.public, algorithms=RS256)) == "malformed"


def token_of_length(keys: Keys, length: int) -> str:
    head = segment(header(keys))
    for signature_length in (4, 3, 2):
        filler = length - len(head) - 2 - signature_length
        if filler % 4 != 1:  # "A" * n is canonical base64url unless n % 4 == 1
            return f"{head}.{'A' * filler}.{'A' * signature_length}"
    raise AssertionError("unreachable")


def test_the_length_limit_is_inclusive(keys: Keys) -> None:
    at_limit = token_of_length(keys, MAX_TOKEN_LENGTH)
    over_limit = token_of_length(keys, MAX_TOKEN_LENGTH + 1)
    assert (len(at_limit), len(over_limit)) == (MAX_TOKEN_LENGTH, MAX_TOKEN_LENGTH + 1)
    assert parsed_header(at_limit, allowed_algorithms=RS256).kid == keys.kid
    assert reason(lambda: parsed_header(over_limit, allowed_algorithms=RS256)) == "malformed"


# --- typ -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("typ", ["at+jwt", "AT+JWT", "application/at+jwt", "JWT", "", None])
def test_typ_is_returned_as_given(keys: Keys, typ: str | None) -> None:
    hdr = header(keys, typ=typ)
    if typ is None:
        del hdr["typ"]
    token = forge(hdr, claims(), keys.real)
    assert parsed_header(token, allowed_algorithms=RS256).typ == typ


@pytest.mark.parametrize("typ", ["at+jwt", "AT+JWT", "application/at+jwt", "Application/AT+JWT"])
def test_access_token_types_are_accepted(typ: str) -> None:
    check_token_type(TokenHeader(alg="RS256", kid="k", typ=typ))


@pytest.mark.parametrize(
    "typ", ["JWT", "jwt", None, "", "at+jwt ", "application/jwt", "x-application/at+jwt", "rt+jwt"]
)
def test_other_token_types_are_refused(typ: str | None) -> None:
    assert reason(lambda: check_token_type(TokenHeader(alg="RS256", kid="k", typ=typ))) == (
        "wrong_token_type"
    )
