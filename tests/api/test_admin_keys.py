"""The operators' key API over HTTP: who may call it, what it answers, and what a failure
(store down, lock busy, bad kid) looks like."""

from __future__ import annotations

from datetime import timedelta

import pytest

from auth_service.clock import FrozenClock
from auth_service.services.keys import KEYS_LOCK
from auth_service.store.base import StoreUnavailableError
from tests.support.http import client_headers, register_and_login
from tests.support.rotation import admin_headers, jwks_kids, statuses, verdict
from tests.support.service import Service

PUBLISHED = timedelta(seconds=360)  # JWKS max-age 300 + key-cache refresh 60


ENDPOINTS = [
    ("GET", "/admin/keys"),
    ("POST", "/admin/keys/rotate"),
    ("GET", "/admin/keys/rotation-status"),
    ("POST", "/admin/keys/some-kid/revoke"),
]


@pytest.mark.parametrize(("method", "path"), ENDPOINTS)
async def test_only_an_admin_may_call_the_key_api(rot: Service, method: str, path: str) -> None:
    anonymous = await rot.client.request(method, path)
    assert anonymous.status_code == 401 and anonymous.json()["error"] == "invalid_token"
    user = await register_and_login(rot, "mallory@example.com")
    forbidden = await rot.client.request(method, path, headers=user.bearer)
    assert forbidden.status_code == 403 and forbidden.json()["error"] == "forbidden"
    # A forged "admin" role in a token not signed by us gets nowhere either.
    forged = {"Authorization": "Bearer eyJhbGciOiJub25lIn0.eyJyb2xlcyI6WyJhZG1pbiJdfQ."}
    assert (await rot.client.request(method, path, headers=forged)).status_code == 401
    assert len((await statuses(rot.container))["active"]) == 1  # nothing rotated


async def test_an_admin_lists_rotates_and_reads_the_status(
    rot: Service, clock: FrozenClock
) -> None:
    admin = await admin_headers(rot)
    listed = (await rot.client.get("/admin/keys", headers=admin)).json()["keys"]
    assert [key["status"] for key in listed] == ["active", "next"]
    assert set(listed[0]) == {
        "kid",
        "alg",
        "status",
        "created_at",
        "activated_at",
        "retired_at",
        "expires_at",
        "revoked_at",
    }
    young = await rot.client.post("/admin/keys/rotate", headers=admin)
    assert young.status_code == 409 and young.json()["error"] == "rotation_in_progress"
    assert "cannot sign yet" in young.json()["error_description"]

    clock.advance(PUBLISHED)
    rotated = await rot.client.post("/admin/keys/rotate", headers=admin)
    assert rotated.status_code == 200, rotated.text
    assert rotated.json() == {"active_kid": listed[1]["kid"], "previous_kid": listed[0]["kid"]}
    # This instance signs with the new key right away (no waiting for the event).
    assert rot.container.keyring.signing is not None
    assert rot.container.keyring.signing.kid == listed[1]["kid"]
    assert (await jwks_kids(rot))[0] == listed[1]["kid"]

    status = (await rot.client.get("/admin/keys/rotation-status", headers=admin)).json()
    assert status["active_kid"] == listed[1]["kid"] and status["interval_hours"] == 24
    assert status["last_rotation"]["previous_kid"] == listed[0]["kid"]
    assert len(status["published_keys"]) == 3 and status["next_rotation_at"]


async def test_a_busy_lock_is_409_and_a_store_outage_is_503_with_nothing_written(
    rot: Service, clock: FrozenClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    admin = await admin_headers(rot)
    clock.advance(PUBLISHED)
    before = await statuses(rot.container)
    store = rot.container.rotation.keys.store
    holder = await store.acquire_lock(KEYS_LOCK, timedelta(seconds=30))
    assert holder is not None
    busy = await rot.client.post("/admin/keys/rotate", headers=admin)
    assert busy.status_code == 409 and busy.json()["error"] == "rotation_in_progress"
    await store.release_lock(KEYS_LOCK, holder)

    async def down(*_args: object, **_kwargs: object) -> str | None:
        raise StoreUnavailableError("connection refused")

    monkeypatch.setattr(store, "acquire_lock", down)
    outage = await rot.client.post("/admin/keys/rotate", headers=admin)
    assert outage.status_code == 503 and outage.json()["error"] == "service_unavailable"
    assert "Traceback" not in outage.text
    assert await statuses(rot.container) == before


async def test_revoke_over_http(rot: Service) -> None:
    admin = await admin_headers(rot)
    headers = await client_headers(rot)
    user = await register_and_login(rot, "carol@example.com")
    kids = await statuses(rot.container)
    active = kids["active"][0]
    revoked = await rot.client.post(f"/admin/keys/{active}/revoke", headers=admin)
    assert revoked.status_code == 200, revoked.text
    assert revoked.json() == {"kid": active, "status": "revoked", "active_kid": kids["next"][0]}
    assert await verdict(rot, user.pair["access_token"], headers) == {
        "valid": False,
        "error": "key_revoked",
    }
    # The admin's own token was signed by the revoked key too: it no longer authenticates.
    assert (await rot.client.get("/admin/keys", headers=admin)).status_code == 401
    admin = await admin_headers(rot, "admin2@example.com")
    missing = await rot.client.post("/admin/keys/unknown-kid/revoke", headers=admin)
    assert missing.status_code == 404 and missing.json()["error"] == "not_found"
    for bad in ("..%2F..%2Fetc", "x'%20OR%201=1", "a" * 129):
        response = await rot.client.post(f"/admin/keys/{bad}/revoke", headers=admin)
        assert response.status_code in (404, 422), (bad, response.text)
        assert response.json()["error"] in ("not_found", "invalid_request")
