"""The ``auth-service`` command: serve, migrate, gen-secret, keys list/rotate/revoke,
create-admin, clients create/list/delete/rotate-secret, users disable/enable.

Every failure an operator can fix prints one line, ``auth-service: error: ...``, and exits 2.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import logging
import math
import os
import socket
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from pydantic import ValidationError
from sqlalchemy.exc import SQLAlchemyError

from auth_service.cli_operations import (
    audit_verify,
    client_delete,
    client_list,
    client_rotate,
    new_client,
    register_admin,
    rewrap_secrets,
    set_disabled,
)
from auth_service.dev_secret import ensure_dev_secret, generate_secret
from auth_service.errors import AuthError, ConfigurationError
from auth_service.logs import configure_logging, logging_config
from auth_service.metrics_files import prepare_multiprocess_metrics
from auth_service.production import ensure_production_ready
from auth_service.settings import Settings

log = logging.getLogger("auth_service.cli")

EXIT_CONFIG = 2

Handler = Callable[[argparse.Namespace], int]  # what a sub-command's ``handler`` default is
Command = Callable[[argparse.Namespace, Settings], int]  # a handler given the settings


async def preflight(settings: Settings) -> None:
    """What start-up will need, checked before uvicorn starts: schema, store, secret."""
    from auth_service.container import check_schema, running
    from auth_service.services.keys import load_snapshot

    async with running(settings) as container:
        await check_schema(container.engine)
        await container.store.ping()
        await load_snapshot(container.rotation.keys)  # opens every key; the cache is unused


def _serve(args: argparse.Namespace, settings: Settings) -> int:
    import uvicorn

    from auth_service.http_protocol import CoalescingHttpToolsProtocol

    if args.workers > 1 and settings.redis_url is None:
        raise ConfigurationError(
            "--workers > 1 needs AUTH_REDIS_URL: the in-process store serves one process only"
        )
    _ensure_port_free(args.host, args.port)  # before migrations, secrets or the scheduler
    settings = ensure_dev_secret(settings)
    ensure_production_ready(settings)
    try:
        asyncio.run(preflight(settings))
    except ConfigurationError:
        raise
    except Exception as exc:
        raise ConfigurationError(f"start-up check failed: {_first_line(exc)}") from exc
    if args.workers > 1 and settings.metrics_enabled:
        prepare_multiprocess_metrics()
    uvicorn.run(
        "auth_service.app:create_app",
        factory=True,
        host=args.host,
        port=args.port,
        workers=args.workers,
        proxy_headers=bool(settings.trusted_proxies),
        forwarded_allow_ips=",".join(settings.trusted_proxies) or None,
        server_header=False,
        http=CoalescingHttpToolsProtocol,  # each answer in one send() (http_protocol.py)
        access_log=False,  # the service writes its own (auth_service/access_log.py)
        log_level=args.log_level,
        # One configuration for uvicorn's lines and ours, in every worker.
        log_config=logging_config(settings.log_level, json_lines=settings.log_format == "json"),
    )
    return 0


def _worker_count(value: str) -> int:
    """``--workers``: a count, or ``auto`` for the CPUs this process may use: its affinity
    mask (taskset, cpusets, container pinning), capped by a cgroup CPU quota (Docker
    ``--cpus``, a Kubernetes CPU limit), not the host's CPU count."""
    if value == "auto":
        return usable_cpus()
    try:
        count = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number or 'auto': {value!r}") from None
    if count < 1:
        raise argparse.ArgumentTypeError("at least 1")
    return count


def usable_cpus(cgroup: Path = Path("/sys/fs/cgroup")) -> int:
    """CPUs in this process's affinity mask, capped by the cgroup's CPU quota (v2 ``cpu.max``,
    or v1 ``cpu.cfs_quota_us``/``cpu.cfs_period_us``), rounded up; at least 1."""
    count = len(os.sched_getaffinity(0))
    quota: float | None = None
    try:
        limit, period = (cgroup / "cpu.max").read_text().split()[:2]
        quota = None if limit == "max" else int(limit) / int(period)
    except (OSError, ValueError):
        try:
            limit_us = int((cgroup / "cpu" / "cpu.cfs_quota_us").read_text())
            period_us = int((cgroup / "cpu" / "cpu.cfs_period_us").read_text())
            quota = limit_us / period_us if limit_us > 0 and period_us > 0 else None
        except (OSError, ValueError):
            quota = None
    if quota is not None and quota > 0:
        count = min(count, math.ceil(quota))
    return max(1, count)


def _gen_secret(_args: argparse.Namespace) -> int:
    print(generate_secret())
    return 0


def _migrate(_args: argparse.Namespace, settings: Settings) -> int:
    from auth_service.db.migrate import head_revision, upgrade_to_head

    upgrade_to_head(settings.database_url)
    print(f"database is at revision {head_revision()}")
    return 0


def _ensure_port_free(host: str, port: int) -> None:
    """``ConfigurationError`` (one line, exit 2) if ``host:port`` cannot be bound."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise ConfigurationError(f"cannot listen on {host}:{port}: {exc.strerror}") from None
    family, kind, proto, _name, address = infos[0]
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds
        try:
            probe.bind(address)
        except OSError as exc:
            raise ConfigurationError(
                f"cannot listen on {host}:{port}: {exc.strerror} (another process has it? "
                "choose one with --port)"
            ) from None


async def _list_keys(settings: Settings) -> list[list[str]]:
    """Only the database: listing needs no secret (a container does), so no container."""
    from auth_service.db.session import Database, create_engine
    from auth_service.services.keys import list_keys

    engine = create_engine(settings)
    try:
        async with Database.on(engine).read() as session:
            rows = await list_keys(session)
    finally:
        await engine.dispose()
    return [
        [
            row.kid,
            row.status,
            row.alg,
            row.created_at.isoformat(),
            row.activated_at.isoformat() if row.activated_at else "-",
            row.expires_at.isoformat() if row.expires_at else "-",
        ]
        for row in rows
    ]


def _keys_list(_args: argparse.Namespace, settings: Settings) -> int:
    rows = asyncio.run(_list_keys(settings))
    header = ["kid", "status", "alg", "created_at", "activated_at", "expires_at"]
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)))
    return 0


async def _change_keys(settings: Settings, kid: str | None = None) -> str:
    """``keys rotate`` / ``keys revoke KID``: the same use cases as the admin API, so the same
    lock, checks and "keys changed" event (running instances reload within a second)."""
    from auth_service.container import running

    async with running(ensure_dev_secret(settings)) as container:
        if kid is not None:
            revoked, active = await container.rotation.revoke(kid)
            return f"revoked {revoked}; active key {active}"
        result = await container.rotation.rotate()
        return f"rotated: active key {result.active_kid}, retired {result.previous_kid}"


def _keys_rotate(_args: argparse.Namespace, settings: Settings) -> int:
    print(asyncio.run(_change_keys(settings)))
    return 0


def _keys_revoke(args: argparse.Namespace, settings: Settings) -> int:
    print(asyncio.run(_change_keys(settings, args.kid)))
    return 0


def _keys_rewrap(_args: argparse.Namespace, settings: Settings) -> int:
    print(asyncio.run(rewrap_secrets(settings)))
    return 0


def _users(args: argparse.Namespace, settings: Settings) -> int:
    print(asyncio.run(set_disabled(settings, args.email, args.users_command)))
    return 0


def _audit_verify(_args: argparse.Namespace, settings: Settings) -> int:
    ok, text = asyncio.run(audit_verify(settings))
    print(text)
    return 0 if ok else 1


def _create_admin(args: argparse.Namespace, settings: Settings) -> int:
    password = os.environ.get("AUTH_ADMIN_PASSWORD") or getpass.getpass("Admin password: ")
    print(asyncio.run(register_admin(settings, args.email, password)))
    return 0


def _create_client(args: argparse.Namespace, settings: Settings) -> int:
    print(asyncio.run(new_client(settings, args.name, args.scope)))
    return 0


def _rotate_client(args: argparse.Namespace, settings: Settings) -> int:
    print(asyncio.run(client_rotate(settings, args.client_id, args.overlap_seconds)))
    return 0


def _list_clients(_args: argparse.Namespace, settings: Settings) -> int:
    print(asyncio.run(client_list(settings)))
    return 0


def _delete_client(args: argparse.Namespace, settings: Settings) -> int:
    print(asyncio.run(client_delete(settings, args.client_id)))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="auth-service", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="serve HTTP with uvicorn")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument(
        "--workers",
        type=_worker_count,
        default=1,
        help="uvicorn worker processes, or 'auto': one per CPU this process may run on",
    )
    serve.add_argument("--log-level", default="info")
    serve.set_defaults(handler=_configured(_serve))
    migrate = commands.add_parser(
        "migrate", help="upgrade the database schema to the newest revision"
    )
    migrate.set_defaults(handler=_configured(_migrate))
    gen_secret = commands.add_parser("gen-secret", help="print a new AUTH_KEY_ENCRYPTION_SECRET")
    gen_secret.set_defaults(handler=_gen_secret)  # needs no settings: works where they are bad
    keys = commands.add_parser("keys", help="signing keys")
    key_commands = keys.add_subparsers(dest="keys_command", required=True)
    listing = key_commands.add_parser("list", help="list every signing key and its status")
    listing.set_defaults(handler=_configured(_keys_list))
    rotate = key_commands.add_parser(
        "rotate", help="promote the next key now (as POST /admin/keys/rotate)"
    )
    rotate.set_defaults(handler=_configured(_keys_rotate))
    revoke = key_commands.add_parser("revoke", help="revoke a key at once (rotates if active)")
    revoke.add_argument("kid")
    revoke.set_defaults(handler=_configured(_keys_revoke))
    rewrap = key_commands.add_parser(
        "rewrap",
        help="seal every private key, TOTP and webhook secret (and MAC the audit chain) under "
        "AUTH_KEY_ENCRYPTION_SECRET, opening them with AUTH_KEY_DECRYPTION_SECRETS",
    )
    rewrap.set_defaults(handler=_configured(_keys_rewrap))
    admin = commands.add_parser("create-admin", help="create a user with the admin role")
    admin.add_argument("--email", required=True)
    admin.set_defaults(handler=_configured(_create_admin))
    clients = commands.add_parser("clients", help="service clients")
    client_commands = clients.add_subparsers(dest="clients_command", required=True)
    create = client_commands.add_parser("create", help="create a client; prints id and secret")
    create.add_argument("name")
    create.add_argument(
        "--scope", action="append", default=[], help="an allowed scope (repeat for more)"
    )
    create.set_defaults(handler=_configured(_create_client))
    rotate_secret = client_commands.add_parser(
        "rotate-secret", help="a new secret; the old one works for --overlap-seconds more"
    )
    rotate_secret.add_argument("client_id")
    rotate_secret.add_argument("--overlap-seconds", type=int, default=86_400)
    rotate_secret.set_defaults(handler=_configured(_rotate_client))
    client_list = client_commands.add_parser("list", help="list the clients (not deleted)")
    client_list.set_defaults(handler=_configured(_list_clients))
    client_delete = client_commands.add_parser(
        "delete", help="delete a client: its secret stops authenticating"
    )
    client_delete.add_argument("client_id")
    client_delete.set_defaults(handler=_configured(_delete_client))
    users = commands.add_parser("users", help="user accounts")
    user_commands = users.add_subparsers(dest="users_command", required=True)
    for verb, text in (
        ("disable", "disable a user: every live token and session stops working at once"),
        ("enable", "enable a disabled user (old tokens stay revoked)"),
    ):
        user = user_commands.add_parser(verb, help=text)
        user.add_argument("email")
        user.set_defaults(handler=_configured(_users))
    audit = commands.add_parser("audit", help="the tamper-evident audit log")
    audit_commands = audit.add_subparsers(dest="audit_command", required=True)
    verify = audit_commands.add_parser(
        "verify", help="check the whole chain; exit 1 and the first bad id when broken"
    )
    verify.set_defaults(handler=_configured(_audit_verify))
    return parser


def _kid_as_operand(argv: list[str]) -> list[str]:
    """A kid is a base64url thumbprint and may begin with "-", which argparse would read as an
    option: ``keys revoke -AbC…`` is parsed as ``keys revoke -- -AbC…``."""
    if argv[:2] == ["keys", "revoke"] and len(argv) == 3 and argv[2] not in ("-h", "--help"):
        return [*argv[:2], "--", argv[2]]
    return argv


def main(argv: Sequence[str] | None = None) -> int:
    raw = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(_kid_as_operand(raw))
    configure_logging("INFO")
    handler: Handler = args.handler
    return handler(args)


def _configured(command: Command) -> Handler:
    """``command`` run with the settings; a failure an operator can fix is one line, exit 2."""

    def handler(args: argparse.Namespace) -> int:
        try:
            settings = Settings()
            configure_logging(settings.log_level, json_lines=settings.log_format == "json")
            return command(args, settings)
        except ValidationError as exc:
            first = exc.errors()[0]
            field = ".".join(str(part) for part in first["loc"])
            where = f"AUTH_{field.upper()}: " if field else ""
            print(f"auth-service: error: {where}{first['msg']}", file=sys.stderr)
        except (ConfigurationError, AuthError) as exc:
            print(f"auth-service: error: {exc}", file=sys.stderr)
        except (SQLAlchemyError, OSError) as exc:
            print(f"auth-service: error: {_first_line(exc)}", file=sys.stderr)
        return EXIT_CONFIG

    return handler


def _first_line(exc: BaseException) -> str:
    """The exception's type and first line: never SQL parameters or a multi-line dump."""
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0][:200]}" if text else type(exc).__name__


def run() -> None:  # pragma: no cover - the console-script entry point
    sys.exit(main())


if __name__ == "__main__":  # pragma: no cover
    run()
