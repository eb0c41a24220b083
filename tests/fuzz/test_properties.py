"""Hypothesis properties of three parsers an attacker feeds directly: the access-token parser
(``crypto/jwt.py``) and its validation entry (``TokenValidator.validate``), the email
normaliser (``services/accounts.normalize_email``) and the CSRF check of browser mode
(``crypto/csrf.CsrfBinding``)."""

from __future__ import annotations

import base64
import json
import string
import unicodedata
from typing import Any

import hypothesis
import pytest
from auth_service_client.types import REASONS as CONTRACT_REASONS
from hypothesis import HealthCheck, assume, given
from hypothesis import strategies as st

from auth_service.crypto.csrf import CsrfBinding
from auth_service.crypto.jwt import MAX_TOKEN_LENGTH, TokenRejected, parse_token
from auth_service.errors import InvalidRequestError
from auth_service.services.accounts import normalize_email
from auth_service.services.validation import Verdict
from tests.fuzz.conftest import Fuzzed
from tests.support.backends import TEST_SECRET

SETTINGS = hypothesis.settings(
    max_examples=200,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=list(HealthCheck),
)
# Only RS256 is ever allowed; the allow-list a caller passes cannot widen it.
ALLOWED = ("RS256",)
REASONS = frozenset(CONTRACT_REASONS)  # the verdict reasons of API.md, as the client lists them
# Every code point, lone surrogates included (what a JSON string can carry).
ANY_TEXT = st.text(st.characters(codec=None, exclude_categories=()), max_size=300)


def b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def segment(value: Any) -> str:
    return b64(json.dumps(value, separators=(",", ":")).encode())


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=10,
)
HEADERS = st.fixed_dictionaries(
    {},
    optional={
        "alg": st.sampled_from(["RS256", "rs256", "none", "None", "HS256", "ES256", "PS256", ""])
        | JSON_VALUES,
        "kid": st.text(string.ascii_letters + string.digits + "-_.", max_size=130) | JSON_VALUES,
        "typ": st.sampled_from(["at+jwt", "JWT", "application/at+jwt"]) | JSON_VALUES,
        "crit": JSON_VALUES,
        "jku": st.just("https://attacker.example/jwks"),
        "jwk": JSON_VALUES,
    },
)
NEAR_JWTS = st.builds(
    lambda header, payload, signature: f"{segment(header)}.{segment(payload)}.{b64(signature)}",
    HEADERS | JSON_VALUES,
    JSON_VALUES,
    st.binary(max_size=300),
)


# -- (a) the token parser --------------------------------------------------------------


@SETTINGS
@given(token=ANY_TEXT | NEAR_JWTS | st.binary().map(lambda raw: raw.decode("latin-1")))
def test_the_parser_raises_only_token_rejected(token: str) -> None:
    outcome: Any
    try:
        outcome = parse_token(token, allowed_algorithms=ALLOWED)
    except TokenRejected as rejected:
        outcome = rejected
    if isinstance(outcome, TokenRejected):
        assert outcome.reason in {"malformed", "algorithm_not_allowed"}
        return
    # What gets through is only ever an RS256 header with a well-formed kid.
    assert outcome.header.alg == "RS256"
    assert 1 <= len(outcome.header.kid) <= 128
    assert len(token) <= MAX_TOKEN_LENGTH


@SETTINGS
@given(value=st.none() | st.integers() | st.binary() | st.lists(st.text(), max_size=3))
def test_a_token_that_is_not_a_string_is_malformed(value: Any) -> None:
    with pytest.raises(TokenRejected) as rejected:
        parse_token(value, allowed_algorithms=ALLOWED)
    assert rejected.value.reason == "malformed"


@SETTINGS
@given(
    alg=st.sampled_from(["none", "None", "NONE", "HS256", "HS384", "HS512", "rs256", "ES256"]),
    allowed=st.lists(st.sampled_from(["RS256", "HS256", "none", "ES256"]), max_size=4),
)
def test_none_and_hmac_are_never_allowed(alg: str, allowed: list[str]) -> None:
    token = f"{segment({'alg': alg, 'typ': 'at+jwt', 'kid': 'k1'})}.{segment({'sub': 'x'})}.c2ln"
    with pytest.raises(TokenRejected) as rejected:
        parse_token(token, allowed_algorithms=allowed)
    assert rejected.value.reason == "algorithm_not_allowed"


def _verdict(fuzzed: Fuzzed, token: str) -> Verdict:
    verdict: Verdict = fuzzed.runner.run(fuzzed.service.container.validator.validate(token))
    return verdict


def _assert_refused(verdict: Verdict) -> None:
    assert not verdict.valid
    assert verdict.claims is None
    assert verdict.error in REASONS, verdict.error


@SETTINGS
@given(token=ANY_TEXT | NEAR_JWTS)
def test_the_validator_never_accepts_noise(fuzzed: Fuzzed, token: str) -> None:
    _assert_refused(_verdict(fuzzed, token))


@pytest.fixture(scope="module")
def issued(fuzzed: Fuzzed) -> str:
    """A real access token of the fuzz user, valid as issued."""
    token: str = fuzzed.user_bearer()["Authorization"].removeprefix("Bearer ")
    assert _verdict(fuzzed, token).valid
    return token


@SETTINGS
@given(data=st.data())
def test_a_tampered_token_is_never_valid(fuzzed: Fuzzed, issued: str, data: st.DataObject) -> None:
    """Any change to the characters of a valid token (one replaced, inserted or removed,
    anywhere, including the signature's last character) leaves it invalid."""
    position = data.draw(st.integers(0, len(issued) - 1), label="position")
    edit = data.draw(st.sampled_from(["replace", "insert", "delete"]), label="edit")
    char = data.draw(st.sampled_from(string.ascii_letters + string.digits + "-_.=+/"))
    if edit == "replace":
        assume(char != issued[position])
        tampered = issued[:position] + char + issued[position + 1 :]
    elif edit == "insert":
        tampered = issued[:position] + char + issued[position:]
    else:
        tampered = issued[:position] + issued[position + 1 :]
    assert tampered != issued
    _assert_refused(_verdict(fuzzed, tampered))


@SETTINGS
@given(
    changes=st.dictionaries(
        st.sampled_from(["sub", "roles", "aud", "exp", "sid", "iss", "jti", "amr"]),
        JSON_VALUES,
        min_size=1,
    ),
    alg=st.sampled_from(["RS256", "none", "HS256"]),
    signature=st.sampled_from(["keep", "empty", "random"]),
)
def test_a_token_with_rewritten_claims_or_header_is_never_valid(
    fuzzed: Fuzzed, issued: str, changes: dict[str, Any], alg: str, signature: str
) -> None:
    """Claims rewritten (an attacker's roles, another subject, a later exp...) under the
    original signature, an empty one, or a random one; or re-labelled unsigned or HMAC."""
    header_segment, payload_segment, signature_segment = issued.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload_segment + "=" * 4))
    assume(any(claims.get(name, object()) != value for name, value in changes.items()))
    header = json.loads(base64.urlsafe_b64decode(header_segment + "=" * 4))
    header["alg"] = alg
    forged_signature = {"keep": signature_segment, "empty": "", "random": b64(b"\x01" * 256)}
    token = f"{segment(header)}.{segment({**claims, **changes})}.{forged_signature[signature]}"
    _assert_refused(_verdict(fuzzed, token))


# -- (b) the email normaliser ----------------------------------------------------------

LOCAL = st.text(string.ascii_letters + string.digits + "._+-", min_size=1, max_size=30)
DOMAINS = st.sampled_from(["example.com", "Example.ORG", "mail.example.net", "bücher.example"])
EMAILS = st.builds(lambda local, domain: f"{local}@{domain}", LOCAL, DOMAINS)
IDEOGRAPHIC_FULL_STOP = "\u3002"
PADDING = st.text(" \t\n\r\u3000\u00a0", max_size=3)


def _normalised_or_none(raw: str) -> str | None:
    try:
        return normalize_email(raw)
    except InvalidRequestError:
        return None


@SETTINGS
@given(raw=ANY_TEXT | EMAILS)
def test_normalising_raises_only_invalid_request_and_is_idempotent(raw: str) -> None:
    normalised = _normalised_or_none(raw)
    if normalised is None:
        return
    assert normalize_email(normalised) == normalised
    assert normalised == normalised.strip() == normalised.lower()
    assert normalised == unicodedata.normalize("NFKC", normalised)
    assert len(normalised) <= 254
    assert normalised.count("@") >= 1


def _fullwidth(text: str) -> str:
    """ASCII letters, digits and punctuation (not "@") as their fullwidth forms (NFKC maps
    them back)."""
    return "".join(chr(ord(c) + 0xFEE0) if "!" <= c <= "~" and c != "@" else c for c in text)


@SETTINGS
@given(raw=EMAILS, before=PADDING, after=PADDING, upper=st.booleans())
def test_spellings_of_one_address_normalise_alike(
    raw: str, before: str, after: str, upper: bool
) -> None:
    """Trim, case, fullwidth forms, and the ideographic full stop in the domain: one address."""
    expected = _normalised_or_none(raw)
    assume(expected is not None)
    local, domain = raw.rsplit("@", 1)
    spellings = [
        raw.upper() if upper else raw,
        _fullwidth(raw),
        f"{before}{raw}{after}",
        local + "@" + domain.replace(".", IDEOGRAPHIC_FULL_STOP),
        _fullwidth(local) + "@" + _fullwidth(domain).replace("\uff0e", IDEOGRAPHIC_FULL_STOP),
    ]
    for spelling in spellings:
        assert _normalised_or_none(spelling) == expected, spelling


@SETTINGS
@given(raw=EMAILS.filter(lambda email: "." in email.rsplit("@", 1)[0]))
def test_an_ideographic_full_stop_in_the_local_part_is_kept_consistently(raw: str) -> None:
    """The local part's U+3002 is not a dot (it may be another mailbox), but every spelling of
    that address (case, width, padding) still normalises to one key."""
    local, domain = raw.rsplit("@", 1)
    spelling = local.replace(".", IDEOGRAPHIC_FULL_STOP) + "@" + domain
    expected = _normalised_or_none(spelling)
    assume(expected is not None)
    assert _normalised_or_none(f" {spelling.upper()} ") == expected
    assert _normalised_or_none(_fullwidth(spelling)) == expected
    assert expected != _normalised_or_none(raw)


@SETTINGS
@given(raw=ANY_TEXT)
def test_the_error_never_repeats_the_submitted_value(raw: str) -> None:
    assume(len(raw.strip()) >= 4)
    message = ""
    try:
        normalize_email(raw)
    except InvalidRequestError as error:
        message = str(error)
    assert raw.strip() not in message


def test_an_over_long_address_is_refused_before_normalising() -> None:
    with pytest.raises(InvalidRequestError):
        normalize_email("a" * 5000 + "@example.com")


# -- (c) the CSRF check ----------------------------------------------------------------

BINDING = CsrfBinding(TEST_SECRET)
OTHER = CsrfBinding(TEST_SECRET + "x")
REFRESH = st.text(string.ascii_letters + string.digits + "-_", min_size=1, max_size=100)
MAYBE_TEXT = st.none() | ANY_TEXT


@SETTINGS
@given(refresh=REFRESH | st.text(min_size=1))
def test_the_token_of_a_refresh_token_verifies(refresh: str) -> None:
    token = BINDING.token_for(refresh)
    assert BINDING.verify(refresh, token, token)
    assert token == BINDING.token_for(refresh)  # deterministic: the grace pair's token


@SETTINGS
@given(refresh=REFRESH, other=REFRESH, which=st.sampled_from(["cookie", "header", "both"]))
def test_another_sessions_token_fails(refresh: str, other: str, which: str) -> None:
    assume(other != refresh)
    token, foreign = BINDING.token_for(refresh), BINDING.token_for(other)
    cookie = foreign if which in ("cookie", "both") else token
    header = foreign if which in ("header", "both") else token
    assert not BINDING.verify(refresh, cookie, header)
    assert not BINDING.verify(other, token, token)


@SETTINGS
@given(refresh=REFRESH, position=st.integers(0, 42), which=st.sampled_from(["cookie", "header"]))
def test_any_changed_character_fails(refresh: str, position: int, which: str) -> None:
    token = BINDING.token_for(refresh)
    changed = token[:position] + ("A" if token[position] != "A" else "B") + token[position + 1 :]
    cookie, header = (changed, token) if which == "cookie" else (token, changed)
    assert not BINDING.verify(refresh, cookie, header)


@SETTINGS
@given(refresh=REFRESH, missing=st.sampled_from(["refresh", "cookie", "header"]))
def test_a_missing_or_empty_part_fails(refresh: str, missing: str) -> None:
    token = BINDING.token_for(refresh)
    for absent in (None, ""):
        parts: dict[str, str | None] = {"refresh": refresh, "cookie": token, "header": token}
        parts[missing] = absent
        assert not BINDING.verify(parts["refresh"], parts["cookie"], parts["header"])


@SETTINGS
@given(refresh=REFRESH)
def test_a_token_from_another_secret_fails(refresh: str) -> None:
    foreign = OTHER.token_for(refresh)
    assert foreign != BINDING.token_for(refresh)
    assert not BINDING.verify(refresh, foreign, foreign)
    assert not BINDING.verify(refresh, foreign, BINDING.token_for(refresh))


@SETTINGS
@given(refresh=MAYBE_TEXT, cookie=MAYBE_TEXT, header=MAYBE_TEXT)
def test_verify_never_raises(refresh: str | None, cookie: str | None, header: str | None) -> None:
    verified = BINDING.verify(refresh, cookie, header)
    assert verified is False or (
        refresh is not None and cookie == header == BINDING.token_for(refresh)
    )
