"""The ``auth-service`` command: serve, migrate, gen-secret, keys list/rotate/revoke,
create-admin, clients create/list/delete, users disable/enable.

Every failure an operator can fix prints one line, ``auth-service: error: ...``, and exits 2.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import logging
import os
import secrets
import stat
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from pydantic import SecretStr, ValidationError
from sqlalchemy.exc import SQLAlchemyError

from auth_service.errors import AuthError, ConfigurationError
from auth_service.observability import configure_logging
from auth_service.settings import Settings, ensure_production_ready

log = logging.getLogger("auth_service.cli")

SECRET_FILE_SUFFIX = ".key-encryption-secret"  # noqa: S105  (a file name suffix)
EXIT_CONFIG = 2

Handler = Callable[[argparse.Namespace], int]  # what a sub-command's ``handler`` default is
Command = Callable[[argparse.Namespace, Settings], int]  # a handler given the settings


def generate_secret() -> str:
    """86 URL-safe characters (512 bits) from the OS CSPRNG."""
    return secrets.token_urlsafe(64)


def ensure_dev_secret(settings: Settings) -> Settings:
    """In development with no secret, create one once in a 0600 file beside the SQLite file.

    The secret is exported to this process's environment so uvicorn workers inherit it.
    """
    if settings.key_encryption_secret is not None or settings.environment != "development":
        return settings
    database = settings.sqlite_path
    if database is None:
        raise ConfigurationError(
            "AUTH_KEY_ENCRYPTION_SECRET is not set; a generated one is kept only beside a SQLite "
            "database file. Set it (`auth-service gen-secret`)."
        )
    secret_file = database.with_name(database.name + SECRET_FILE_SUFFIX)
    secret_file.parent.mkdir(parents=True, exist_ok=True)
    try:
        descriptor = os.open(
            secret_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600
        )
    except FileExistsError:
        secret = _read_secret_file(secret_file)
        log.info("using the development key-encryption secret in %s", secret_file)
    else:
        secret = generate_secret()
        with os.fdopen(descriptor, "w") as handle:
            handle.write(secret + "\n")
        log.warning(
            "generated a development key-encryption secret in %s (mode 0600); "
            "back it up: the signing keys cannot be decrypted without it",
            secret_file,
        )
    os.environ["AUTH_KEY_ENCRYPTION_SECRET"] = secret
    return settings.model_copy(update={"key_encryption_secret": SecretStr(secret)})


def _read_secret_file(path: Path) -> str:
    """Read a secret file only if it is a private regular file of ours (no link, no 0644)."""
    try:
        descriptor = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError as exc:
        raise ConfigurationError(f"cannot read {path}: {exc.strerror}") from exc
    with os.fdopen(descriptor) as handle:
        info = os.fstat(handle.fileno())
        if not stat.S_ISREG(info.st_mode) or info.st_uid != os.getuid():
            raise ConfigurationError(f"{path} is not a regular file owned by this user")
        if info.st_mode & 0o077:
            raise ConfigurationError(f"{path} is readable by others: chmod 600 it")
        secret = handle.read().strip()
    if not secret:
        raise ConfigurationError(f"{path} is empty: delete it to generate a new secret")
    return secret


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

    if args.workers > 1 and settings.redis_url is None:
        raise ConfigurationError(
            "--workers > 1 needs AUTH_REDIS_URL: the in-process store serves one process only"
        )
    settings = ensure_dev_secret(settings)
    ensure_production_ready(settings)
    try:
        asyncio.run(preflight(settings))
    except ConfigurationError:
        raise
    except Exception as exc:
        raise ConfigurationError(f"start-up check failed: {_first_line(exc)}") from exc
    uvicorn.run(
        "auth_service.app:create_app",
        factory=True,
        host=args.host,
        port=args.port,
        workers=args.workers,
        proxy_headers=bool(settings.trusted_proxies),
        forwarded_allow_ips=",".join(settings.trusted_proxies) or None,
        server_header=False,
        log_level=args.log_level,
    )
    return 0


def _gen_secret(_args: argparse.Namespace) -> int:
    print(generate_secret())
    return 0


def _migrate(_args: argparse.Namespace, settings: Settings) -> int:
    from auth_service.db.migrate import head_revision, upgrade_to_head

    upgrade_to_head(settings.database_url)
    print(f"database is at revision {head_revision()}")
    return 0


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

    async with running(settings) as container:
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


# Account and client commands run the same use cases as the HTTP API (so the same
# normalisation, policy, revocation entries and events); each returns what to print.


async def _register_admin(settings: Settings, email: str, password: str) -> str:
    from auth_service.container import running

    async with running(ensure_dev_secret(settings)) as container:
        user = await container.accounts.register(
            email=email,
            password=password,
            ip=None,
            roles=["admin"],
            limited=False,
        )
        return f"created admin {user.email} ({user.id})"


async def _set_disabled(settings: Settings, email: str, verb: str) -> str:
    from auth_service.container import running

    async with running(ensure_dev_secret(settings)) as container:
        found = await container.accounts.get_by_email(email)
        if found is None:
            raise ConfigurationError("no user has this email")
        await container.accounts.set_disabled(found.id, verb == "disable")
        return f"{verb}d {found.email} ({found.id})"


async def _new_client(settings: Settings, name: str) -> str:
    from auth_service.container import running

    async with running(ensure_dev_secret(settings)) as container:
        created = await container.clients.create(name=name)
        return f"client_id={created.client.client_id}\nclient_secret={created.client_secret}"


async def _client_list(settings: Settings) -> str:
    from auth_service.container import running

    async with running(ensure_dev_secret(settings)) as container:
        rows = await container.clients.active()
    lines = [f"{row.client_id}  {row.created_at.isoformat()}  {row.name}" for row in rows]
    return "\n".join(lines) or "no clients"


async def _client_delete(settings: Settings, client_id: str) -> str:
    from auth_service.container import running

    async with running(ensure_dev_secret(settings)) as container:
        await container.clients.delete(client_id)
    return f"deleted {client_id}"


def _users(args: argparse.Namespace, settings: Settings) -> int:
    print(asyncio.run(_set_disabled(settings, args.email, args.users_command)))
    return 0


def _create_admin(args: argparse.Namespace, settings: Settings) -> int:
    password = os.environ.get("AUTH_ADMIN_PASSWORD") or getpass.getpass("Admin password: ")
    print(asyncio.run(_register_admin(settings, args.email, password)))
    return 0


def _create_client(args: argparse.Namespace, settings: Settings) -> int:
    print(asyncio.run(_new_client(settings, args.name)))
    return 0


def _list_clients(_args: argparse.Namespace, settings: Settings) -> int:
    print(asyncio.run(_client_list(settings)))
    return 0


def _delete_client(args: argparse.Namespace, settings: Settings) -> int:
    print(asyncio.run(_client_delete(settings, args.client_id)))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="auth-service", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="serve HTTP with uvicorn")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--workers", type=int, default=1)
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
    admin = commands.add_parser("create-admin", help="create a user with the admin role")
    admin.add_argument("--email", required=True)
    admin.set_defaults(handler=_configured(_create_admin))
    clients = commands.add_parser("clients", help="service clients")
    client_commands = clients.add_subparsers(dest="clients_command", required=True)
    create = client_commands.add_parser("create", help="create a client; prints id and secret")
    create.add_argument("name")
    create.set_defaults(handler=_configured(_create_client))
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
