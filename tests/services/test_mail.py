from __future__ import annotations

import asyncio
import base64
import json
import logging
import os
import socket
import socketserver
import stat
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path
from smtplib import SMTPNotSupportedError

import pytest

from auth_service.clock import FrozenClock
from auth_service.services.mail import (
    FileMailer,
    LogMailer,
    Mailer,
    MailMessage,
    SmtpMailer,
    create_mailer,
    send_quietly,
)
from auth_service.settings import Settings
from tests.support.clocks import START

LOGGER = "auth_service.mail"
LOCAL_PART = "alice.liddell"
ADDRESS = f"{LOCAL_PART}@example.com"
TOKEN = "TOKEN-c2VjcmV0LXJlc2V0"
TEXT = f"Reset your password:\nhttps://auth.example.test/reset-password?token={TOKEN}\n"
MESSAGE = MailMessage(to=ADDRESS, subject="Reset your password", text=TEXT)
INJECTED = [
    MailMessage(to=ADDRESS, subject="Hello\r\nBcc: mallory@evil.test", text=TEXT),
    MailMessage(to=ADDRESS, subject="Hello\nBcc: mallory@evil.test", text=TEXT),
    MailMessage(to=f"{ADDRESS}\rBcc: mallory@evil.test", subject="Hello", text=TEXT),
    MailMessage(to=f"{ADDRESS}\nBcc: mallory@evil.test", subject="Hello", text=TEXT),
]


# A minimal SMTP sink ---------------------------------------------------------------------
@dataclass
class Received:
    mail_from: str
    rcpt_to: list[str]
    data: bytes

    def parsed(self) -> EmailMessage:
        parsed = message_from_bytes(self.data, policy=policy.default)
        assert isinstance(parsed, EmailMessage)
        return parsed


@dataclass
class SinkState:
    connections: int = 0
    auth: list[str] = field(default_factory=list)
    received: list[Received] = field(default_factory=list)


class SmtpSink(socketserver.ThreadingTCPServer):
    daemon_threads = True
    block_on_close = False
    allow_reuse_address = True

    def __init__(self, advertise_auth: bool) -> None:
        super().__init__(("127.0.0.1", 0), _SinkHandler)
        self.advertise_auth = advertise_auth
        self.state = SinkState()
        self.lock = threading.Lock()

    @property
    def port(self) -> int:
        return int(self.server_address[1])


class _SinkHandler(socketserver.StreamRequestHandler):
    server: SmtpSink

    def _reply(self, *lines: str) -> None:
        self.wfile.write("".join(f"{line}\r\n" for line in lines).encode("ascii"))
        self.wfile.flush()

    def _read_data(self) -> bytes:
        lines: list[bytes] = []
        while True:
            line = self.rfile.readline()
            if not line or line == b".\r\n":
                return b"".join(lines)
            lines.append(line[1:] if line.startswith(b"..") else line)  # dot-unstuffing

    def handle(self) -> None:
        with self.server.lock:
            self.server.state.connections += 1
        self._reply("220 sink ESMTP")
        mail_from, rcpt_to = "", list[str]()
        while True:
            raw = self.rfile.readline()
            if not raw:
                return
            command = raw.decode("ascii", "replace").rstrip("\r\n")
            verb = command.split(" ", 1)[0].upper()
            if verb == "EHLO":
                self._reply(
                    "250-sink", "250 AUTH PLAIN" if self.server.advertise_auth else "250 OK"
                )
            elif verb == "HELO":
                self._reply("250 sink")
            elif verb == "AUTH":
                with self.server.lock:
                    self.server.state.auth.append(command)
                self._reply("235 2.7.0 accepted")
            elif verb == "MAIL":
                mail_from, rcpt_to = command.split(":", 1)[1].strip(), []
                self._reply("250 OK")
            elif verb == "RCPT":
                rcpt_to.append(command.split(":", 1)[1].strip())
                self._reply("250 OK")
            elif verb == "DATA":
                self._reply("354 end with <CRLF>.<CRLF>")
                received = Received(mail_from, rcpt_to, self._read_data())
                with self.server.lock:
                    self.server.state.received.append(received)
                self._reply("250 OK queued")
            elif verb == "QUIT":
                self._reply("221 bye")
                return
            elif verb in ("RSET", "NOOP"):
                self._reply("250 OK")
            else:
                self._reply("502 not implemented")


def _start_sink(advertise_auth: bool) -> Iterator[SmtpSink]:
    sink = SmtpSink(advertise_auth)
    thread = threading.Thread(target=sink.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield sink
    finally:
        sink.shutdown()
        sink.server_close()
        thread.join(timeout=2)


@pytest.fixture
def smtp_sink() -> Iterator[SmtpSink]:
    yield from _start_sink(advertise_auth=False)


@pytest.fixture
def smtp_auth_sink() -> Iterator[SmtpSink]:
    yield from _start_sink(advertise_auth=True)


@pytest.fixture
def closed_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port  # nothing listens there any more: connecting is refused at once


def smtp_settings(make_settings: Callable[..., Settings], port: int, **extra: object) -> Settings:
    return make_settings(
        mail_backend="smtp",
        mail_from="Auth Service <no-reply@auth.example.test>",
        smtp_host="127.0.0.1",
        smtp_port=port,
        smtp_timeout_seconds=2,
        **extra,
    )


def error_records(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == LOGGER and r.levelno == logging.ERROR]


# File backend ----------------------------------------------------------------------------
async def test_file_backend_writes_exactly_the_four_fields(
    tmp_path: Path, clock: FrozenClock
) -> None:
    path = tmp_path / "mail.jsonl"
    await FileMailer(path, clock).send(MESSAGE)

    lines = path.read_text("utf-8").splitlines()
    assert len(lines) == 1  # the text's newlines are escaped inside the JSON string
    assert json.loads(lines[0]) == {
        "to": ADDRESS,
        "subject": "Reset your password",
        "text": TEXT,
        "sent_at": "2026-01-05T09:00:00+00:00",
    }


async def test_file_backend_appends_across_sends(tmp_path: Path, clock: FrozenClock) -> None:
    path = tmp_path / "mail.jsonl"
    mailer = FileMailer(path, clock)
    await mailer.send(MESSAGE)
    clock.advance(timedelta(minutes=5))
    await mailer.send(MailMessage(to="bob@example.org", subject="Second", text="two"))
    await FileMailer(path, clock).send(MailMessage(to="carol@example.net", subject="3", text=""))

    records = [json.loads(line) for line in path.read_text("utf-8").splitlines()]
    assert [r["to"] for r in records] == [ADDRESS, "bob@example.org", "carol@example.net"]
    assert [r["sent_at"] for r in records] == [
        START.isoformat(),
        (START + timedelta(minutes=5)).isoformat(),
        (START + timedelta(minutes=5)).isoformat(),
    ]


async def test_file_backend_creates_missing_parent_directories(
    tmp_path: Path, clock: FrozenClock
) -> None:
    path = tmp_path / "var" / "spool" / "mail.jsonl"
    await FileMailer(path, clock).send(MESSAGE)
    assert json.loads(path.read_text("utf-8"))["to"] == ADDRESS


async def test_file_backend_creates_the_file_with_mode_0600(
    tmp_path: Path, clock: FrozenClock
) -> None:
    old_umask = os.umask(0o022)  # a usual umask would leave 0644 if the mode were not explicit
    try:
        path = tmp_path / "mail.jsonl"
        await FileMailer(path, clock).send(MESSAGE)
    finally:
        os.umask(old_umask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


async def test_concurrent_sends_never_interleave_lines(tmp_path: Path, clock: FrozenClock) -> None:
    path = tmp_path / "mail.jsonl"
    mailer = FileMailer(path, clock)
    big = "x" * 200_000  # far beyond a pipe buffer: a split write would show
    messages = [
        MailMessage(to=f"user{i}@example.com", subject=f"n{i}", text=f"{i}:{big}")
        for i in range(50)
    ]
    await asyncio.gather(*(mailer.send(m) for m in messages))

    lines = path.read_bytes().split(b"\n")
    assert lines[-1] == b""
    records = [json.loads(line) for line in lines[:-1]]
    assert len(records) == 50
    assert sorted(r["to"] for r in records) == sorted(m.to for m in messages)
    for record in records:
        assert set(record) == {"to", "subject", "text", "sent_at"}
        assert record["text"] == f"{record['subject'][1:]}:{big}"


@pytest.mark.parametrize("dangling", [False, True], ids=["to-a-file", "dangling"])
async def test_a_symlink_at_the_file_path_is_refused(
    tmp_path: Path, clock: FrozenClock, caplog: pytest.LogCaptureFixture, dangling: bool
) -> None:
    target = tmp_path / "elsewhere"
    if not dangling:
        target.write_text("")
    path = tmp_path / "mail.jsonl"
    path.symlink_to(target)
    mailer = FileMailer(path, clock)

    with pytest.raises(OSError):  # noqa: PT011 - O_NOFOLLOW's ELOOP has no narrower type
        await mailer.send(MESSAGE)
    with caplog.at_level(logging.ERROR, logger=LOGGER):
        assert await send_quietly(mailer, MESSAGE) is False

    if dangling:
        assert not target.exists()  # nothing was created through the link
    else:
        assert target.read_text() == ""  # nothing was written through the link
    [record] = error_records(caplog)
    assert "OSError" in record.getMessage()
    assert "example.com" in record.getMessage()


# Log backend -----------------------------------------------------------------------------
async def test_log_backend_logs_the_mail_with_links_and_addresses_redacted(
    caplog: pytest.LogCaptureFixture,
) -> None:
    token = "tok3n-Secret_value"
    message = MailMessage(
        to=ADDRESS,
        subject="Reset your password",
        text=f"Reset {ADDRESS} at https://app.example.com/reset?token={token}&x=1 soon",
    )
    with caplog.at_level(logging.INFO, logger=LOGGER):
        await LogMailer().send(message)

    [record] = [r for r in caplog.records if r.name == LOGGER]
    assert record.levelno == logging.INFO
    logged = record.getMessage()
    assert "Reset your password" in logged
    assert token not in logged and ADDRESS not in logged
    assert "https://app.example.com/reset?token=[redacted]&x=[redacted] soon" in logged
    assert f"{ADDRESS[0]}***@{ADDRESS.split('@')[1]}" in logged


def test_log_backend_docstring_says_it_redacts_and_is_refused_in_production() -> None:
    doc = LogMailer.__doc__ or ""
    assert "redacted" in doc
    assert "Refused in production" in doc


@pytest.mark.parametrize("message", INJECTED)
async def test_log_and_file_backends_refuse_cr_lf_too(
    message: MailMessage, tmp_path: Path, clock: FrozenClock, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "mail.jsonl"
    with caplog.at_level(logging.INFO, logger=LOGGER):
        with pytest.raises(ValueError, match="CR or LF"):
            await LogMailer().send(message)
        with pytest.raises(ValueError, match="CR or LF"):
            await FileMailer(path, clock).send(message)
    assert not [r for r in caplog.records if r.name == LOGGER]
    assert not path.exists()


# Choosing the backend --------------------------------------------------------------------
@pytest.mark.parametrize(
    ("backend", "kind"), [("log", LogMailer), ("file", FileMailer), ("smtp", SmtpMailer)]
)
def test_create_mailer_picks_the_configured_backend(
    make_settings: Callable[..., Settings], clock: FrozenClock, backend: str, kind: type[object]
) -> None:
    mailer = create_mailer(make_settings(mail_backend=backend), clock)
    assert type(mailer) is kind


async def test_create_mailer_file_backend_uses_the_configured_path(
    make_settings: Callable[..., Settings], clock: FrozenClock, tmp_path: Path
) -> None:
    path = tmp_path / "configured" / "mail.jsonl"
    mailer = create_mailer(make_settings(mail_backend="file", mail_file_path=path), clock)
    await mailer.send(MESSAGE)
    assert json.loads(path.read_text("utf-8"))["sent_at"] == START.isoformat()


@pytest.mark.parametrize(("backend", "warned"), [("log", True), ("file", True), ("smtp", False)])
def test_create_mailer_warns_when_production_does_not_deliver_mail(
    make_settings: Callable[..., Settings],
    clock: FrozenClock,
    caplog: pytest.LogCaptureFixture,
    backend: str,
    warned: bool,
) -> None:
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        create_mailer(make_settings(environment="production", mail_backend=backend), clock)
        create_mailer(make_settings(environment="development", mail_backend=backend), clock)
    warnings = [r for r in caplog.records if r.name == LOGGER and r.levelno == logging.WARNING]
    assert len(warnings) == (1 if warned else 0)


# SMTP backend ----------------------------------------------------------------------------
async def test_smtp_delivers_from_to_subject_and_body(
    make_settings: Callable[..., Settings], clock: FrozenClock, smtp_sink: SmtpSink
) -> None:
    mailer = create_mailer(smtp_settings(make_settings, smtp_sink.port), clock)
    await mailer.send(MESSAGE)

    [received] = smtp_sink.state.received
    assert received.mail_from == "<no-reply@auth.example.test>"
    assert received.rcpt_to == [f"<{ADDRESS}>"]
    mail = received.parsed()
    assert mail["From"] == "Auth Service <no-reply@auth.example.test>"
    assert mail["To"] == ADDRESS
    assert mail["Subject"] == "Reset your password"
    assert mail["Date"].datetime == START  # the injected clock, not the system's
    assert mail["Message-ID"].endswith("@auth.example.test>")
    assert mail.get_content().replace("\r\n", "\n") == TEXT  # CRLF on the wire
    assert smtp_sink.state.auth == []  # no username configured: no login


async def test_smtp_logs_in_when_a_username_is_set(
    make_settings: Callable[..., Settings], clock: FrozenClock, smtp_auth_sink: SmtpSink
) -> None:
    settings = smtp_settings(
        make_settings, smtp_auth_sink.port, smtp_username="mailer", smtp_password="hunter2-pw"
    )
    assert await send_quietly(SmtpMailer(settings, clock), MESSAGE) is True

    [auth] = smtp_auth_sink.state.auth
    mechanism, initial = auth.split(" ")[1:]
    assert mechanism == "PLAIN"
    assert base64.b64decode(initial) == b"\0mailer\0hunter2-pw"
    assert len(smtp_auth_sink.state.received) == 1


async def test_smtp_starttls_never_falls_back_to_plaintext(
    make_settings: Callable[..., Settings], clock: FrozenClock, smtp_sink: SmtpSink
) -> None:
    settings = smtp_settings(make_settings, smtp_sink.port, smtp_starttls=True)
    with pytest.raises(SMTPNotSupportedError):  # the sink does not offer STARTTLS
        await SmtpMailer(settings, clock).send(MESSAGE)
    assert smtp_sink.state.connections == 1
    assert smtp_sink.state.received == []


async def test_smtp_server_down_is_logged_without_text_or_local_part(
    make_settings: Callable[..., Settings],
    clock: FrozenClock,
    closed_port: int,
    caplog: pytest.LogCaptureFixture,
) -> None:
    mailer = create_mailer(smtp_settings(make_settings, closed_port), clock)
    with caplog.at_level(logging.DEBUG):
        assert await send_quietly(mailer, MESSAGE) is False

    [record] = error_records(caplog)
    assert "ConnectionRefusedError" in record.getMessage()
    assert "example.com" in record.getMessage()
    assert record.exc_info is None
    assert TOKEN not in caplog.text
    assert LOCAL_PART not in caplog.text


@pytest.mark.parametrize("message", INJECTED)
async def test_smtp_refuses_cr_lf_before_connecting(
    make_settings: Callable[..., Settings],
    clock: FrozenClock,
    smtp_sink: SmtpSink,
    message: MailMessage,
) -> None:
    mailer = create_mailer(smtp_settings(make_settings, smtp_sink.port), clock)
    with pytest.raises(ValueError, match="CR or LF"):
        await mailer.send(message)
    assert await send_quietly(mailer, message) is False
    assert smtp_sink.state.connections == 0
    assert smtp_sink.state.received == []


# send_quietly ----------------------------------------------------------------------------
class _RaisingMailer:
    def __init__(self, error: BaseException) -> None:
        self.error = error

    async def send(self, message: MailMessage) -> None:
        raise self.error


async def test_send_quietly_returns_true_on_success(tmp_path: Path, clock: FrozenClock) -> None:
    path = tmp_path / "mail.jsonl"
    assert await send_quietly(FileMailer(path, clock), MESSAGE) is True
    assert path.exists()


async def test_send_quietly_never_logs_the_exception_message(
    caplog: pytest.LogCaptureFixture,
) -> None:
    mailer: Mailer = _RaisingMailer(RuntimeError(f"550 no such user {ADDRESS} {TOKEN}"))
    with caplog.at_level(logging.DEBUG):
        assert await send_quietly(mailer, MESSAGE) is False
    [record] = error_records(caplog)
    assert "RuntimeError" in record.getMessage()
    assert LOCAL_PART not in caplog.text
    assert TOKEN not in caplog.text


async def test_send_quietly_logs_only_a_sanitised_domain(
    caplog: pytest.LogCaptureFixture,
) -> None:
    mailer: Mailer = _RaisingMailer(RuntimeError("down"))
    with caplog.at_level(logging.ERROR, logger=LOGGER):
        assert await send_quietly(mailer, MailMessage("eve@Evil.Test\nFAKE", "s", "t")) is False
        assert await send_quietly(mailer, MailMessage("no-at-sign", "s", "t")) is False
    first, second = (r.getMessage() for r in error_records(caplog))
    assert "evil.testfake" in first
    assert "\n" not in first
    assert "no-at-sign" not in second


async def test_send_quietly_does_not_swallow_cancellation() -> None:
    with pytest.raises(asyncio.CancelledError):
        await send_quietly(_RaisingMailer(asyncio.CancelledError()), MESSAGE)
