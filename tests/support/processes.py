"""Running the real ``auth-service`` command: where it is, and a free port for it."""

from __future__ import annotations

import os
import socket
import sys
from pathlib import Path

from tests.support.backends import REDIS_URL, TEST_SECRET, is_postgres

BIN = Path(sys.executable).parent / "auth-service"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def served_environment(database_url: str, redis_prefix: str, directory: Path) -> dict[str, str]:
    """The environment of a served ``auth-service``: the backend under test (on embedded, a
    fresh SQLite file in ``directory`` and a generated secret), none of the caller's AUTH_*."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("AUTH_") or k.startswith("AUTH_TEST_")
    }
    env.update(
        AUTH_DATABASE_URL=database_url,
        AUTH_SCHEDULER_ENABLED="false",
        AUTH_REDIS_KEY_PREFIX=redis_prefix,
    )
    if is_postgres():
        env.update(AUTH_REDIS_URL=REDIS_URL, AUTH_KEY_ENCRYPTION_SECRET=TEST_SECRET)
    else:  # the embedded default: the secret is generated beside a fresh SQLite file
        env["AUTH_DATABASE_URL"] = f"sqlite+aiosqlite:///{directory / 'served' / 'auth.db'}"
    return env
