"""Two ``auth-service serve`` processes behind a real nginx (Debian's nginx-light, installed by
scripts/system_setup.sh), on PostgreSQL + Redis: a client that only knows the balancer's URL
registers, logs in, refreshes, validates and logs out, its requests alternating between the
instances; a scrape of each instance afterwards shows every counter of the flow moved."""

from __future__ import annotations

import asyncio
import os
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.support.cluster import Cluster, bearer, boot, free_port

NGINX = Path("/usr/sbin/nginx")
PASSWORD = "Balanced login pass 0001 xq"
CONFIG = """
worker_processes 1;
error_log {work}/error.log warn;
pid {work}/nginx.pid;
events {{ worker_connections 256; }}
http {{
    access_log off;
    client_body_temp_path {work}/body;
    proxy_temp_path {work}/proxy;
    fastcgi_temp_path {work}/fastcgi;
    uwsgi_temp_path {work}/uwsgi;
    scgi_temp_path {work}/scgi;
    upstream auth {{ {servers} }}
    server {{
        listen 127.0.0.1:{port};
        location / {{
            proxy_pass http://auth;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $host;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_set_header X-Request-ID $request_id;
        }}
    }}
}}
"""


@contextmanager
def nginx(work: Path, backends: list[str]) -> Iterator[str]:
    """nginx on a free port in front of ``backends`` (round robin); yields its URL."""
    if not NGINX.exists():
        if os.environ.get("CI") == "true":
            pytest.fail(f"{NGINX} is missing: scripts/system_setup.sh installs nginx-light")
        pytest.skip(f"{NGINX} is missing: scripts/system_setup.sh installs nginx-light")
    port = free_port()
    servers = " ".join(f"server {base.removeprefix('http://')};" for base in backends)
    work.mkdir(parents=True, exist_ok=True)
    config = work / "nginx.conf"
    config.write_text(CONFIG.format(work=work, servers=servers, port=port))
    process = subprocess.Popen(
        [str(NGINX), "-p", str(work), "-c", str(config), "-g", "daemon off;"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            assert process.poll() is None, (work / "error.log").read_text(errors="replace")
            try:
                httpx.get(f"{base}/health/live", timeout=1)
                break
            except httpx.TransportError:
                time.sleep(0.05)
        yield base
    finally:
        process.terminate()
        process.wait(timeout=10)


def counters(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name.endswith("_total")
    }


async def test_a_client_of_the_balancer_sees_one_service(
    cluster: Cluster, http: httpx.AsyncClient, tmp_path: Path
) -> None:
    overrides = {
        "AUTH_TRUSTED_PROXIES": "127.0.0.1",
        "AUTH_REFRESH_REUSE_GRACE_SECONDS": "0",
    }
    app = await boot(cluster, http, count=2, overrides=overrides)
    a, b = app.instances

    async def totals() -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
        summed: dict[tuple[str, frozenset[tuple[str, str]]], float] = {}
        for instance in (a, b):
            scrape = await http.get(f"{instance.base}/metrics")
            assert scrape.status_code == 200, scrape.text
            for key, value in counters(scrape.text).items():
                summed[key] = summed.get(key, 0.0) + value
        return summed

    before = await totals()
    with nginx(tmp_path / "nginx", [a.base, b.base]) as lb:
        email = "balanced@example.com"
        created = await http.post(
            f"{lb}/auth/register", json={"email": email, "password": PASSWORD}
        )
        assert created.status_code == 201, created.text
        wrong = await http.post(f"{lb}/auth/login", json={"email": email, "password": "x" * 16})
        assert wrong.status_code == 401
        login = await http.post(f"{lb}/auth/login", json={"email": email, "password": PASSWORD})
        assert login.status_code == 200, login.text
        first = login.json()
        refreshed = await http.post(
            f"{lb}/auth/refresh", json={"refresh_token": first["refresh_token"]}
        )
        assert refreshed.status_code == 200, refreshed.text
        pair = refreshed.json()
        basic = app.client_auth
        for _ in range(4):  # round robin: both instances validate
            verdict = await http.post(
                f"{lb}/validate", json={"token": pair["access_token"]}, auth=basic
            )
            assert verdict.json()["valid"] is True, verdict.text
        me = await http.get(f"{lb}/auth/me", headers=bearer(pair["access_token"]))
        assert me.status_code == 200 and me.json()["email"] == email
        assert me.headers["x-request-id"]  # nginx's id, honoured and echoed
        out = await http.post(
            f"{lb}/auth/logout",
            json={"refresh_token": pair["refresh_token"]},
            headers=bearer(pair["access_token"]),
        )
        assert out.status_code == 204
        await asyncio.sleep(0.3)
        for _ in range(2):  # refused on both instances at once
            gone = await http.post(
                f"{lb}/validate", json={"token": pair["access_token"]}, auth=basic
            )
            assert gone.json()["valid"] is False
        second = await http.post(f"{lb}/auth/login", json={"email": email, "password": PASSWORD})
        spent = second.json()["refresh_token"]
        assert (await http.post(f"{lb}/auth/refresh", json={"refresh_token": spent})).is_success
        reused = await http.post(f"{lb}/auth/refresh", json={"refresh_token": spent})
        assert reused.status_code == 401 and reused.json()["error"] == "refresh_token_reused"
        rotated = await http.post(f"{lb}/admin/keys/rotate", headers=bearer(app.admin))
        assert rotated.status_code == 200, rotated.text
    after = await totals()

    def moved(name: str, **labels: str) -> float:
        key = (name, frozenset(labels.items()))
        return after.get(key, 0.0) - before.get(key, 0.0)

    assert moved("auth_logins_total", step="password", outcome="success") == 2
    assert moved("auth_logins_total", step="password", outcome="invalid_credentials") == 1
    assert moved("auth_validations_total", verdict="valid") == 4
    assert (
        moved("auth_validations_total", verdict="token_revoked")
        + moved("auth_validations_total", verdict="session_revoked")
        == 2
    )
    assert moved("auth_refresh_reuse_detections_total") == 1
    assert moved("auth_key_rotations_total", trigger="manual", result="rotated") == 1
    register = {"route": "/auth/register", "method": "POST", "status": "201"}
    assert moved("auth_http_requests_total", **register) == 1
    validated = {"route": "/validate", "method": "POST", "status": "200"}
    assert moved("auth_http_requests_total", **validated) == 6
    # Both instances answered part of it.
    for instance in (a, b):
        scrape = (await http.get(f"{instance.base}/metrics")).text
        assert any(
            key[0] == "auth_http_requests_total" and ("route", "/validate") in key[1]
            for key in counters(scrape)
        ), instance.name
