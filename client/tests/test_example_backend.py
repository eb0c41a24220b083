"""``examples/backend_service.py`` imported and run against the real service (so it cannot
rot), and ``ssot-check examples/`` clean on it."""

import importlib.util
import os
import time
import warnings
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from starlette.exceptions import StarletteDeprecationWarning
from starlette.websockets import WebSocketDisconnect

from auth_service_client.cli import main
from conftest import Service

with warnings.catch_warnings():  # Starlette 1.x prefers httpx2 for its TestClient; httpx works
    warnings.simplefilter("ignore", StarletteDeprecationWarning)
    from starlette.testclient import TestClient

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def load_example(env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    spec = importlib.util.spec_from_file_location(
        "backend_service", EXAMPLES / "backend_service.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def settings(service: Service) -> dict[str, str]:
    return {
        "AUTH_SERVICE_URL": service.base_url,
        "AUTH_SERVICE_CLIENT_ID": service.client_id,
        "AUTH_SERVICE_CLIENT_SECRET": service.client_secret,
        "AUTH_SERVICE_ISSUER": "http://127.0.0.1",  # the fixture's AUTH_ISSUER
    }


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_the_example_needs_its_client_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AUTH_SERVICE_CLIENT_ID", raising=False)
    monkeypatch.delenv("AUTH_SERVICE_CLIENT_SECRET", raising=False)
    with pytest.raises(RuntimeError, match="AUTH_SERVICE_CLIENT_ID"):
        load_example({}, monkeypatch)


def test_the_example_protects_its_routes(service: Service, monkeypatch: pytest.MonkeyPatch) -> None:
    module = load_example(settings(service), monkeypatch)
    pair = service.login()
    with TestClient(module.app) as client:
        me = client.get("/me", headers=bearer(pair["access_token"]))
        assert me.status_code == 200, me.text
        sub = me.json()["sub"]
        assert client.get("/", headers=bearer(pair["access_token"])).json() == {"hello": sub}
        assert client.get("/").json() == {"hello": "anonymous"}
        missing = client.get("/me")
        assert missing.status_code == 401
        assert missing.headers["WWW-Authenticate"] == 'Bearer realm="backend"'
        assert missing.json()["error"] == "invalid_token"
        forbidden = client.get("/admin/report", headers=bearer(pair["access_token"]))
        assert (forbidden.status_code, forbidden.json()["error"]) == (403, "forbidden")
        admin = client.get("/admin/report", headers=service.admin_headers())
        assert admin.status_code == 200, admin.text


def test_the_example_websocket_is_closed_on_logout(
    service: Service, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Through the real revocation stream: a logout closes the live socket with 1008."""
    module = load_example(settings(service), monkeypatch)
    pair = service.login()
    with TestClient(module.app) as client:
        with client.websocket_connect("/ws") as ws, pytest.raises(WebSocketDisconnect) as bad:
            ws.receive_text()
        assert bad.value.code == 1008
        with client.websocket_connect("/ws", subprotocols=["bearer", pair["access_token"]]) as ws:
            hello: dict[str, Any] = ws.receive_json()
            assert hello["hello"]
            ws.send_text("ping")
            assert ws.receive_text() == "ping"
            started = time.monotonic()
            service.logout(pair)
            with pytest.raises(WebSocketDisconnect) as closed:
                ws.receive_text()
        assert closed.value.code == 1008
        assert closed.value.reason in {"token_revoked", "session_revoked"}
        assert time.monotonic() - started < 5


def test_ssot_check_passes_on_the_examples(capsys: pytest.CaptureFixture[str]) -> None:
    status = main(["ssot-check", str(EXAMPLES), "--allow", os.devnull])  # no exceptions
    assert status == 0, capsys.readouterr().out
