"""Outgoing mail: one ``Mailer`` protocol and three backends chosen by ``AUTH_MAIL_BACKEND``.

``log`` (development) writes each mail to the log, ``file`` appends one JSON object a line
(``{to, subject, text, sent_at}``) and ``smtp`` delivers through a relay. Every backend blocks
only a worker thread, never the event loop. ``send`` may raise; callers that must not reveal
whether an account exists use ``send_quietly``, which logs a failure and returns False.

A mail's text carries secrets (reset links), so it is never part of an error log line, and a
recipient or subject holding CR or LF (header or log injection) is refused by every backend.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import smtplib
import ssl
import threading
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC
from email.message import EmailMessage
from email.utils import format_datetime, formatdate, make_msgid, parseaddr
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from auth_service.clock import Clock
    from auth_service.settings import Settings

log = logging.getLogger("auth_service.mail")

_O_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_O_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
_FILE_FLAGS = os.O_WRONLY | os.O_APPEND | os.O_CREAT | _O_NOFOLLOW | _O_CLOEXEC
_FILE_MODE = 0o600


FollowUp = Callable[[], Awaitable[object]]
"""Work a route schedules to run after its answer is sent (``BackgroundTasks``): mails."""


@dataclass(frozen=True, slots=True)
class MailMessage:
    to: str
    subject: str
    text: str


class Mailer(Protocol):
    async def send(self, message: MailMessage) -> None:
        """Send ``message``; raise on any failure."""
        ...


def _refuse_header_injection(message: MailMessage) -> None:
    for name, value in (("recipient", message.to), ("subject", message.subject)):
        if "\r" in value or "\n" in value:
            raise ValueError(f"mail {name} contains CR or LF (header injection refused)")
    if not message.to.strip():
        raise ValueError("mail recipient is empty")


def _recipient_domain(address: str) -> str:
    """The domain of ``address`` only (the local part identifies the account)."""
    domain = address.rpartition("@")[2] if "@" in address else ""
    printable = "".join(ch for ch in domain if ch.isprintable() and not ch.isspace())
    return printable[:255].lower() or "(no domain)"


_LINK_VALUE = re.compile(r"([?&][A-Za-z_]+=)[^\s&]+")
_ADDRESS = re.compile(r"([^\s@])[^\s@]*@([^\s@]+)")


def redacted(text: str) -> str:
    """``text`` fit for a log line: every link's query values and every address's local part
    (all but its first character) masked."""
    return _ADDRESS.sub(r"\1***@\2", _LINK_VALUE.sub(r"\1[redacted]", text))


class LogMailer:
    """Development backend: logs that a mail was sent, on ``auth_service.mail`` at INFO,
    redacted (``redacted``): no log line carries a link's token or a full address. To read
    the links, use ``AUTH_MAIL_BACKEND=file``. Refused in production."""

    async def send(self, message: MailMessage) -> None:
        _refuse_header_injection(message)
        log.info(
            "mail to %s, subject %s (links redacted; AUTH_MAIL_BACKEND=file keeps them)\n%s",
            redacted(message.to),
            message.subject,
            redacted(message.text),
        )


class FileMailer:
    """Appends one JSON object a line, ``{to, subject, text, sent_at}``, to ``path``.

    The file is created with mode 0600 and a symlink at ``path`` is refused (O_NOFOLLOW). Each
    line is written whole under a lock by one ``os.write`` on an O_APPEND descriptor, so
    concurrent sends never interleave.
    """

    def __init__(self, path: Path, clock: Clock) -> None:
        self._path = Path(path)
        self._clock = clock
        self._lock = threading.Lock()  # held in the worker thread: safe across event loops

    async def send(self, message: MailMessage) -> None:
        _refuse_header_injection(message)
        record = {
            "to": message.to,
            "subject": message.subject,
            "text": message.text,
            "sent_at": self._clock.now().astimezone(UTC).isoformat(),
        }
        line = (json.dumps(record) + "\n").encode("utf-8")
        await asyncio.to_thread(self._append, line)

    def _append(self, line: bytes) -> None:
        with self._lock:
            self._path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self._path, _FILE_FLAGS, _FILE_MODE)
            try:
                view = memoryview(line)
                while view:  # one write in practice; a short write continues under the lock
                    view = view[os.write(fd, view) :]
            finally:
                os.close(fd)


class SmtpMailer:
    """Delivers through ``settings.smtp_host``; STARTTLS (verified) and login when configured."""

    def __init__(self, settings: Settings, clock: Clock | None = None) -> None:
        self._settings = settings
        self._clock = clock
        sender = parseaddr(settings.mail_from)[1]
        self._msgid_domain = sender.rpartition("@")[2] or "localhost"

    async def send(self, message: MailMessage) -> None:
        _refuse_header_injection(message)
        email = self._build(message)
        await asyncio.to_thread(self._deliver, email, message.to)

    def _build(self, message: MailMessage) -> EmailMessage:
        email = EmailMessage()
        email["From"] = self._settings.mail_from
        email["To"] = message.to
        email["Subject"] = message.subject
        email["Date"] = (
            format_datetime(self._clock.now().astimezone(UTC), usegmt=True)
            if self._clock is not None
            else formatdate(usegmt=True)
        )
        # An explicit domain: the default asks socket.getfqdn(), which can block on DNS.
        email["Message-ID"] = make_msgid(domain=self._msgid_domain)
        email.set_content(message.text)
        return email

    def _deliver(self, email: EmailMessage, recipient: str) -> None:
        settings = self._settings
        with smtplib.SMTP(
            settings.smtp_host, settings.smtp_port, timeout=settings.smtp_timeout_seconds
        ) as smtp:
            if settings.smtp_starttls:
                smtp.starttls(context=ssl.create_default_context())
            if settings.smtp_username:
                password = settings.smtp_password
                smtp.login(settings.smtp_username, password.get_secret_value() if password else "")
            # The envelope names exactly this recipient, whatever the To header parses to.
            smtp.send_message(email, to_addrs=[recipient])


def create_mailer(settings: Settings, clock: Clock) -> Mailer:
    """The backend ``settings.mail_backend`` names."""
    if settings.environment == "production" and settings.mail_backend != "smtp":
        log.warning(
            "AUTH_MAIL_BACKEND=%s in production: mail is not delivered and its text (reset "
            "links) is stored in the clear",
            settings.mail_backend,
        )
    if settings.mail_backend == "smtp":
        return SmtpMailer(settings, clock)
    if settings.mail_backend == "file":
        return FileMailer(settings.mail_file_path, clock)
    return LogMailer()


async def send_quietly(mailer: Mailer, message: MailMessage) -> bool:
    """Send ``message``; on failure log the exception type and recipient domain, return False.

    The caller never sees an exception, so a response cannot reveal whether an account exists.
    Cancellation (a BaseException) still propagates.
    """
    try:
        await mailer.send(message)
    except Exception as exc:
        # Neither the text (it holds a reset token) nor str(exc) nor a traceback: they may
        # name the address.
        log.error(
            "sending mail to a recipient at %s failed: %s",
            _recipient_domain(message.to),
            type(exc).__name__,
        )
        return False
    return True
