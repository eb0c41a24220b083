"""Two `auth-service serve` processes on one PostgreSQL database and one Redis prefix: an
operator's action on A takes effect on B within a second (a user disabled, a user's tokens
revoked, a role removed), and both append to one audit chain that verifies."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import httpx
import pytest

from tests.support.backends import pg_execute
from tests.support.cluster import (
    POLL,
    Cluster,
    bearer,
    boot,
    cli_output,
    login,
    register,
    run_cli,
    validate,
)
from tests.support.webhook_receiver import received, receiver

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


async def test_two_instances_appending_at_once_keep_one_chain_and_the_cli_verifies_it(
    cluster: Cluster, http: httpx.AsyncClient, database_url: str
) -> None:
    app = await boot(cluster, http, count=2)
    a, b = app.instances
    for instance in (a, b):
        await register(http, instance.base, f"user@{instance.name}.example.com", PASSWORD)

    async def fail(base: str, n: int) -> int:
        answer = await http.post(
            f"{base}/auth/login", json={"email": f"nobody{n}@example.com", "password": "x" * 12}
        )
        return answer.status_code

    codes = await asyncio.gather(*(fail(inst.base, n) for n in range(15) for inst in (a, b)))
    assert set(codes) == {401}, codes
    verdict = await http.get(f"{b.base}/admin/audit/verify", headers=bearer(app.admin))
    assert verdict.status_code == 200, verdict.text
    body = verdict.json()
    assert body["ok"] is True and body["checked"] >= 30, body
    verified = run_cli(cluster.env, cluster.workdir, "audit", "verify")
    assert "audit chain ok" in cli_output(verified)

    await pg_execute(database_url, "UPDATE audit_events SET ip = '10.6.6.6' WHERE id = 7")
    broken = run_cli(cluster.env, cluster.workdir, "audit", "verify")
    stdout, _ = broken.communicate(timeout=30)
    assert broken.returncode == 1 and "first bad id 7" in stdout, stdout


async def test_two_instances_deliver_each_webhook_event_exactly_once(
    cluster: Cluster, http: httpx.AsyncClient, tmp_path: Path
) -> None:
    """Both instances run a sender on one outbox: every event reaches the receiver (which
    fails its first two requests) once as a 2xx, however the claims interleave."""
    app = await boot(cluster, http, count=2, overrides={"AUTH_WEBHOOK_POLL_SECONDS": "0.05"})
    a, b = app.instances
    record = tmp_path / "received.jsonl"
    with receiver(record, fail_first=2) as url:
        hook = await http.post(
            f"{a.base}/admin/webhooks",
            json={"url": url, "event_types": ["user.disabled"]},
            headers=bearer(app.admin),
        )
        assert hook.status_code == 201, hook.text
        users = []
        for n in range(8):
            instance = (a, b)[n % 2]
            email = f"w{n}@example.com"
            await register(http, instance.base, email, PASSWORD)
            users.append(
                await _user_id(
                    http, instance.base, await login(http, instance.base, email, PASSWORD)
                )
            )
        answers = await asyncio.gather(
            *(
                http.post(
                    f"{(a, b)[n % 2].base}/admin/users/{uid}/disable", headers=bearer(app.admin)
                )
                for n, uid in enumerate(users)
            )
        )
        assert {answer.status_code for answer in answers} == {204}
        # Back-off after the two failures is 2 s then 4 s at most for the retried ones.
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and len(_delivered_ids(record)) < len(users):
            await asyncio.sleep(0.1)
        await asyncio.sleep(1.0)  # a duplicate would show up meanwhile
    delivered = _delivered_ids(record)
    assert sorted(delivered.values()) == sorted(users), delivered
    calls = received(record)
    assert len(calls) == len(users) + 2, [call["headers"]["webhook-id"] for call in calls]


def _delivered_ids(record: Path) -> dict[str, str]:
    """webhook-id → subject of every request after the receiver's two failures."""
    calls = received(record)[2:]
    return {
        call["headers"]["webhook-id"]: json.loads(call["body"])["data"]["subject"] for call in calls
    }
