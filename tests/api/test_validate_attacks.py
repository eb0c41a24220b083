"""Attacks on POST /validate: each test isolates one rule of API.md "A token is valid only if
ALL hold" and fails if that defence is removed.

Forged tokens are built by hand (base64url JSON segments, RS256 signed with ``cryptography``),
starting from the claims of a real login, so a rejection is due to the one thing changed.

The attacks only read, so they share one app and one login per module (``world``); the few
that move the clock or count failed client logins get their own (``fresh_world``).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import jwt
import pytest
import pytest_asyncio
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.oid import NameOID

from auth_service.clock import FrozenClock
from auth_service.crypto.jwk import public_jwk_members, thumbprint
from tests.support.clocks import START
from tests.support.http import LoggedIn, client_headers, register_and_login, validate
from tests.support.service import Service

ISSUER = "https://auth.example.test"
AUDIENCE = "api.example.test"

pytestmark = pytest.mark.asyncio(loop_scope="module")
FRESH = pytest.mark.asyncio(loop_scope="function")  # for tests on ``fresh_world``


def b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def segment(value: Any) -> str:
    return b64(json.dumps(value, separators=(",", ":")).encode())


def forge(header: dict[str, Any], claims: dict[str, Any], key: rsa.RSAPrivateKey) -> str:
    signing_input = f"{segment(header)}.{segment(claims)}"
    signature = key.sign(signing_input.encode(), padding.PKCS1v15(), hashes.SHA256())
    return f"{signing_input}.{b64(signature)}"


@dataclass
class World:
    service: Service
    user: LoggedIn
    headers: dict[str, str]
    token: str  # the genuine access token of the login
    claims: dict[str, Any]  # its claims, unverified: the baseline to tamper with
    kid: str
    key: rsa.RSAPrivateKey  # the service's active signing key

    def sign(
        self,
        claims: dict[str, Any] | None = None,
        key: rsa.RSAPrivateKey | None = None,
        **header: Any,
    ) -> str:
        """Like the service's own tokens; header members set to None are left out."""
        members = {"alg": "RS256", "typ": "at+jwt", "kid": self.kid, **header}
        members = {name: value for name, value in members.items() if value is not None}
        return forge(members, self.claims if claims is None else claims, key or self.key)

    async def check(self, token: str) -> dict[str, Any]:
        return await validate(self.service, token, self.headers)

    async def reason(self, token: str) -> str:
        body = await self.check(token)
        assert body["valid"] is False and "claims" not in body, body
        return str(body["error"])


async def _world(service: Service) -> World:
    user = await register_and_login(service)
    token = user.pair["access_token"]
    signing = service.container.keyring.signing
    assert signing is not None
    return World(
        service=service,
        user=user,
        headers=await client_headers(service),
        token=token,
        claims=jwt.decode(token, options={"verify_signature": False}),
        kid=signing.kid,
        key=signing.private_key,
    )


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def world(shared_service: Service) -> World:
    """One login and one client for the module's read-only attacks."""
    return await _world(shared_service)


@pytest.fixture
async def fresh_world(service: Service) -> World:
    """A world of its own, for a test that moves the clock or writes to the store."""
    return await _world(service)


async def test_a_genuine_token_is_valid_with_the_contract_claims_and_header(world: World) -> None:
    body = await world.check(world.token)
    assert body["valid"] is True and "error" not in body
    claims = body["claims"]
    assert set(claims) == {"iss", "sub", "aud", "exp", "iat", "nbf", "jti", "sid", "roles", "amr"}
    issued = int(START.timestamp())
    assert claims["iss"] == ISSUER and claims["sub"] == world.user.user_id
    assert claims["aud"] in (AUDIENCE, [AUDIENCE])
    assert (claims["iat"], claims["nbf"], claims["exp"]) == (issued, issued, issued + 900)
    assert isinstance(claims["jti"], str) and len(claims["jti"]) >= 16
    assert isinstance(claims["sid"], str) and isinstance(claims["roles"], list)
    assert claims["amr"] == ["pwd"]
    assert jwt.get_unverified_header(world.token) == {
        "alg": "RS256",
        "typ": "at+jwt",
        "kid": world.kid,
    }


async def test_a_correct_forgery_is_valid_so_every_attack_below_changes_one_thing(
    world: World,
) -> None:
    body = await world.check(world.sign({**world.claims, "jti": "forged-control"}))
    assert body["valid"] is True and body["claims"]["jti"] == "forged-control"


@pytest.mark.parametrize(
    ("alg", "trailing_dot", "reason"),
    [
        ("none", True, "algorithm_not_allowed"),
        ("None", True, "algorithm_not_allowed"),
        ("NONE", True, "algorithm_not_allowed"),
        ("none", False, "malformed"),  # "h.p" has two segments: refused before the header
    ],
)
async def test_alg_none_is_refused(world: World, alg: str, trailing_dot: bool, reason: str) -> None:
    unsigned = f"{segment({'alg': alg, 'typ': 'at+jwt', 'kid': world.kid})}.{segment(world.claims)}"
    assert await world.reason(unsigned + ("." if trailing_dot else "")) == reason


@pytest.mark.parametrize("alg", ["HS256", "HS384", "HS512"])
async def test_hmac_keyed_with_the_public_key_pem_is_refused(world: World, alg: str) -> None:
    """Algorithm confusion: the RSA public key (public in the JWKS) used as an HMAC secret."""
    pem = world.key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    signing_input = f"{segment({'alg': alg, 'typ': 'at+jwt', 'kid': world.kid})}"
    signing_input += f".{segment(world.claims)}"
    digest = getattr(hashlib, f"sha{alg[2:]}")
    mac = hmac.new(pem, signing_input.encode(), digest).digest()
    assert await world.reason(f"{signing_input}.{b64(mac)}") == "algorithm_not_allowed"


async def test_another_key_reusing_the_active_kid_is_an_invalid_signature(
    world: World, key_pool: list[rsa.RSAPrivateKey]
) -> None:
    assert await world.reason(world.sign(key=key_pool[5])) == "invalid_signature"


async def test_a_well_formed_unknown_kid_is_unknown_key(
    world: World, key_pool: list[rsa.RSAPrivateKey]
) -> None:
    attacker_kid = thumbprint(public_jwk_members(key_pool[5].public_key()))
    assert await world.reason(world.sign(kid=b64(secrets.token_bytes(32)))) == "unknown_key"
    assert await world.reason(world.sign(kid=attacker_kid, key=key_pool[5])) == "unknown_key"


@pytest.mark.parametrize(
    "kid",
    ["../../etc/passwd", "a'b\"c", "1 OR 1=1; DROP TABLE signing_keys", "", "k" * 129, 7, None],
)
async def test_a_kid_outside_the_thumbprint_charset_is_malformed(world: World, kid: Any) -> None:
    header = {"alg": "RS256", "typ": "at+jwt"} | ({} if kid is None else {"kid": kid})
    assert await world.reason(forge(header, world.claims, world.key)) == "malformed"


def _self_signed_der(key: rsa.RSAPrivateKey) -> bytes:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "auth.example.test")])
    moment = datetime(2026, 1, 1, tzinfo=UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(moment)
        .not_valid_after(moment + timedelta(days=365))
        .sign(key, hashes.SHA256())
    )
    return certificate.public_bytes(serialization.Encoding.DER)


@pytest.mark.parametrize("member", ["jku", "x5u", "jwk", "x5c"])
async def test_key_carrying_header_members_are_never_trusted(
    world: World, key_pool: list[rsa.RSAPrivateKey], member: str
) -> None:
    attacker = key_pool[5]
    attacker_kid = thumbprint(public_jwk_members(attacker.public_key()))
    value = {
        "jku": "https://attacker.example/jwks.json",
        "x5u": "https://attacker.example/cert.pem",
        "jwk": {**public_jwk_members(attacker.public_key()), "kid": attacker_kid, "use": "sig"},
        "x5c": [base64.b64encode(_self_signed_der(attacker)).decode()],
    }[member]
    with_real_kid = world.sign(key=attacker, **{member: value})
    assert await world.reason(with_real_kid) == "invalid_signature"
    with_attacker_kid = world.sign(key=attacker, kid=attacker_kid, **{member: value})
    assert await world.reason(with_attacker_kid) == "unknown_key"


async def test_a_tampered_payload_under_the_original_signature_is_invalid(world: World) -> None:
    header, _payload, signature = world.token.split(".")
    escalated = segment({**world.claims, "roles": ["admin"]})
    assert await world.reason(f"{header}.{escalated}.{signature}") == "invalid_signature"


async def test_a_stripped_signature_is_never_valid(world: World) -> None:
    header, payload, _signature = world.token.split(".")
    assert await world.reason(f"{header}.{payload}.") == "malformed"
    assert await world.reason(f"{header}.{payload}") == "malformed"
    # A signature that is valid base64url but empty of meaning: still not a signature.
    assert await world.reason(f"{header}.{payload}.AAAA") == "invalid_signature"


@pytest.mark.parametrize("typ", ["JWT", "jwt", None, "at+jwt+x", "refresh+jwt", ""])
async def test_a_token_without_typ_at_jwt_is_the_wrong_type(world: World, typ: Any) -> None:
    header = {"alg": "RS256", "kid": world.kid} | ({} if typ is None else {"typ": typ})
    assert await world.reason(forge(header, world.claims, world.key)) == "wrong_token_type"


@FRESH
async def test_expiry_holds_up_to_the_leeway_boundary(
    fresh_world: World, clock: FrozenClock
) -> None:
    clock.advance(900 + 9)  # exp + 9 s
    assert (await fresh_world.check(fresh_world.token))["valid"] is True
    clock.advance(1)  # exp + 10 s: the leeway is spent
    assert await fresh_world.reason(fresh_world.token) == "expired"


@FRESH
@pytest.mark.parametrize(("ahead", "valid"), [(10, True), (11, False)])
async def test_nbf_in_the_future_is_tolerated_only_within_the_leeway(
    fresh_world: World, clock: FrozenClock, ahead: int, valid: bool
) -> None:
    now = int(clock.now().timestamp())
    body = await fresh_world.check(fresh_world.sign({**fresh_world.claims, "nbf": now + ahead}))
    assert body["valid"] is valid
    if not valid:
        assert body["error"] == "not_yet_valid"


@FRESH
async def test_iat_beyond_the_leeway_is_not_yet_valid(
    fresh_world: World, clock: FrozenClock
) -> None:
    now = int(clock.now().timestamp())
    assert (
        await fresh_world.reason(fresh_world.sign({**fresh_world.claims, "iat": now + 11}))
        == "not_yet_valid"
    )


@pytest.mark.parametrize(
    "issuer",
    [
        "https://evil.example",
        "https://auth.example.test.evil.com",
        "https://auth.example.test/",
        "http://auth.example.test",
        "HTTPS://AUTH.EXAMPLE.TEST",
    ],
)
async def test_a_foreign_issuer_is_refused(world: World, issuer: str) -> None:
    assert await world.reason(world.sign({**world.claims, "iss": issuer})) == "invalid_issuer"


@pytest.mark.parametrize(
    "audience", ["api.evil.test", ["api.evil.test", "other"], "API.EXAMPLE.TEST", []]
)
async def test_a_foreign_audience_is_refused(world: World, audience: Any) -> None:
    assert await world.reason(world.sign({**world.claims, "aud": audience})) == "invalid_audience"


async def test_an_audience_list_that_intersects_is_accepted(world: World) -> None:
    body = await world.check(world.sign({**world.claims, "aud": ["api.evil.test", AUDIENCE]}))
    assert body["valid"] is True


@pytest.mark.parametrize("claim", ["iss", "sub", "aud", "exp", "iat", "nbf", "jti"])
async def test_a_missing_registered_claim_is_malformed(world: World, claim: str) -> None:
    claims = {name: value for name, value in world.claims.items() if name != claim}
    assert await world.reason(world.sign(claims)) == "malformed"


async def test_a_refresh_token_or_opaque_string_is_not_an_access_token(world: World) -> None:
    assert await world.reason(world.user.pair["refresh_token"]) == "malformed"
    assert await world.reason(secrets.token_urlsafe(32)) == "malformed"


async def test_oversized_tokens_are_refused_without_a_server_error(world: World) -> None:
    header = world.token.split(".")[0]
    big = f"{header}.{'A' * (1024 * 1024)}.AAAA"
    response = await world.service.client.post(
        "/validate", json={"token": big}, headers=world.headers
    )
    assert response.status_code == 413
    assert response.json()["error"] == "request_too_large"
    ten_kb = f"{header}.{'A' * (10 * 1024)}.AAAA"
    assert await world.reason(ten_kb) == "malformed"


async def test_batch_size_limits(world: World) -> None:
    for tokens in ([], ["x"] * 101):  # short strings: the count is refused, not the size
        response = await world.service.client.post(
            "/validate/batch", json={"tokens": tokens}, headers=world.headers
        )
        assert response.status_code == 422, len(tokens)
        assert response.json()["error"] == "invalid_request"


async def test_a_full_batch_answers_in_the_order_asked(world: World) -> None:
    now = int(world.service.container.clock.now().timestamp())
    expired = world.sign({**world.claims, "iat": now - 2000, "nbf": now - 2000, "exp": now - 100})
    kinds = [("valid", world.token), ("expired", expired), ("malformed", "garbage")]
    # Positions 0, 1, 2, 3, ...: valid, expired, garbage in turn, 100 in all.
    batch = [kinds[i % 3] for i in range(100)]
    response = await world.service.client.post(
        "/validate/batch", json={"tokens": [token for _, token in batch]}, headers=world.headers
    )
    assert response.status_code == 200
    results = response.json()["results"]
    assert len(results) == 100
    for position, (kind, _token) in enumerate(batch):
        result = results[position]
        if kind == "valid":
            assert result["valid"] is True, position
            assert result["claims"]["jti"] == world.claims["jti"], position
        else:
            assert result == {"valid": False, "error": kind}, position


async def test_a_batch_of_100_genuine_tokens_is_accepted(world: World) -> None:
    response = await world.service.client.post(
        "/validate/batch", json={"tokens": [world.token] * 100}, headers=world.headers
    )
    assert response.status_code == 200, response.text
    assert all(result["valid"] for result in response.json()["results"])


def _basic(raw: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(raw.encode()).decode()}


@FRESH
async def test_validate_requires_an_authenticated_client(fresh_world: World) -> None:
    client_id, _, _secret = (
        base64.b64decode(fresh_world.headers["Authorization"][6:]).decode().partition(":")
    )
    attempts: dict[str, dict[str, str]] = {
        "none": {},
        "wrong secret": _basic(f"{client_id}:not-the-secret"),
        "unknown client": _basic(f"unknown-{secrets.token_hex(8)}:{_secret}"),
        "malformed base64": {"Authorization": "Basic %%%not-base64%%%"},
        "no colon": _basic(client_id),
        "user bearer": fresh_world.user.bearer,
    }
    for name, headers in attempts.items():
        for path, body in (
            ("/validate", {"token": fresh_world.token}),
            ("/validate/batch", {"tokens": [fresh_world.token]}),
        ):
            response = await fresh_world.service.client.post(path, json=body, headers=headers)
            assert response.status_code == 401, (name, path)
            assert response.json()["error"] == "invalid_client", (name, path)
            assert response.headers["www-authenticate"].startswith("Basic"), (name, path)
            assert fresh_world.token not in response.text and _secret not in response.text
