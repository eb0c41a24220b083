"""An operator's action on instance A takes effect on instance B within a second: a user
disabled, a user's tokens revoked, a role removed (two `auth-service serve` processes on one
PostgreSQL database and one Redis prefix)."""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest

from tests.support.cluster import POLL, Cluster, bearer, boot, login, register, validate

PASSWORD = "Operators act everywhere 0001 xq"
WITHIN = 1.0


async def _user_id(http: httpx.AsyncClient, base: str, token: str) -> str:
    me = await http.get(f"{base}/auth/me", headers=bearer(token))
    assert me.status_code == 200, me.text
    return str(me.json()["id"])


@pytest.mark.parametrize(
    ("action", "body", "reason"),
    [
        ("disable", None, "user_disabled"),
        ("revoke-tokens", None, "token_revoked"),
        ("roles", {"roles": []}, "token_revoked"),
    ],
)
async def test_an_admin_action_on_a_is_enforced_by_b_within_a_second(
    cluster: Cluster,
    http: httpx.AsyncClient,
    action: str,
    body: dict[str, list[str]] | None,
    reason: str,
) -> None:
    app = await boot(cluster, http, count=2)
    a, b = app.instances
    email = f"{action}@example.com"
    await register(http, a.base, email, PASSWORD)
    token = await login(http, a.base, email, PASSWORD)
    user_id = await _user_id(http, a.base, token)
    if action == "roles":  # give a role to take away
        given = await http.put(
            f"{a.base}/admin/users/{user_id}/roles",
            json={"roles": ["billing"]},
            headers=bearer(app.admin),
        )
        assert given.status_code == 200, given.text
    first = await validate(http, b.base, token, app.client_auth)
    assert first.json()["valid"] is True, first.text

    path = f"{a.base}/admin/users/{user_id}/{action}"
    if body is None:
        acted = await http.post(path, headers=bearer(app.admin))
    else:
        acted = await http.put(path, json=body, headers=bearer(app.admin))
    assert acted.status_code in (200, 204), acted.text
    acted_at = time.monotonic()
    while True:
        verdict = (await validate(http, b.base, token, app.client_auth)).json()
        if not verdict["valid"]:
            break
        assert time.monotonic() - acted_at < WITHIN, ("still valid on B", cluster.logs())
        await asyncio.sleep(POLL)
    assert verdict["error"] in {reason, "session_revoked"}, verdict
