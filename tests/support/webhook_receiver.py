"""A real webhook receiver for the tests, run as its own process:

    python -m tests.support.webhook_receiver PORT RECORD_FILE FAIL_FIRST

Each request is appended to RECORD_FILE as one JSON line (path, headers, body); the first
FAIL_FIRST requests are answered 500, the rest 204.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any

from tests.support.cluster import free_port

ROOT = Path(__file__).resolve().parents[2]


def serve(port: int, record: Path, fail_first: int) -> None:
    seen = 0

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            nonlocal seen
            length = int(self.headers.get("content-length", "0"))
            body = self.rfile.read(length).decode()
            entry = {"path": self.path, "headers": dict(self.headers.items()), "body": body}
            with record.open("a") as out:
                out.write(json.dumps(entry) + "\n")
            seen += 1
            self.send_response(500 if seen <= fail_first else 204)
            self.send_header("content-length", "0")
            self.end_headers()

        def log_message(self, *_args: object) -> None:
            return None

    HTTPServer(("127.0.0.1", port), Handler).serve_forever()


@contextmanager
def receiver(record: Path, fail_first: int, port: int | None = None) -> Iterator[str]:
    """The receiver process on a free port; yields its URL."""
    port = port or free_port()
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tests.support.webhook_receiver",
            str(port),
            str(record),
            str(fail_first),
        ],
        cwd=ROOT,
    )
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with socket.socket() as probe:
                if probe.connect_ex(("127.0.0.1", port)) == 0:
                    break
            time.sleep(0.05)
        yield f"http://127.0.0.1:{port}/hooks/auth"
    finally:
        process.terminate()
        process.wait(timeout=10)


def received(record: Path) -> list[dict[str, Any]]:
    if not record.exists():
        return []
    return [json.loads(line) for line in record.read_text().splitlines()]


if __name__ == "__main__":
    serve(int(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3]))
