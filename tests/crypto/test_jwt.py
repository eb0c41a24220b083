"""crypto/jwt.py: round trips, boundaries, and attack tests that each fail without their defence.

Attack tokens are forged by hand (base64url + ``cryptography``/``hmac``) so the header and the
signature are exactly what an attacker would send, whatever pyjwt is willing to produce.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import hmac
import json
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta, timezone
from functools import partial
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from hypothesis import given, settings
from hypothesis import strategies as st

from auth_service.crypto.jwk import generate_rsa_key, public_jwk, public_jwk_members, thumbprint
from auth_service.crypto.jwt import (
    DEFAULT_REQUIRED_CLAIMS,
    MAX_TOKEN_LENGTH,
    TokenHeader,
    TokenRejected,
    check_claims,
    check_token_type,
    encode_token,
    read_header,
    verify_signature,
)

ISSUER = "https://auth.example.com"
AUDIENCES = ("orders-api", "billing-api")
NOW = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)
T0 = int(NOW.timestamp())
LEEWAY = timedelta(seconds=10)
SECOND = timedelta(seconds=1)
RS256 = ["RS256"]
FUZZ = settings(database=None, max_examples=200)


@dataclasses.dataclass(frozen=True)
class Keys:
    real: rsa.RSAPrivateKey
    attacker: rsa.RSAPrivateKey

    @property
    def kid(self) -> str:
        return thumbprint(public_jwk_members(self.real.public_key()))

    @property
    def public(self) -> rsa.RSAPublicKey:
        return self.real.public_key()


@pytest.fixture(scope="module")
def keys() -> Keys:
    return Keys(real=generate_rsa_key(2048), attacker=generate_rsa_key(2048))


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def segment(part: Mapping[str, Any] | bytes) -> str:
    return b64(part if isinstance(part, bytes) else json.dumps(part).encode())


def forge(
    header: Mapping[str, Any] | bytes,
    payload: Mapping[str, Any] | bytes,
    key: rsa.RSAPrivateKey | None = None,
) -> str:
    """A compact JWS signed RS256 with ``key`` by hand (an empty signature without one)."""
    signing_input = f"{segment(header)}.{segment(payload)}"
    if key is None:
        return f"{signing_input}."
    signature = key.sign(signing_input.encode(), padding.PKCS1v15(), hashes.SHA256())
    return f"{signing_input}.{b64(signature)}"


def claims(**overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "iss": ISSUER,
        "sub": "user-1",
        "aud": "orders-api",
        "exp": T0 + 900,
        "iat": T0,
        "nbf": T0,
        "jti": "jti-1",
        "sid": "session-1",
        "roles": ["user"],
        "amr": ["pwd"],
    }
    base.update(overrides)
    return base


def header(keys: Keys, **overrides: Any) -> dict[str, Any]:
    return {"alg": "RS256", "typ": "at+jwt", "kid": keys.kid, **overrides}


def reason(call: Callable[[], object]) -> str:
    with pytest.raises(TokenRejected) as info:
        call()
    return info.value.reason


def check(
    payload: Mapping[str, Any], *, now: datetime = NOW, leeway: timedelta = LEEWAY, **kwargs: Any
) -> None:
    check_claims(payload, issuer=ISSUER, audiences=AUDIENCES, now=now, leeway=leeway, **kwargs)


# --- the happy path ---------------------------------------------------------------------------


def test_encode_token_round_trips(keys: Keys) -> None:
    token = encode_token(claims(), private_key=keys.real, kid=keys.kid)
    raw_header = json.loads(base64.urlsafe_b64decode(token.split(".")[0] + "=="))
    assert raw_header == {"alg": "RS256", "typ": "at+jwt", "kid": keys.kid}
    parsed = read_header(token, allowed_algorithms=RS256)
    assert parsed == TokenHeader(alg="RS256", kid=keys.kid, typ="at+jwt")
    check_token_type(parsed)
    payload = verify_signature(token, keys.public, algorithms=RS256)
    assert payload == claims()
    check(payload)


def test_encode_token_refuses_what_verification_would_refuse(keys: Keys) -> None:
    for algorithm in ("HS256", "none", "ES256"):
        with pytest.raises(ValueError, match="RSA algorithm"):
            encode_token(claims(), private_key=keys.real, kid=keys.kid, algorithm=algorithm)
    with pytest.raises(ValueError, match="kid"):
        encode_token(claims(), private_key=keys.real, kid="../k")


def test_encode_token_with_ps256_verifies_only_when_allowed(keys: Keys) -> None:
    token = encode_token(claims(), private_key=keys.real, kid=keys.kid, algorithm="PS256")
    assert verify_signature(token, keys.public, algorithms=["PS256"]) == claims()
    assert reason(lambda: read_header(token, allowed_algorithms=RS256)) == "algorithm_not_allowed"
    assert reason(lambda: verify_signature(token, keys.public, algorithms=RS256)) == (
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
    assert reason(lambda: read_header(token, allowed_algorithms=allowed)) == (
        "algorithm_not_allowed"
    )
    assert reason(lambda: verify_signature(token, keys.public, algorithms=allowed)) == (
        "algorithm_not_allowed"
    )
    with_signature = f"{token}{b64(b'x' * 32)}"
    assert reason(lambda: read_header(with_signature, allowed_algorithms=[*RS256, alg])) == (
        "algorithm_not_allowed"
    )


@pytest.mark.parametrize("alg", ["none", "NONE"])
def test_alg_none_without_the_trailing_dot_is_malformed(keys: Keys, alg: str) -> None:
    token = forge(header(keys, alg=alg), claims()).rstrip(".")  # two segments
    assert reason(lambda: read_header(token, allowed_algorithms=[*RS256, alg])) == "malformed"
    assert reason(lambda: verify_signature(token, keys.public, algorithms=RS256)) == "malformed"


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
    assert reason(lambda: read_header(token, allowed_algorithms=allowed)) == (
        "algorithm_not_allowed"
    )
    assert reason(lambda: verify_signature(token, keys.public, algorithms=allowed)) == (
        "algorithm_not_allowed"
    )


def test_only_forbidden_algorithms_allowed_refuses_everything(keys: Keys) -> None:
    token = encode_token(claims(), private_key=keys.real, kid=keys.kid)
    only_forbidden = ["none", "HS256", "hs512"]
    assert reason(lambda: read_header(token, allowed_algorithms=only_forbidden)) == (
        "algorithm_not_allowed"
    )
    assert reason(lambda: verify_signature(token, keys.public, algorithms=only_forbidden)) == (
        "algorithm_not_allowed"
    )


def test_an_allowed_alg_that_does_not_fit_an_rsa_key_is_refused(keys: Keys) -> None:
    token = forge(header(keys, alg="ES256"), claims(), keys.attacker)
    allowed = ["RS256", "ES256"]
    assert read_header(token, allowed_algorithms=allowed).alg == "ES256"
    # pyjwt raises InvalidKeyError here, which is not an InvalidTokenError.
    assert reason(lambda: verify_signature(token, keys.public, algorithms=allowed)) == (
        "algorithm_not_allowed"
    )


@pytest.mark.parametrize("algorithms", ["RS256", ""])
def test_a_str_allow_list_is_a_programming_error(keys: Keys, algorithms: str) -> None:
    token = encode_token(claims(), private_key=keys.real, kid=keys.kid)
    with pytest.raises(TypeError, match="not a str"):
        read_header(token, allowed_algorithms=algorithms)
    with pytest.raises(TypeError, match="not a str"):
        verify_signature(token, keys.public, algorithms=algorithms)


# --- keys: kid syntax, a foreign signature, key-selecting header members ------------------------


def test_a_token_signed_by_another_key_with_a_real_kid_fails_the_signature(keys: Keys) -> None:
    token = encode_token(claims(roles=["admin"]), private_key=keys.attacker, kid=keys.kid)
    assert read_header(token, allowed_algorithms=RS256).kid == keys.kid
    assert verify_signature(token, keys.attacker.public_key(), algorithms=RS256)  # well formed
    assert reason(lambda: verify_signature(token, keys.public, algorithms=RS256)) == (
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
    assert reason(lambda: read_header(token, allowed_algorithms=RS256)) == "malformed"


@pytest.mark.parametrize("kid", ["a" * 128, "A-z_0", "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"])
def test_a_kid_in_the_thumbprint_alphabet_is_read(keys: Keys, kid: str) -> None:
    token = forge(header(keys, kid=kid), claims(), keys.real)
    assert read_header(token, allowed_algorithms=RS256).kid == kid


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
    assert read_header(token, allowed_algorithms=RS256) == TokenHeader(
        alg="RS256", kid=keys.kid, typ="at+jwt"
    )
    assert reason(lambda: verify_signature(token, keys.public, algorithms=RS256)) == (
        "invalid_signature"
    )


def test_an_embedded_jwk_does_not_stand_in_for_a_missing_kid(keys: Keys) -> None:
    hdr = {
        "alg": "RS256",
        "typ": "at+jwt",
        "jwk": public_jwk(keys.real.public_key(), kid=keys.kid, alg="RS256"),
    }
    token = forge(hdr, claims(), keys.attacker)
    assert reason(lambda: read_header(token, allowed_algorithms=RS256)) == "malformed"


# --- tampering and stripping --------------------------------------------------------------------


def test_a_tampered_payload_fails_the_signature(keys: Keys) -> None:
    h, _, s = encode_token(claims(), private_key=keys.real, kid=keys.kid).split(".")
    token = f"{h}.{segment(claims(roles=['admin']))}.{s}"
    assert read_header(token, allowed_algorithms=RS256).kid == keys.kid
    assert reason(lambda: verify_signature(token, keys.public, algorithms=RS256)) == (
        "invalid_signature"
    )


def test_a_tampered_header_fails_the_signature(keys: Keys) -> None:
    _, p, s = encode_token(claims(), private_key=keys.real, kid=keys.kid, typ="JWT").split(".")
    token = f"{segment(header(keys))}.{p}.{s}"  # typ rewritten to at+jwt
    assert read_header(token, allowed_algorithms=RS256).typ == "at+jwt"
    assert reason(lambda: verify_signature(token, keys.public, algorithms=RS256)) == (
        "invalid_signature"
    )


def test_a_stripped_signature_is_refused(keys: Keys) -> None:
    h, p, _ = encode_token(claims(), private_key=keys.real, kid=keys.kid).split(".")
    empty_signature, two_segments = f"{h}.{p}.", f"{h}.{p}"
    # read_header demands a non-empty signature; pyjwt verifies the empty one and it fails.
    assert reason(lambda: read_header(empty_signature, allowed_algorithms=RS256)) == "malformed"
    assert reason(lambda: verify_signature(empty_signature, keys.public, algorithms=RS256)) == (
        "invalid_signature"
    )
    assert reason(lambda: read_header(two_segments, allowed_algorithms=RS256)) == "malformed"
    assert reason(lambda: verify_signature(two_segments, keys.public, algorithms=RS256)) == (
        "malformed"
    )


def test_non_canonical_or_padded_base64url_is_malformed(keys: Keys) -> None:
    token = encode_token(claims(), private_key=keys.real, kid=keys.kid)
    h, p, s = token.split(".")
    assert len(base64.urlsafe_b64decode(s + "==")) % 3 == 1  # last character carries 4 spare bits
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    same_bytes = s[:-1] + alphabet[alphabet.index(s[-1]) + 1]
    assert base64.urlsafe_b64decode(same_bytes + "==") == base64.urlsafe_b64decode(s + "==")
    for bad in (f"{h}.{p}.{same_bytes}", f"{h}.{p}.{s}==", f"{h}.{p}.{s}.", f"{h}.{p}!.{s}"):
        assert reason(partial(read_header, bad, allowed_algorithms=RS256)) == "malformed"
        assert reason(partial(verify_signature, bad, keys.public, algorithms=RS256)) == (
            "malformed"
        )


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
    assert reason(lambda: read_header(token, allowed_algorithms=RS256)) == "malformed"


def test_a_signed_payload_that_is_not_an_object_is_malformed(keys: Keys) -> None:
    for payload in (b"[1, 2]", b'"claims"', b"\xff", b"{"):
        token = forge(header(keys), payload, keys.real)
        assert read_header(token, allowed_algorithms=RS256).kid == keys.kid
        assert reason(partial(verify_signature, token, keys.public, algorithms=RS256)) == (
            "malformed"
        )


@pytest.mark.parametrize("token", [None, 42, b"a.b.c", ["a", "b", "c"], "", "a.b", "a.b.c.d.e"])
def test_non_tokens_are_malformed(keys: Keys, token: Any) -> None:
    assert reason(lambda: read_header(token, allowed_algorithms=RS256)) == "malformed"
    assert reason(lambda: verify_signature(token, keys.public, algorithms=RS256)) == "malformed"


# --- size ----------------------------------------------------------------------------------------


def test_a_1mb_token_that_is_otherwise_valid_is_malformed(keys: Keys) -> None:
    token = encode_token(claims(pad="a" * 1_000_000), private_key=keys.real, kid=keys.kid)
    assert len(token) > 1_000_000
    assert reason(lambda: read_header(token, allowed_algorithms=RS256)) == "malformed"
    assert reason(lambda: verify_signature(token, keys.public, algorithms=RS256)) == "malformed"


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
    assert read_header(at_limit, allowed_algorithms=RS256).kid == keys.kid
    assert reason(lambda: read_header(over_limit, allowed_algorithms=RS256)) == "malformed"


# --- typ -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("typ", ["at+jwt", "AT+JWT", "application/at+jwt", "JWT", "", None])
def test_typ_is_returned_as_given(keys: Keys, typ: str | None) -> None:
    hdr = header(keys, typ=typ)
    if typ is None:
        del hdr["typ"]
    token = forge(hdr, claims(), keys.real)
    assert read_header(token, allowed_algorithms=RS256).typ == typ


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


# --- claims: time --------------------------------------------------------------------------------


def test_valid_claims_pass() -> None:
    check(claims())


def test_exp_boundary_is_exp_plus_leeway() -> None:
    exp = NOW + timedelta(seconds=900)
    check(claims(), now=exp)
    check(claims(), now=exp + LEEWAY - SECOND)
    check(claims(), now=exp + LEEWAY - timedelta(microseconds=1))
    assert reason(lambda: check(claims(), now=exp + LEEWAY)) == "expired"
    assert reason(lambda: check(claims(), now=exp + LEEWAY + SECOND)) == "expired"


def test_without_leeway_a_token_expires_at_exp() -> None:
    exp = NOW + timedelta(seconds=900)
    check(claims(), now=exp - SECOND, leeway=timedelta(0))
    assert reason(lambda: check(claims(), now=exp, leeway=timedelta(0))) == "expired"


def test_nbf_boundary_is_nbf_minus_leeway() -> None:
    nbf = NOW + timedelta(seconds=60)
    future = claims(nbf=T0 + 60)  # iat stays at NOW, so only nbf is in play
    check(future, now=nbf - LEEWAY)
    assert reason(lambda: check(future, now=nbf - LEEWAY - SECOND)) == "not_yet_valid"


def test_iat_in_the_future_beyond_leeway_is_not_yet_valid() -> None:
    iat = NOW + timedelta(seconds=60)
    issued_later = claims(iat=T0 + 60, nbf=T0 - 60)  # nbf long past, so only iat is in play
    check(issued_later, now=iat - LEEWAY)
    assert reason(lambda: check(issued_later, now=iat - LEEWAY - SECOND)) == "not_yet_valid"


def test_fractional_numeric_dates_are_compared_exactly() -> None:
    exp = T0 + 900.5
    check(claims(exp=exp), now=NOW + timedelta(seconds=910.4))
    assert reason(lambda: check(claims(exp=exp), now=NOW + timedelta(seconds=910.5))) == "expired"


def test_now_in_another_zone_is_the_same_instant() -> None:
    plus_two = timezone(timedelta(hours=2))
    exp = (NOW + timedelta(seconds=900) + LEEWAY).astimezone(plus_two)
    check(claims(), now=exp - SECOND)
    assert reason(lambda: check(claims(), now=exp)) == "expired"


def test_naive_now_or_negative_leeway_is_a_programming_error() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        check(claims(), now=NOW.replace(tzinfo=None))
    with pytest.raises(ValueError, match="leeway"):
        check(claims(), leeway=-SECOND)


@pytest.mark.parametrize("name", ["exp", "iat", "nbf"])
@pytest.mark.parametrize(
    "value", [True, False, "1767603600", None, float("nan"), float("inf"), -1, 10**30, [T0]]
)
def test_a_numeric_date_that_is_not_a_sane_number_is_malformed(name: str, value: Any) -> None:
    assert reason(lambda: check(claims(**{name: value}))) == "malformed"


def test_a_signed_nan_exp_is_malformed_not_a_crash(keys: Keys) -> None:
    token = forge(header(keys), json.dumps(claims(exp=float("nan"))).encode(), keys.real)
    payload = verify_signature(token, keys.public, algorithms=RS256)  # pyjwt accepts NaN
    assert reason(lambda: check(payload)) == "malformed"


# --- claims: presence and types -----------------------------------------------------------------


@pytest.mark.parametrize("name", DEFAULT_REQUIRED_CLAIMS)
def test_a_missing_or_null_required_claim_is_malformed(name: str) -> None:
    missing = claims()
    del missing[name]
    assert reason(lambda: check(missing)) == "malformed"
    assert reason(lambda: check(claims(**{name: None}))) == "malformed"


def test_extra_required_claims_are_enforced() -> None:
    service_token = claims(client_id="c1")
    del service_token["sid"]
    check(service_token, required=(*DEFAULT_REQUIRED_CLAIMS, "client_id"))
    assert reason(lambda: check(service_token, required=(*DEFAULT_REQUIRED_CLAIMS, "sid"))) == (
        "malformed"
    )


@pytest.mark.parametrize(
    ("name", "value"),
    [("sub", ""), ("sub", 5), ("sub", ["user-1"]), ("jti", ""), ("jti", 7), ("iss", 1)],
)
def test_sub_jti_iss_must_be_non_empty_strings(name: str, value: Any) -> None:
    assert reason(lambda: check(claims(**{name: value}))) == "malformed"


# --- claims: issuer and audience ----------------------------------------------------------------


@pytest.mark.parametrize(
    "iss",
    [
        "https://evil.example.com",
        ISSUER[:-1],  # a prefix of the real issuer
        ISSUER + ".evil.net",  # the real issuer as a prefix
        ISSUER + "/",
        "https://evil.example/" + ISSUER,  # the real issuer as a suffix
        ISSUER.upper(),
    ],
)
def test_any_issuer_but_the_exact_one_is_refused(iss: str) -> None:
    assert reason(lambda: check(claims(iss=iss))) == "invalid_issuer"


def test_an_issuer_in_a_list_is_malformed() -> None:
    assert reason(lambda: check(claims(iss=[ISSUER]))) == "malformed"


@pytest.mark.parametrize("aud", ["other-api", "orders", "orders-api ", "ORDERS-API", [], ["other"]])
def test_an_audience_not_configured_is_refused(aud: Any) -> None:
    assert reason(lambda: check(claims(aud=aud))) == "invalid_audience"


@pytest.mark.parametrize("aud", [["other-api", "billing-api"], ["orders-api"], "billing-api"])
def test_one_matching_audience_is_enough(aud: Any) -> None:
    check(claims(aud=aud))


@pytest.mark.parametrize(
    "aud", [[1, 2], ["orders-api", 1], {"orders-api": True}, 7, [["orders-api"]]]
)
def test_an_audience_of_the_wrong_shape_is_malformed(aud: Any) -> None:
    assert reason(lambda: check(claims(aud=aud))) == "malformed"


def test_an_absent_audience_that_is_not_required_is_still_refused() -> None:
    no_aud = claims()
    del no_aud["aud"]
    assert reason(lambda: check(no_aud, required=("iss", "sub"))) == "invalid_audience"


def test_a_str_audiences_setting_is_a_programming_error() -> None:
    with pytest.raises(ValueError, match="audiences"):
        check_claims(claims(), issuer=ISSUER, audiences="orders-api", now=NOW, leeway=LEEWAY)


# --- fuzzing: nothing but TokenRejected comes out -----------------------------------------------

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=4), children, max_size=3)
    ),
    max_leaves=8,
)
HEADER_VALUES = JSON | st.sampled_from(["RS256", "none", "HS256", "at+jwt", "NzbLsXh8uDCcd"])
HEADERS = st.dictionaries(
    st.sampled_from(["alg", "kid", "typ", "crit", "b64", "jku", "jwk", "x5c"]),
    HEADER_VALUES,
    max_size=6,
)
STRUCTURED = st.builds(
    lambda h, p, s: f"{segment(h)}.{b64(p)}.{b64(s)}", HEADERS, st.binary(max_size=64), st.binary()
)
TOKENS = st.text() | st.binary().map(lambda raw: raw.decode("latin-1")) | STRUCTURED


def outcome(call: Callable[[], object]) -> object:
    try:
        return call()
    except TokenRejected as exc:
        return exc.reason


@FUZZ
@given(token=TOKENS)
def test_read_header_raises_nothing_but_token_rejected(token: str) -> None:
    result = outcome(lambda: read_header(token, allowed_algorithms=RS256))
    assert result in {"malformed", "algorithm_not_allowed"} or (
        isinstance(result, TokenHeader) and result.alg == "RS256"
    )


@FUZZ
@given(token=TOKENS)
def test_verify_signature_raises_nothing_but_token_rejected(keys: Keys, token: str) -> None:
    with pytest.raises(TokenRejected):
        verify_signature(token, keys.public, algorithms=["RS256", "PS256", "ES256"])


CLAIM_VALUES = JSON | st.sampled_from([ISSUER, "orders-api", T0, T0 + 900.5, ["orders-api"]])


@FUZZ
@given(payload=st.dictionaries(st.sampled_from([*DEFAULT_REQUIRED_CLAIMS, "sid"]), CLAIM_VALUES))
def test_check_claims_raises_nothing_but_token_rejected(payload: dict[str, Any]) -> None:
    assert outcome(lambda: check(payload)) in {
        None,
        "malformed",
        "invalid_issuer",
        "invalid_audience",
        "expired",
        "not_yet_valid",
    }
