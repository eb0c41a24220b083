"""Key rotation across three real `auth-service serve` processes on one database and one store.

Each test starts its instances at once (then waits for all), with a 1 s key-cache refresh and
JWKS max-age 0, so a ``next`` key may be promoted 1 s after it was created. The embedded
backend is one process by design (the in-process lifecycle tests cover it), hence
PostgreSQL and Redis only.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from datetime import timedelta

import httpx

from tests.support.cluster import (
    ONE_ROTATION,
    PASSWORD,
    POLL,
    PROPAGATION,
    ROTATION_INTERVAL,
    SCHEDULED_ROTATION,
    Cluster,
    bearer,
    boot,
    jwks_kids,
    key_rows,
    kid_of,
    kid_with,
    login,
    parse_time,
    register,
    row_with,
    statuses,
    until_next_key_may_sign,
    utc_now,
    validate,
)


async def test_twenty_concurrent_rotations_over_three_instances_make_one(
    cluster: Cluster, http: httpx.AsyncClient
) -> None:
    app = await boot(cluster, http)
    first = app.instances[0].base
    rows = await key_rows(http, first, app.admin)
    original_active = kid_with(rows, "active")
    await until_next_key_may_sign(rows, 1)

    targets = [app.instances[i % len(app.instances)].base for i in range(20)]
    responses = await asyncio.gather(
        *(http.post(f"{base}/admin/keys/rotate", headers=bearer(app.admin)) for base in targets)
    )

    answers = [(response.status_code, response.json()) for response in responses]
    assert not [a for a in answers if a[0] >= 500], f"{answers}\n{cluster.logs()}"
    unexpected = [
        a
        for a in answers
        if a[0] != 200 and (a[0] != 409 or a[1]["error"] != "rotation_in_progress")
    ]
    assert not unexpected, f"{unexpected}\n{cluster.logs()}"
    winners = [body for status, body in answers if status == 200]
    assert len(winners) == 1, f"{answers}\n{cluster.logs()}"
    rows = await key_rows(http, first, app.admin)
    assert statuses(rows) == ONE_ROTATION, rows
    assert len(rows) == 3, rows
    assert kid_with(rows, "active") == winners[0]["active_kid"]
    assert kid_with(rows, "retired") == original_active == winners[0]["previous_kid"]


# -- 2 ------------------------------------------------------------------------------------


async def test_schedulers_firing_together_make_one_rotation(
    cluster: Cluster, http: httpx.AsyncClient
) -> None:
    app = await boot(cluster, http, overrides=SCHEDULED_ROTATION)
    first = app.instances[0].base
    rows = await key_rows(http, first, app.admin)
    assert statuses(rows) == Counter(active=1, next=1), rows
    first_due = parse_time(row_with(rows, "active")["created_at"]) + ROTATION_INTERVAL

    deadline = time.monotonic() + 15
    while "retired" not in statuses(rows):
        assert time.monotonic() < deadline, (
            f"no scheduled rotation within 15 s (due at {first_due.isoformat()}): {rows}\n"
            + cluster.logs()
        )
        await asyncio.sleep(0.1)
        rows = await key_rows(http, first, app.admin)
    activated = parse_time(row_with(rows, "active")["activated_at"])
    assert activated >= first_due, f"rotated at {activated}, before it was due ({first_due})"

    # Keep watching every instance: a second scheduler acting late would add a retired key.
    watch_until = time.monotonic() + 2.0
    while time.monotonic() < watch_until:
        listings = await asyncio.gather(
            *(key_rows(http, instance.base, app.admin) for instance in app.instances)
        )
        for listing in listings:
            assert statuses(listing) == ONE_ROTATION, f"{listing}\n{cluster.logs()}"
            assert len(listing) == 3, listing
        await asyncio.sleep(0.2)
    # The watch must end before the second rotation is due, or it would prove nothing.
    assert utc_now() < activated + ROTATION_INTERVAL - timedelta(seconds=1), (
        "the test watched into the second rotation's due time; the machine is too slow"
    )

    published = {str(row["kid"]) for row in rows}
    for instance in app.instances:  # every instance publishes the new set
        assert set(await jwks_kids(http, instance.base)) == published, instance.name

    logs = [instance.log_text() for instance in app.instances]
    rotations = sum(log.count("rotated the signing keys (scheduled)") for log in logs)
    assert rotations == 1, cluster.logs()
    assert all("key lifecycle check failed" not in log for log in logs), cluster.logs()


# -- 3 ------------------------------------------------------------------------------------


async def test_a_rotation_on_one_instance_reaches_another_within_a_second(
    cluster: Cluster, http: httpx.AsyncClient
) -> None:
    app = await boot(cluster, http)
    a, b = app.instances[0], app.instances[1]
    await register(http, b.base, "user1@example.com", PASSWORD)
    before = await login(http, b.base, "user1@example.com", PASSWORD)
    old_kid = kid_of(before)
    rows = await key_rows(http, a.base, app.admin)
    assert old_kid == kid_with(rows, "active")
    await until_next_key_may_sign(rows, 1)

    rotated = await http.post(f"{a.base}/admin/keys/rotate", headers=bearer(app.admin))
    reached_by = time.monotonic() + PROPAGATION
    assert rotated.status_code == 200, f"{rotated.text}\n{cluster.logs()}"
    new_kid = str(rotated.json()["active_kid"])
    assert new_kid != old_kid
    assert rotated.json()["previous_kid"] == old_kid

    seen: list[str] = []
    while True:
        after = await login(http, b.base, "user1@example.com", PASSWORD)
        seen.append(kid_of(after))
        if seen[-1] == new_kid:
            break
        assert time.monotonic() < reached_by, (
            f"B still signs with {seen[-1]} 1 s after A made {new_kid} active; kids seen {seen}\n"
            + cluster.logs()
        )
        await asyncio.sleep(POLL)

    for token, kid in ((before, old_kid), (after, new_kid)):
        response = await validate(http, b.base, token, app.client_auth)
        assert response.status_code == 200, response.text
        assert response.json()["valid"] is True, f"token of {kid} on B: {response.json()}"
    rows = await key_rows(http, b.base, app.admin)
    assert kid_with(rows, "retired") == old_kid
    assert kid_with(rows, "active") == new_kid


# -- 4 ------------------------------------------------------------------------------------
