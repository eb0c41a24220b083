"""Running the real ``auth-service`` command: where it is, and a free port for it."""

from __future__ import annotations

import socket
import sys
from pathlib import Path

BIN = Path(sys.executable).parent / "auth-service"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
