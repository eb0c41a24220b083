"""PARITY: one token set through the service's ``/validate`` and through ``LocalVerifier``;
every verdict must agree (valid with the same claims, or the same reason).

Forged tokens are signed with the served instance's own key (``mint``), so each reaches the
check it targets. The revocation reasons ride on the revocation stream.
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from auth_service_client.types import Verdict
from auth_service_client.verifier import LocalVerifier
from conftest import Service
from test_verifier_support import AUDIENCE, ISSUER, claims, me, mint, service_token


def _segment(value: Any) -> str:
    raw = value if isinstance(value, bytes) else json.dumps(value).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _payload(token: str) -> dict[str, Any]:
    part = token.split(".")[1]
    decoded: dict[str, Any] = json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))
    return decoded


def forged_specs() -> dict[str, dict[str, Any]]:
    now = int(time.time())
    dup = b'{"alg":"RS256","typ":"at+jwt","alg":"RS256","kid":"x"}'
    return {
        "valid_minted": {"claims": claims()},
        "expired": {"claims": claims(exp=now - 60, iat=now - 700, nbf=now - 700)},
        "expired_within_leeway": {"claims": claims(exp=now - 3)},
        "not_yet_valid": {"claims": claims(nbf=now + 120)},
        "issued_in_the_future": {"claims": claims(iat=now + 120)},
        "wrong_iss": {"claims": claims(iss="https://evil.example")},
        "wrong_aud": {"claims": claims(aud="other-api")},
        "aud_list_intersecting": {"claims": claims(aud=["other-api", AUDIENCE])},
        "wrong_typ": {"claims": claims(), "header": {"typ": "JWT"}},
        "no_typ": {"claims": claims(), "header": {"typ": None}},
        "typ_with_media_prefix": {"claims": claims(), "header": {"typ": "application/AT+JWT"}},
        "alg_none": {"claims": claims(), "header": {"alg": "none"}, "sign": "none"},
        "hs256_with_public_key": {
            "claims": claims(),
            "header": {"alg": "HS256"},
            "sign": "hs256_public",
        },
        "alg_rs512": {"claims": claims(), "header": {"alg": "RS512"}},
        "unknown_kid": {"claims": claims(), "header": {"kid": "no-such-kid-123"}},
        "kid_bad_charset": {"claims": claims(), "header": {"kid": "../../etc/passwd"}},
        "no_kid": {"claims": claims(), "header": {"kid": None}},
        "bad_signature": {"claims": claims(), "sign": "attacker"},
        "crit_header": {"claims": claims(), "header": {"crit": ["exp"]}},
        "jku_jwk_ignored": {
            "claims": claims(),
            "header": {"jku": "https://evil.example/jwks", "x5u": "https://evil.example/x"},
        },
        "duplicate_header_member": {"claims": claims(), "raw_header": _segment(dup)},
        "header_not_object": {"claims": claims(), "raw_header": _segment([1, 2])},
        "no_jti": {"claims": claims(jti=None)},
        "no_exp": {"claims": claims(exp=None)},
        "no_session_nor_client": {"claims": claims(sid=None)},
        "roles_not_a_list": {"claims": claims(roles="admin")},
        "exp_a_string": {"claims": claims(exp="soon")},
        "exp_a_bool": {"claims": claims(exp=True)},
        "exp_out_of_range": {"claims": claims(exp=10**13)},
        "aud_a_number": {"claims": claims(aud=5)},
        "empty_sub": {"claims": claims(sub="")},
    }


def unsigned_tokens(real: str) -> dict[str, str]:
    head, body, signature = real.split(".")
    flipped = body[:-2] + ("A" if body[-2] != "A" else "B") + body[-1]
    return {
        "garbage": "garbage",
        "two_segments": f"{head}.{body}",
        "four_segments": f"{real}.x",
        "empty": "",
        "huge_header": f"{_segment({'alg': 'RS256', 'pad': 'x' * 9000})}.{body}.{signature}",
        "padded_segment": f"{head}=.{body}.{signature}",
        "not_base64": f"{head}.{body}.!!!",
        "tampered_payload": f"{head}.{flipped}.{signature}",
        "signature_stripped": f"{head}.{body}.",
    }


@pytest.fixture
async def verifier(service: Service) -> AsyncIterator[LocalVerifier]:
    async with LocalVerifier(
        service.base_url,
        issuer=ISSUER,
        audience=AUDIENCE,
        revocations=True,
        client_id=service.client_id,
        client_secret=service.client_secret,
        refetch_interval=0.5,
    ) as local:
        await local.start(wait_synced=10)
        yield local


def _revoked_tokens(service: Service) -> dict[str, str]:
    """Tokens revoked in each way the service knows; each named by the reason expected."""
    tokens: dict[str, str] = {}
    out = service.login()
    service.logout(out)
    tokens["logged_out"] = out["access_token"]

    email = f"two-{time.monotonic_ns()}@example.com"
    first, second = service.login(email), service.login(email)
    sid = _payload(second["access_token"])["sid"]
    gone = httpx.delete(
        f"{service.base_url}/auth/sessions/{sid}",
        headers={"Authorization": f"Bearer {first['access_token']}"},
        timeout=10,
    )
    assert gone.status_code == 204, gone.text
    tokens["session_revoked"] = second["access_token"]
    tokens["other_session_alive"] = first["access_token"]

    everyone = service.login()
    user_id = me(service, everyone)["id"]
    _, (before,) = mint(service, [{"claims": claims(sub=user_id, iat=int(time.time()) - 5)}])
    done = service.post(
        "/auth/logout-all", headers={"Authorization": f"Bearer {everyone['access_token']}"}
    )
    assert done.status_code == 204, done.text
    tokens["revoked_after_with_live_session"] = before
    tokens["logged_out_all"] = everyone["access_token"]

    email = f"disabled-{time.monotonic_ns()}@example.com"
    disabled = service.login(email)
    service.cli("users", "disable", email)
    tokens["user_disabled"] = disabled["access_token"]

    headers = service.admin_headers()
    made = service.post("/admin/clients", json={"name": "doomed"}, headers=headers)
    assert made.status_code == 201, made.text
    doomed = Service(service.workdir, port=service.port)
    doomed.client_id, doomed.client_secret = made.json()["client_id"], made.json()["client_secret"]
    tokens["deleted_client"] = service_token(doomed)
    gone = httpx.delete(
        f"{service.base_url}/admin/clients/{doomed.client_id}", headers=headers, timeout=10
    )
    assert gone.status_code == 204, gone.text
    return tokens


async def _compare(
    service: Service, verifier: LocalVerifier, tokens: dict[str, str]
) -> dict[str, tuple[Verdict, Verdict]]:
    """Each token's (remote, local) verdicts; local ones polled for up to 2 s (the stream)."""
    seen: dict[str, tuple[Verdict, Verdict]] = {}
    for name, token in tokens.items():
        remote = Verdict.from_json(await asyncio.to_thread(service.validate, token))
        deadline = time.monotonic() + 2
        local = await verifier.verify(token)
        while local != remote and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
            local = await verifier.verify(token)
        seen[name] = (remote, local)
    return seen


async def test_every_verdict_matches_the_service(service: Service, verifier: LocalVerifier) -> None:
    specs = forged_specs()
    _, forged = await asyncio.to_thread(mint, service, list(specs.values()))
    pair = service.login()
    tokens = dict(zip(specs, forged, strict=True))
    tokens |= unsigned_tokens(pair["access_token"])
    tokens["valid_user"] = pair["access_token"]
    tokens["valid_service"] = await asyncio.to_thread(service_token, service)
    tokens |= await asyncio.to_thread(_revoked_tokens, service)

    seen = await _compare(service, verifier, tokens)
    mismatches = {name: pair for name, pair in seen.items() if pair[0] != pair[1]}
    assert not mismatches
    reasons = {name: remote.error for name, (remote, _) in seen.items()}
    # The set is what it claims to be: each reason of the contract but key_revoked (its own
    # test, test_revocations_service.py) is reached.
    assert set(reasons.values()) >= {
        None, "malformed", "invalid_signature", "unknown_key", "algorithm_not_allowed",
        "wrong_token_type", "expired", "not_yet_valid", "invalid_issuer", "invalid_audience",
        "token_revoked", "session_revoked", "user_disabled",
    }  # fmt: skip
    assert reasons["valid_user"] is None and reasons["valid_service"] is None
    assert reasons["logged_out"] == "token_revoked"
    assert reasons["session_revoked"] == "session_revoked"
    assert reasons["revoked_after_with_live_session"] == "token_revoked"
    assert reasons["user_disabled"] == "user_disabled"
    assert reasons["deleted_client"] == "token_revoked"
    assert reasons["alg_none"] == reasons["hs256_with_public_key"] == "algorithm_not_allowed"
