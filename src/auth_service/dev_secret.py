"""The development key-encryption secret: generated once beside the SQLite file (0600)."""

from __future__ import annotations

import logging
import os
import secrets
import stat
from pathlib import Path

from pydantic import SecretStr

from auth_service.errors import ConfigurationError
from auth_service.settings import Settings

log = logging.getLogger("auth_service.cli")

SECRET_FILE_SUFFIX = ".key-encryption-secret"  # noqa: S105  (a file name suffix)


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
