"""The ``auth-service`` command, in-process: what an operator types and reads."""

from __future__ import annotations

import logging
import os
import re
import stat
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from sqlalchemy import text

from auth_service.cli import ensure_dev_secret, main
from auth_service.errors import ConfigurationError
from auth_service.settings import Settings
from tests.support.backends import TEST_SECRET
from tests.support.service import Service


@pytest.fixture(autouse=True)
def _isolated(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    """No developer .env or AUTH_* variable leaks into these runs; no log handler outlives
    them (it would write to pytest's closed capture stream)."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("AUTH_KEY_ENCRYPTION_SECRET", "restored-to-absent-after-the-test")
    for name in list(os.environ):
        if name.startswith("AUTH_") and not name.startswith("AUTH_TEST_"):
            monkeypatch.delenv(name)
    yield
    root = logging.getLogger()
    root.handlers[:] = [h for h in root.handlers if h.get_name() != "auth-service"]


def test_gen_secret_prints_86_urlsafe_characters(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["gen-secret"]) == 0
    first = capsys.readouterr().out.strip()
    assert main(["gen-secret"]) == 0
    second = capsys.readouterr().out.strip()
    assert re.fullmatch(r"[A-Za-z0-9_-]{86}", first)
    assert first != second


def test_gen_secret_needs_no_valid_settings(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("AUTH_ACCESS_TOKEN_TTL_SECONDS", "soon")
    assert main(["gen-secret"]) == 0
    assert len(capsys.readouterr().out.strip()) == 86


def test_migrate_creates_the_schema_and_is_idempotent(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("AUTH_DATABASE_URL", f"sqlite+aiosqlite:///{tmp_path}/sub/auth.db")
    assert main(["migrate"]) == 0
    assert main(["migrate"]) == 0
    assert "database is at revision 0005" in capsys.readouterr().out
    assert (tmp_path / "sub" / "auth.db").exists()


async def test_keys_list_shows_both_keys(
    service: Service, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("AUTH_DATABASE_URL", service.container.settings.database_url)
    import asyncio

    assert await asyncio.to_thread(main, ["keys", "list"]) == 0
    out = capsys.readouterr().out
    snapshot = service.container.keyring.snapshot
    assert out.splitlines()[0].split() == [
        "kid",
        "status",
        "alg",
        "created_at",
        "activated_at",
        "expires_at",
    ]
    for kid, key in snapshot.keys.items():
        assert re.search(rf"{re.escape(kid)}\s+{key.status}\s+RS256", out)


async def test_keys_rotate_and_revoke_act_like_the_admin_api(
    service: Service, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import asyncio

    settings = service.container.settings
    monkeypatch.setenv("AUTH_DATABASE_URL", settings.database_url)
    monkeypatch.setenv("AUTH_KEY_ENCRYPTION_SECRET", TEST_SECRET)
    if settings.redis_url:  # the same store, so the running service hears "keys changed"
        monkeypatch.setenv("AUTH_REDIS_URL", settings.redis_url)
        monkeypatch.setenv("AUTH_REDIS_KEY_PREFIX", settings.redis_key_prefix)
    before = service.container.keyring.snapshot
    active = before.signing.kid if before.signing else ""
    upcoming = next(kid for kid, key in before.keys.items() if key.status == "next")
    # The keys were made at the frozen clock's 2026-01-05: long published in real time.
    assert await asyncio.to_thread(main, ["keys", "rotate"]) == 0
    assert capsys.readouterr().out.strip() == (f"rotated: active key {upcoming}, retired {active}")
    assert await asyncio.to_thread(main, ["keys", "revoke", active]) == 0
    assert capsys.readouterr().out.strip() == f"revoked {active}; active key {upcoming}"
    assert await asyncio.to_thread(main, ["keys", "rotate"]) == 2  # the new next is too young
    assert "cannot sign yet" in capsys.readouterr().err
    assert await asyncio.to_thread(main, ["keys", "revoke", "nope"]) == 2
    assert "no signing key has that kid" in capsys.readouterr().err


async def test_a_kid_that_begins_with_a_dash_is_a_kid_not_an_option(
    service: Service, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Thumbprints are base64url: one in 64 begins with "-" (argparse took it for an option)."""
    import asyncio

    monkeypatch.setenv("AUTH_DATABASE_URL", service.container.settings.database_url)
    monkeypatch.setenv("AUTH_KEY_ENCRYPTION_SECRET", TEST_SECRET)
    for argv in (["keys", "revoke", "-JVO5Xaitq3BCpJ4"], ["keys", "revoke", "--", "-JVO5X"]):
        assert await asyncio.to_thread(main, argv) == 2
        assert "no signing key has that kid" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"AUTH_ENVIRONMENT": "production"}, "AUTH_KEY_ENCRYPTION_SECRET is missing"),
        (
            {"AUTH_KEY_ROTATION_INTERVAL_HOURS": "0.05", "AUTH_JWKS_MAX_AGE_SECONDS": "60"},
            "AUTH_JWKS_MAX_AGE_SECONDS (60) must be at most 1/10",
        ),
        (
            {
                "AUTH_ENVIRONMENT": "production",
                "AUTH_KEY_ENCRYPTION_SECRET": TEST_SECRET,
                "AUTH_ISSUER": "https://auth.example.com",
                "AUTH_CORS_ORIGINS": "*",
                "AUTH_DATABASE_URL": "postgresql+asyncpg://x@127.0.0.1:1/x",
            },
            "AUTH_CORS_ORIGINS contains '*'",
        ),
        ({"AUTH_ACCESS_TOKEN_TTL_SECONDS": "soon"}, "AUTH_ACCESS_TOKEN_TTL_SECONDS"),
        (
            {
                "AUTH_KEY_ENCRYPTION_SECRET": TEST_SECRET,
                "AUTH_DATABASE_URL": "sqlite+aiosqlite:///e.db",
            },
            "run `auth-service migrate`",
        ),
        (
            {"AUTH_DATABASE_URL": "postgresql+asyncpg://x@127.0.0.1:1/x"},
            "AUTH_KEY_ENCRYPTION_SECRET is not set",
        ),
    ],
)
def test_serve_refuses_with_one_line(
    env: dict[str, str],
    expected: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert main(["serve", "--port", "1"]) == 2
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert lines[-1].startswith("auth-service: error: ") and expected in lines[-1]
    assert "Traceback" not in err and TEST_SECRET not in err


def test_dev_secret_is_generated_once_in_a_private_file(tmp_path: Path) -> None:
    settings = Settings(  # type: ignore[call-arg]
        _env_file=None, database_url=f"sqlite+aiosqlite:///{tmp_path}/data/auth.db"
    )
    first = ensure_dev_secret(settings)
    secret_file = tmp_path / "data" / "auth.db.key-encryption-secret"
    assert stat.S_IMODE(secret_file.stat().st_mode) == 0o600
    secret = first.secret_value()
    assert len(secret) == 86 and secret_file.read_text().strip() == secret
    assert os.environ["AUTH_KEY_ENCRYPTION_SECRET"] == secret  # inherited by workers
    assert ensure_dev_secret(settings).secret_value() == secret  # reused, not regenerated


def test_dev_secret_is_not_generated_for_postgres_or_production() -> None:
    postgres = Settings(_env_file=None, database_url="postgresql+asyncpg://x@h/d")  # type: ignore[call-arg]
    with pytest.raises(ConfigurationError, match="AUTH_KEY_ENCRYPTION_SECRET is not set"):
        ensure_dev_secret(postgres)
    production = Settings(_env_file=None, environment="production")  # type: ignore[call-arg]
    assert ensure_dev_secret(production) is production


def test_an_explicit_secret_is_kept(make_settings: Callable[..., Settings]) -> None:
    settings = make_settings()
    assert ensure_dev_secret(settings) is settings


@pytest.mark.parametrize("command", [["migrate"], ["keys", "list"]])
def test_unreachable_database_is_one_line(
    command: list[str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("AUTH_DATABASE_URL", "postgresql+asyncpg://x@127.0.0.1:1/x")
    monkeypatch.setenv("AUTH_DB_CONNECT_TIMEOUT_SECONDS", "1")
    assert main(command) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("auth-service: error: ")
    assert "Traceback" not in "\n".join(err)


def test_serve_refuses_several_workers_without_redis(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["serve", "--workers", "2"]) == 2
    assert "--workers > 1 needs AUTH_REDIS_URL" in capsys.readouterr().err


def test_workers_auto_is_the_cpus_this_process_may_run_on(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from auth_service.cli import build_parser

    monkeypatch.setattr(os, "sched_getaffinity", lambda _pid: {3, 5, 7})  # a 3-CPU cpuset
    assert build_parser().parse_args(["serve", "--workers", "auto"]).workers == 3
    assert build_parser().parse_args(["serve", "--workers", "4"]).workers == 4


@pytest.mark.parametrize(
    ("files", "expected"),
    [
        ({"cpu.max": "max 100000\n"}, 3),  # no quota
        ({"cpu.max": "150000 100000\n"}, 2),  # --cpus 1.5 rounds up
        ({"cpu.max": "50000 100000\n"}, 1),
        ({"cpu/cpu.cfs_quota_us": "100000", "cpu/cpu.cfs_period_us": "100000"}, 1),  # v1
        ({"cpu/cpu.cfs_quota_us": "-1", "cpu/cpu.cfs_period_us": "100000"}, 3),
        ({"cpu.max": "garbage"}, 3),
        ({}, 3),
    ],
)
def test_workers_auto_respects_a_cgroup_cpu_quota(
    files: dict[str, str], expected: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On a big host with a small quota, one worker per host CPU would overcommit the quota
    and the database's connections (attack review)."""
    from auth_service.cli import usable_cpus

    for name, content in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(content)
    monkeypatch.setattr(os, "sched_getaffinity", lambda _pid: {0, 1, 2})
    assert usable_cpus(tmp_path) == expected


@pytest.mark.parametrize("value", ["0", "-1", "many"])
def test_a_bad_worker_count_is_a_usage_error(
    value: str, capsys: pytest.CaptureFixture[str]
) -> None:
    from auth_service.cli import build_parser

    with pytest.raises(SystemExit) as exited:
        build_parser().parse_args(["serve", "--workers", value])
    assert exited.value.code == 2
    assert "--workers" in capsys.readouterr().err


@pytest.mark.parametrize("problem", ["world-readable", "symlink", "empty"])
def test_an_unsafe_secret_file_is_refused(tmp_path: Path, problem: str) -> None:
    database = tmp_path / "auth.db"
    secret_file = tmp_path / "auth.db.key-encryption-secret"
    if problem == "symlink":
        target = tmp_path / "elsewhere"
        target.write_text(TEST_SECRET)
        target.chmod(0o600)
        secret_file.symlink_to(target)
    else:
        secret_file.write_text("" if problem == "empty" else TEST_SECRET)
        secret_file.chmod(0o644 if problem == "world-readable" else 0o600)
    settings = Settings(_env_file=None, database_url=f"sqlite+aiosqlite:///{database}")  # type: ignore[call-arg]
    with pytest.raises(ConfigurationError):
        ensure_dev_secret(settings)


async def test_create_admin_and_clients_create(
    service: Service, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import asyncio
    import base64

    _cli_environment(service, monkeypatch)
    monkeypatch.setenv("AUTH_ADMIN_PASSWORD", "an admin passphrase for tests")
    assert await asyncio.to_thread(main, ["create-admin", "--email", "Root@Example.com"]) == 0
    assert "created admin root@example.com" in capsys.readouterr().out
    login = await service.client.post(
        "/auth/login",
        json={"email": "root@example.com", "password": "an admin passphrase for tests"},
    )
    me = await service.client.get(
        "/auth/me", headers={"Authorization": f"Bearer {login.json()['access_token']}"}
    )
    assert me.json()["roles"] == ["admin"]
    # The same email again is refused with one line.
    assert await asyncio.to_thread(main, ["create-admin", "--email", "root@example.com"]) == 2
    assert (
        "auth-service: error: An account with this email already exists." in capsys.readouterr().err
    )

    assert await asyncio.to_thread(main, ["clients", "create", "billing"]) == 0
    lines = dict(line.split("=", 1) for line in capsys.readouterr().out.strip().splitlines())
    assert lines["client_id"].startswith("svc_")
    assert len(lines["client_secret"]) == 43
    basic = base64.b64encode(f"{lines['client_id']}:{lines['client_secret']}".encode()).decode()
    checked = await service.client.post(
        "/validate",
        json={"token": login.json()["access_token"]},
        headers={"Authorization": f"Basic {basic}"},
    )
    assert checked.json()["valid"] is True


async def test_clients_list_and_delete(
    service: Service, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import asyncio

    _cli_environment(service, monkeypatch)
    assert await asyncio.to_thread(main, ["clients", "list"]) == 0
    assert capsys.readouterr().out.strip() == "no clients"
    for name in ("billing", "search"):
        assert await asyncio.to_thread(main, ["clients", "create", name]) == 0
    ids = [
        line.split("=", 1)[1] for line in capsys.readouterr().out.split() if "client_id=" in line
    ]
    assert await asyncio.to_thread(main, ["clients", "list"]) == 0
    listed = [line.split() for line in capsys.readouterr().out.strip().splitlines()]
    assert [(row[0], row[2], row[-1]) for row in listed] == [
        (ids[0], "-", "billing"),
        (ids[1], "-", "search"),
    ]
    assert await asyncio.to_thread(main, ["clients", "delete", ids[0]]) == 0
    assert capsys.readouterr().out.strip() == f"deleted {ids[0]}"
    assert await asyncio.to_thread(main, ["clients", "list"]) == 0
    assert [line.split()[0] for line in capsys.readouterr().out.strip().splitlines()] == [ids[1]]
    assert await asyncio.to_thread(main, ["clients", "delete", ids[0]]) == 2
    assert "auth-service: error: No such client." in capsys.readouterr().err


async def test_clients_create_with_scopes_and_rotate_secret(
    service: Service, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import asyncio

    _cli_environment(service, monkeypatch)
    command = ["clients", "create", "billing", "--scope", "orders:read", "--scope", "revoke"]
    assert await asyncio.to_thread(main, command) == 0
    created = dict(line.split("=", 1) for line in capsys.readouterr().out.split())
    client_id, old = created["client_id"], created["client_secret"]
    assert await asyncio.to_thread(main, ["clients", "list"]) == 0
    assert capsys.readouterr().out.split()[2] == "orders:read,revoke"
    rotate = ["clients", "rotate-secret", client_id, "--overlap-seconds", "0"]
    assert await asyncio.to_thread(main, rotate) == 0
    rotated = dict(line.split("=", 1) for line in capsys.readouterr().out.split())
    assert rotated["client_id"] == client_id and rotated["client_secret"] != old
    assert rotated["previous_secret_expires_at"] == "-"

    async def token_with(secret: str) -> int:
        response = await service.client.post(
            "/oauth/token", data={"grant_type": "client_credentials"}, auth=(client_id, secret)
        )
        return response.status_code

    assert await token_with(rotated["client_secret"]) == 200
    assert await token_with(old) == 401
    bad = ["clients", "rotate-secret", client_id, "--overlap-seconds", "-5"]
    assert await asyncio.to_thread(main, bad) == 2
    assert "overlap_seconds" in capsys.readouterr().err
    assert await asyncio.to_thread(main, ["clients", "create", "x", "--scope", "a b"]) == 2
    assert "scopes" in capsys.readouterr().err


def _cli_environment(service: Service, monkeypatch: pytest.MonkeyPatch) -> None:
    """The CLI on the service's own database and store (as an operator's shell would be)."""
    settings = service.container.settings
    monkeypatch.setenv("AUTH_DATABASE_URL", settings.database_url)
    monkeypatch.setenv("AUTH_KEY_ENCRYPTION_SECRET", settings.secret_value())
    monkeypatch.setenv("AUTH_PASSWORD_HASH_MEMORY_KIB", "8")
    monkeypatch.setenv("AUTH_PASSWORD_HASH_TIME_COST", "1")
    if settings.redis_url is not None:
        monkeypatch.setenv("AUTH_REDIS_URL", settings.redis_url)
        monkeypatch.setenv("AUTH_REDIS_KEY_PREFIX", settings.redis_key_prefix)


async def test_users_disable_and_enable(
    service: Service, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import asyncio

    from tests.support.http import register_and_login

    user = await register_and_login(service, "carol@example.com")
    _cli_environment(service, monkeypatch)
    # Another spelling of the address names the same user (one normalisation).
    assert await asyncio.to_thread(main, ["users", "disable", "CAROL@example.com "]) == 0
    assert "disabled carol@example.com" in capsys.readouterr().out
    # The running instance sees it within a second: through Redis's pub/sub, or, with the
    # in-process store (the CLI's is another process's), by following the database.
    for _ in range(50):
        if (await service.client.get("/auth/me", headers=user.bearer)).status_code == 401:
            break
        await asyncio.sleep(0.02)
    assert (await service.client.get("/auth/me", headers=user.bearer)).status_code == 401
    login = await service.client.post(
        "/auth/login", json={"email": user.email, "password": "correct horse battery staple"}
    )
    assert login.status_code == 403
    assert await asyncio.to_thread(main, ["users", "enable", "carol@example.com"]) == 0
    assert "enabled carol@example.com" in capsys.readouterr().out
    assert await asyncio.to_thread(main, ["users", "disable", "nobody@example.com"]) == 2
    assert "no user has this email" in capsys.readouterr().err


async def test_audit_verify_exits_1_with_the_first_bad_id(
    service: Service, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import asyncio

    _cli_environment(service, monkeypatch)
    for number in range(3):
        await service.container.audit.append("test.cli", subject=str(number))
    assert await asyncio.to_thread(main, ["audit", "verify"]) == 0
    assert "audit chain ok" in capsys.readouterr().out
    async with service.container.engine.begin() as connection:
        await connection.execute(text("UPDATE audit_events SET subject = 'x' WHERE id = 2"))
    assert await asyncio.to_thread(main, ["audit", "verify"]) == 1
    assert "first bad id 2" in capsys.readouterr().out


async def test_keys_rewrap_moves_everything_to_the_new_secret_once(
    service: Service, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import asyncio
    import secrets

    _cli_environment(service, monkeypatch)
    old = service.container.settings.secret_value()
    new = secrets.token_urlsafe(64)
    monkeypatch.setenv("AUTH_KEY_ENCRYPTION_SECRET", new)
    monkeypatch.setenv("AUTH_KEY_DECRYPTION_SECRETS", old)
    assert await asyncio.to_thread(main, ["keys", "rewrap"]) == 0
    assert "rewrapped 2 signing keys" in capsys.readouterr().out
    assert await asyncio.to_thread(main, ["keys", "rewrap"]) == 0
    assert "rewrapped 0 signing keys" in capsys.readouterr().out
    monkeypatch.delenv("AUTH_KEY_DECRYPTION_SECRETS")
    assert await asyncio.to_thread(main, ["audit", "verify"]) == 0  # under the new secret alone
    assert "audit chain ok" in capsys.readouterr().out
    monkeypatch.setenv("AUTH_KEY_ENCRYPTION_SECRET", old)
    assert await asyncio.to_thread(main, ["keys", "rewrap"]) == 2  # the old one opens nothing
    assert "AUTH_KEY_DECRYPTION_SECRETS" in capsys.readouterr().err
