"""A real webhook receiver for the tests, run as its own process:

    python -m tests.support.webhook_receiver PORT RECORD_FILE FAIL_FIRST

Each request is appended to RECORD_FILE as one JSON line (path, headers, body); the first
FAIL_FIRST requests are answered 500, the rest 204.
"""

from __future__ import annotations

import json
import sys
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path


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


if __name__ == "__main__":
    serve(int(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3]))
