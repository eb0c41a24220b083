"""CORS: an explicit allow-list; credentials and exposed headers for listed origins only."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

import pytest

from auth_service.container import Container
from auth_service.production import production_problems
from auth_service.settings import Settings
from tests.support.service import Service, started

LISTED = "https://app.example.com"
UNLISTED = "https://evil.example.net"


@pytest.fixture
async def svc(
    make_container: Callable[..., Container], make_settings: Callable[..., Settings]
) -> AsyncIterator[Service]:
    settings = make_settings(cors_origins=[LISTED], cors_max_age_seconds=900)
    async with started(make_container(settings)) as running:
        yield running


def preflight(origin: str, headers: str = "content-type,x-csrf-token") -> dict[str, str]:
    return {
        "Origin": origin,
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": headers,
    }


async def test_a_listed_origin_gets_a_cached_preflight_with_credentials(svc: Service) -> None:
    answer = await svc.client.options("/auth/refresh", headers=preflight(LISTED))
    assert answer.status_code == 200
    assert answer.headers["access-control-allow-origin"] == LISTED
    assert answer.headers["access-control-allow-credentials"] == "true"
    assert answer.headers["access-control-max-age"] == "900"
    allowed = answer.headers["access-control-allow-headers"].lower()
    assert "x-csrf-token" in allowed
    assert "authorization" in allowed


async def test_an_unlisted_origin_gets_no_grant_in_the_contracts_shape(svc: Service) -> None:
    answer = await svc.client.options("/auth/refresh", headers=preflight(UNLISTED))
    assert answer.status_code == 400
    assert answer.json()["error"] == "invalid_request"
    assert not [name for name in answer.headers if name.startswith("access-control-allow")]


async def test_a_header_that_is_not_allowed_fails_the_preflight(svc: Service) -> None:
    answer = await svc.client.options("/auth/login", headers=preflight(LISTED, "x-evil"))
    assert answer.status_code == 400
    assert "access-control-allow-origin" not in answer.headers


async def test_a_simple_request_from_an_unlisted_origin_carries_no_grant(svc: Service) -> None:
    answer = await svc.client.get("/health/live", headers={"Origin": UNLISTED})
    assert answer.status_code == 200
    assert "access-control-allow-origin" not in answer.headers
    assert "access-control-allow-credentials" not in answer.headers
    assert "access-control-expose-headers" not in answer.headers
    assert "Origin" in answer.headers["vary"]


async def test_a_simple_request_from_a_listed_origin_is_granted(svc: Service) -> None:
    answer = await svc.client.get("/health/live", headers={"Origin": LISTED})
    assert answer.headers["access-control-allow-origin"] == LISTED
    assert answer.headers["access-control-allow-credentials"] == "true"
    assert "x-request-id" in answer.headers["access-control-expose-headers"].lower()
    assert "Origin" in answer.headers["vary"]


async def test_a_listed_origin_can_read_a_500_and_its_request_id(svc: Service) -> None:
    """Attack review: an unexpected error's 500 left CORS and the security headers out, so
    the listed app could not read the error or its request id."""

    @svc.app.get("/_test/crash")
    async def crash() -> None:
        raise RuntimeError("boom")

    answer = await svc.client.get("/_test/crash", headers={"Origin": LISTED})
    assert answer.status_code == 500 and answer.json()["error"] == "server_error"
    assert answer.headers["access-control-allow-origin"] == LISTED
    assert answer.headers["x-content-type-options"] == "nosniff"
    assert answer.headers["x-request-id"] in answer.json()["error_description"]


async def test_an_origin_that_only_resembles_a_listed_one_is_refused(svc: Service) -> None:
    for lookalike in (LISTED + ".evil.net", LISTED + ":443", LISTED.upper(), "null"):
        answer = await svc.client.options("/auth/login", headers=preflight(lookalike))
        assert answer.status_code == 400, lookalike


@pytest.mark.parametrize(
    ("origins", "refused"),
    [
        (["*"], True),
        (["null"], True),
        (["http://app.example.com"], True),
        (["https://app.example.com/"], True),
        (["https://app.example.com/path"], True),
        (["ftp://app.example.com"], True),
        (["https://app.example.com"], False),
        (["http://localhost:5173", "http://127.0.0.1:3000", "http://[::1]:8080"], False),
    ],
)
def test_production_refuses_wildcards_and_plain_http_origins(
    origins: list[str], refused: bool, make_settings: Callable[..., Settings]
) -> None:
    settings = make_settings(environment="production", cors_origins=origins)
    problems = [line for line in production_problems(settings) if "CORS" in line]
    assert bool(problems) is refused, problems
