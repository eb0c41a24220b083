"""Fixtures for the browser tests: Debian's chromium driven by Playwright, a served
``auth-service`` in browser mode, and two tiny page servers.

The app page is served from ``http://localhost:<page port>`` (the same site as the service at
``http://localhost:<service port>``, another origin), the foreign page from
``http://127.0.0.1:<port>`` (another site). Both pages live under ``/auth/`` so that a
service cookie with ``Path=/auth`` that were not HttpOnly would show in their
``document.cookie`` (cookies do not isolate by port). What reached the service, which a
refused page cannot see, is read off the service's access log (``BrowserSetup.served_since``).

Without ``/usr/bin/chromium`` the tests skip (fail with ``CI=true``); Playwright's own browser
downloads do not work here, ``scripts/system_setup.sh`` installs Debian's package.
"""

from __future__ import annotations

import re
import subprocess
import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest
import pytest_asyncio
from playwright.async_api import Browser, BrowserContext, async_playwright

from tests.support.backends import (
    IN_CI,
    drop_prefix,
    new_prefix,
    own_database,
)
from tests.support.processes import BIN, free_port, served_environment

CHROMIUM = Path("/usr/bin/chromium")
# As the machine notes say: without the background-networking flags chromium keeps dialling
# Google's hosts, which this machine's closed network refuses.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
PAGE = (Path(__file__).parent / "page.html").read_bytes()
PAGE_PATH = "/auth/page.html"
# The service's access line (access_log.py): ``... auth_service.access: ADDRESS "METHOD
# /route/template" STATUS 1.23ms [request id]``, ``"METHOD unmatched /path"`` for a request
# no route matched (a preflight).
ACCESS_LINE = re.compile(
    r'auth_service\.access: \S+ "(?P<method>[A-Z]+) (?:unmatched )?(?P<path>/\S*)" '
    r"(?P<status>\d{3}) "
)
PASSWORD = "browser-Mode-test-passphrase-7319"


@dataclass(frozen=True)
class BrowserSetup:
    """Where everything is: the service as the browser reaches it, the two page origins."""

    service: str  # http://localhost:<port>: the app page's own site
    direct: str  # http://127.0.0.1:<port>: for httpx, which sends no Origin
    app_origin: str  # http://localhost:<page port>, listed in AUTH_CORS_ORIGINS
    foreign_origin: str  # http://127.0.0.1:<port>, not listed
    email: str
    password: str
    log: Path

    @property
    def app_page(self) -> str:
        return self.app_origin + PAGE_PATH

    @property
    def foreign_page(self) -> str:
        return self.foreign_origin + PAGE_PATH

    def log_mark(self) -> int:
        return self.log.stat().st_size

    def served_since(self, mark: int, expected: int) -> list[tuple[str, str, int]]:
        """(method, path, status) of the requests the service answered since ``mark``, from
        its access log: what reached the service, whatever the page was let read. Waits (2 s
        at most) for ``expected`` lines: they are written within 100 ms of each answer."""
        deadline = time.monotonic() + 2
        while True:
            with self.log.open("rb") as log:
                log.seek(mark)
                text = log.read().decode("utf-8", "replace")
            lines = [
                (found["method"], found["path"], int(found["status"]))
                for found in ACCESS_LINE.finditer(text)
            ]
            if len(lines) >= expected or time.monotonic() > deadline:
                return lines
            time.sleep(0.05)


class _PageHandler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        found = self.path.split("?", 1)[0] == PAGE_PATH
        body = PAGE if found else b"not found\n"
        self.send_response(200 if found else 404)
        self.send_header("Content-Type", "text/html; charset=utf-8" if found else "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass  # quiet: pytest shows nothing of it anyway


@pytest.fixture(scope="session")
def page_servers() -> Iterator[tuple[int, int]]:
    """Two threaded servers of the page on 127.0.0.1: (app port, foreign port)."""
    servers = [ThreadingHTTPServer(("127.0.0.1", 0), _PageHandler) for _ in range(2)]
    threads = [threading.Thread(target=server.serve_forever, daemon=True) for server in servers]
    for thread in threads:
        thread.start()
    try:
        yield servers[0].server_address[1], servers[1].server_address[1]
    finally:
        for server in servers:
            server.shutdown()
            server.server_close()
        for thread in threads:
            thread.join(timeout=5)


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def browser() -> AsyncIterator[Browser]:
    """One headless chromium per module (closed when the file is done); each test gets a
    fresh context (its own cookie jar).

    Playwright's async API, on the session's loop: its sync API keeps a loop running in the
    test's thread, which the suite's async fixtures (``database_url``) then refuse to run in
    ("Runner.run() cannot be called from a running event loop")."""
    if not CHROMIUM.exists():
        message = f"{CHROMIUM} is missing: install Debian's chromium: scripts/system_setup.sh"
        if IN_CI:
            pytest.fail(f"{message} (CI=true: the browser tests fail instead of skipping)")
        pytest.skip(message)
    async with async_playwright() as driver:
        # launch() gives chromium a new empty --user-data-dir of its own (removed on close).
        launched = await driver.chromium.launch(
            executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True
        )
        try:
            yield launched
        finally:
            await launched.close()


@pytest_asyncio.fixture(loop_scope="session")
async def context(browser: Browser) -> AsyncIterator[BrowserContext]:
    opened = await browser.new_context()
    opened.set_default_timeout(10_000)
    try:
        yield opened
    finally:
        await opened.close()


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def served_database(
    migrated_database: str, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[tuple[str, str, Path]]:
    """(database URL, store prefix, directory) of the module's one service: one service for
    the whole file saves a migrate and a start per test; each test has a user of its own."""
    directory = tmp_path_factory.mktemp("browser")
    prefix = new_prefix()
    try:
        async with own_database(migrated_database, directory) as url:
            yield url, prefix, directory
    finally:
        drop_prefix(prefix)


@pytest.fixture(scope="module")
def service(
    served_database: tuple[str, str, Path], page_servers: tuple[int, int]
) -> Iterator[tuple[int, Path]]:
    """``auth-service serve`` in browser mode, the app origin allowed: (port, log)."""
    database_url, prefix, directory = served_database
    port = free_port()
    env = served_environment(database_url, prefix, directory)
    env.update(
        AUTH_ISSUER=f"http://localhost:{port}",
        AUTH_REFRESH_COOKIE="true",
        AUTH_CORS_ORIGINS=f"http://localhost:{page_servers[0]}",
    )
    subprocess.run([BIN, "migrate"], env=env, check=True, capture_output=True, cwd=directory)
    log = directory / "serve.log"
    with log.open("w") as sink:
        process = subprocess.Popen(
            [BIN, "serve", "--host", "127.0.0.1", "--port", str(port)],
            env=env,
            stdout=sink,
            stderr=sink,
            cwd=directory,
        )
    try:
        _wait_ready(process, f"http://127.0.0.1:{port}", log)
        yield port, log
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture
def setup(service: tuple[int, Path], page_servers: tuple[int, int]) -> BrowserSetup:
    """Where everything is, and a user of this test's own, registered over plain HTTP."""
    port, log = service
    direct = f"http://127.0.0.1:{port}"
    email = f"browser-{uuid.uuid4().hex[:10]}@example.com"
    registered = httpx.post(
        f"{direct}/auth/register", json={"email": email, "password": PASSWORD}, timeout=10
    )
    assert registered.status_code == 201, registered.text
    return BrowserSetup(
        service=f"http://localhost:{port}",
        direct=direct,
        app_origin=f"http://localhost:{page_servers[0]}",
        foreign_origin=f"http://127.0.0.1:{page_servers[1]}",
        email=email,
        password=PASSWORD,
        log=log,
    )


def _wait_ready(process: subprocess.Popen[bytes], base: str, log: Path) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        assert process.poll() is None, log.read_text()
        try:
            if httpx.get(f"{base}/health/ready", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    pytest.fail("the service did not become ready:\n" + log.read_text())
