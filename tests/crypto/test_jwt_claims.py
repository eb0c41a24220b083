"""crypto/jwt.py, the claims: time boundaries, presence, issuer and audience; and fuzzing."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import timedelta, timezone
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from auth_service.crypto.jwt import (
    DEFAULT_REQUIRED_CLAIMS,
    TokenHeader,
    TokenRejected,
    check_static_claims,
)
from tests.support.jwt import (
    FUZZ,
    ISSUER,
    LEEWAY,
    NOW,
    RS256,
    SECOND,
    T0,
    Keys,
    b64,
    check,
    claims,
    forge,
    header,
    parsed_header,
    reason,
    segment,
    verify_token,
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
    payload = verify_token(token, keys.public, algorithms=RS256)  # json.loads accepts NaN
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
        check_static_claims(claims(), issuer=ISSUER, audiences="orders-api")


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
def test_parse_token_raises_nothing_but_token_rejected(token: str) -> None:
    result = outcome(lambda: parsed_header(token, allowed_algorithms=RS256))
    assert result in {"malformed", "algorithm_not_allowed"} or (
        isinstance(result, TokenHeader) and result.alg == "RS256"
    )


@FUZZ
@given(token=TOKENS)
def test_verify_parsed_raises_nothing_but_token_rejected(keys: Keys, token: str) -> None:
    with pytest.raises(TokenRejected):
        verify_token(token, keys.public, algorithms=["RS256", "PS256", "ES256"])


CLAIM_VALUES = JSON | st.sampled_from([ISSUER, "orders-api", T0, T0 + 900.5, ["orders-api"]])


@FUZZ
@given(payload=st.dictionaries(st.sampled_from([*DEFAULT_REQUIRED_CLAIMS, "sid"]), CLAIM_VALUES))
def test_static_and_time_checks_raise_nothing_but_token_rejected(payload: dict[str, Any]) -> None:
    assert outcome(lambda: check(payload)) in {
        None,
        "malformed",
        "invalid_issuer",
        "invalid_audience",
        "expired",
        "not_yet_valid",
    }
