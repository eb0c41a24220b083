"""Schemathesis against the app's own OpenAPI document, on the backend under test.

Every operation is fuzzed (examples, coverage and fuzzing phases; positive and negative
data) and each response must: not be a 5xx, have a status code the operation declares, have
a declared content type, conform to the declared schema of that status, and (any error) be
the contract's error body, a 429 ``rate_limited`` with ``Retry-After``. Requests carry
the credentials that let them past authentication (a fresh user Bearer for the user routes,
an admin Bearer for /admin, a service client's Basic credentials for /validate, /oauth and
/events) on four cases in five; the fifth keeps the random ``Authorization`` schemathesis
generated from the declared security scheme. One case in three of an operation on an
identified resource (a session, a client) names a real one, so its success path is fuzzed too.

``GET /events/revocations`` with valid credentials is an endless Server-Sent Events stream,
which an in-process client would wait on forever, so that one operation is sent without
credentials (its authentication and validation paths are fuzzed, not the stream;
``tests/served/test_revocation_stream.py`` covers the stream).

Then an explicit sequence test (the document has no OpenAPI links): register → login →
refresh → the old refresh token again → logout, with random valid emails and passwords.
"""

from __future__ import annotations

import json
import re
import string
import zlib
from typing import Any

import hypothesis
import schemathesis
from hypothesis import HealthCheck, given
from hypothesis import strategies as st
from schemathesis import Case
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from auth_service.app import create_app
from tests.fuzz.conftest import Fuzzed
from tests.support.settings import suite_settings


@schemathesis.check
def contract_error_body(ctx: Any, response: Any, case: Case[Any]) -> bool | None:
    """API.md "Conventions": every error is ``{"error", "error_description"}`` (codes
    lower_snake_case), a rate-limited answer is ``429 rate_limited`` with ``Retry-After``, and
    no error carries a stack trace."""
    if response.status_code < 400:
        return None
    try:
        body = json.loads(response.content)
    except ValueError:
        raise AssertionError(f"a {response.status_code} whose body is not JSON") from None
    if not isinstance(body, dict):
        raise AssertionError(f"a {response.status_code} whose body is not an object")
    code, description = body.get("error"), body.get("error_description")
    if not isinstance(code, str) or not re.fullmatch(r"[a-z][a-z0-9_]*", code):
        raise AssertionError(f"a {response.status_code} without a lower_snake_case error code")
    if not isinstance(description, str):
        raise AssertionError(f"a {response.status_code} without an error_description")
    if "Traceback" in response.text or 'File "' in response.text:
        raise AssertionError(f"a {response.status_code} that carries a stack trace")
    if response.status_code == 429:
        if code != "rate_limited":
            raise AssertionError(f"a 429 whose error is {code!r}, not 'rate_limited'")
        if not response.headers.get("retry-after"):
            raise AssertionError("a 429 without Retry-After")
    return None


CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    contract_error_body,
]
MAX_EXAMPLES = 30
SEED = 20261207

KEEP_GENERATED_AUTH = 5
SEED_REAL_ID = 3
SEEDED = {
    ("DELETE", "/auth/sessions/{session_id}"): "session_id",
    ("DELETE", "/admin/clients/{client_id}"): "client_id",
    ("POST", "/admin/clients/{client_id}/rotate-secret"): "client_id",
}
STREAM = "/events/revocations"
CLIENT_ROUTES = ("/validate", "/oauth/", "/events/")
PUBLIC_AUTH_ROUTES = frozenset(
    {
        "/auth/register",
        "/auth/login",
        "/auth/login/mfa",
        "/auth/refresh",
        "/auth/password/forgot",
        "/auth/password/reset",
    }
)


def _document() -> dict[str, Any]:
    """The document of an app built as the suite builds one (no database is opened to build
    it); ``test_the_fuzzed_document_is_the_running_apps`` holds it equal to the running
    app's ``app.openapi()``."""
    app = create_app(suite_settings("sqlite+aiosqlite:///unused.db", "authfuzz:"))
    document: dict[str, Any] = app.openapi()
    return document


schema = schemathesis.openapi.from_dict(_document())
schema.config.seed = SEED


def test_the_fuzzed_document_is_the_running_apps(fuzzed: Fuzzed) -> None:
    assert fuzzed.openapi() == _document()


def _generated_authorization(case: Case[Any]) -> str | None:
    for name, value in (case.headers or {}).items():
        if name.lower() == "authorization":
            return str(value)
    return None


def _credentials(case: Case[Any], fuzzed: Fuzzed) -> dict[str, str]:
    """The real credentials for ``case``, or none. The document declares its security
    schemes, so schemathesis puts a random ``Authorization`` on every case of a secured
    operation; one case in ``KEEP_GENERATED_AUTH`` keeps it (the authentication paths are
    fuzzed), decided by the generated value itself (reproducible), the others get real
    credentials (the route itself is fuzzed)."""
    path = case.operation.path
    if path == STREAM:
        return {}  # the stream with real credentials never ends
    generated = _generated_authorization(case)
    if generated is not None and zlib.crc32(generated.encode()) % KEEP_GENERATED_AUTH == 0:
        return {}
    if path.startswith("/admin"):
        return fuzzed.admin_bearer()
    if path.startswith(CLIENT_ROUTES):
        return fuzzed.client_basic
    if path.startswith("/auth/") and path not in PUBLIC_AUTH_ROUTES:
        return fuzzed.user_bearer()
    return {}


def _seed_real_identifier(case: Case[Any], fuzzed: Fuzzed, headers: dict[str, str]) -> None:
    """One case in ``SEED_REAL_ID`` of an operation on an identified resource names a real one
    (random ids only ever reach the 404 and 422 paths)."""
    name = SEEDED.get((case.method.upper(), case.operation.path))
    if name is None or not headers or not case.path_parameters:
        return
    if zlib.crc32(str(case.path_parameters.get(name)).encode()) % SEED_REAL_ID:
        return
    if name == "session_id":
        case.path_parameters[name] = fuzzed.session_of(headers)
    else:
        case.path_parameters[name] = fuzzed.spare_client()


@schema.parametrize()
@hypothesis.settings(
    max_examples=MAX_EXAMPLES,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=list(HealthCheck),
)
def test_every_operation_honours_its_declared_contract(case: Case[Any], fuzzed: Fuzzed) -> None:
    headers = _credentials(case, fuzzed)
    _seed_real_identifier(case, fuzzed, headers)
    kwargs = case.as_transport_kwargs(base_url="http://testserver", headers=headers)
    response = fuzzed.send(kwargs)
    case.validate_response(response, checks=CHECKS, headers=kwargs["headers"])


# -- the refresh-token life cycle as a sequence ------------------------------------------

_LOCAL = st.text(string.ascii_lowercase + string.digits, min_size=1, max_size=20)
_DOMAIN = st.sampled_from(["example.com", "example.org", "mail.example.net"])
EMAILS = st.builds(lambda local, domain: f"{local}@{domain}", _LOCAL, _DOMAIN)
# 16 distinct characters in a random order, the simplest example being a scrambled one (not
# "abcd..."): never common, no sequence or repeat, always scored 4 by zxcvbn.
PASSWORDS = st.permutations(list("q7Zx!m2Kp9vR#tW4")).map("".join)


def _pair_shape(body: dict[str, Any]) -> None:
    assert body["token_type"] == "Bearer"
    assert isinstance(body["access_token"], str) and body["access_token"]
    assert isinstance(body["refresh_token"], str) and body["refresh_token"]
    assert isinstance(body["expires_in"], int) and body["expires_in"] > 0
    assert isinstance(body["refresh_expires_in"], int) and body["refresh_expires_in"] > 0


@given(email=EMAILS, password=PASSWORDS, spelling=st.sampled_from(["same", "upper", "padded"]))
@hypothesis.settings(
    max_examples=15,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=list(HealthCheck),
)
def test_register_login_refresh_reuse_logout(
    fuzzed: Fuzzed, email: str, password: str, spelling: str
) -> None:
    """The contract's statuses along one session's life; the clock is frozen, so the old
    token presented again while its successor is unused is inside the reuse grace window
    (same pair); once the successor is used too, presenting the old one is reuse: 401
    ``refresh_token_reused`` and the whole family is revoked."""
    client = fuzzed.runner
    http = fuzzed.service.client
    registered = client.run(
        http.post("/auth/register", json={"email": email, "password": password})
    )
    if registered.status_code == 409:  # hypothesis drew an address an earlier example took
        assert registered.json()["error"] == "email_taken"
    else:
        assert registered.status_code == 201, registered.text
        assert registered.json()["email"] == email
    typed = {"same": email, "upper": email.upper(), "padded": f"  {email} "}[spelling]
    login = client.run(http.post("/auth/login", json={"email": typed, "password": password}))
    if registered.status_code == 409:
        # Someone else's password, or ours: either way the contract's two answers only.
        assert login.status_code in (200, 401), login.text
        return
    assert login.status_code == 200, login.text
    first = login.json()
    _pair_shape(first)

    refreshed = client.run(
        http.post("/auth/refresh", json={"refresh_token": first["refresh_token"]})
    )
    assert refreshed.status_code == 200, refreshed.text
    second = refreshed.json()
    _pair_shape(second)
    assert second["refresh_token"] != first["refresh_token"]

    grace = client.run(http.post("/auth/refresh", json={"refresh_token": first["refresh_token"]}))
    assert grace.status_code == 200, grace.text
    assert grace.json()["refresh_token"] == second["refresh_token"]

    third = client.run(http.post("/auth/refresh", json={"refresh_token": second["refresh_token"]}))
    assert third.status_code == 200, third.text
    reused = client.run(http.post("/auth/refresh", json={"refresh_token": first["refresh_token"]}))
    assert reused.status_code == 401, reused.text
    assert reused.json()["error"] == "refresh_token_reused"
    # The family is revoked: the newest refresh token is dead too.
    newest = third.json()["refresh_token"]
    dead = client.run(http.post("/auth/refresh", json={"refresh_token": newest}))
    assert dead.status_code == 401, dead.text
    assert dead.json()["error"] in ("invalid_refresh_token", "refresh_token_reused")

    again = client.run(http.post("/auth/login", json={"email": email, "password": password}))
    assert again.status_code == 200, again.text
    bearer = {"Authorization": f"Bearer {again.json()['access_token']}"}
    out = client.run(http.post("/auth/logout", headers=bearer))
    assert out.status_code == 204, out.text
    me = client.run(http.get("/auth/me", headers=bearer))
    assert me.status_code == 401, me.text
    assert me.json()["error"] == "invalid_token"
