"""Fixtures of the HTTP tests."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from auth_service.container import Container
from auth_service.settings import Settings
from tests.support.service import Service, started


@pytest.fixture
def mail_file(tmp_path: Path) -> Path:
    """Where the ``file`` mail backend of a test's app writes (its settings name it)."""
    return tmp_path / "mail.jsonl"


@pytest.fixture
async def mailing_service(
    make_container: Callable[..., Container],
    make_settings: Callable[..., Settings],
    mail_file: Path,
) -> AsyncIterator[Service]:
    """The usual started app, with the file mail backend writing to ``mail_file``."""
    settings = make_settings(mail_backend="file", mail_file_path=mail_file)
    async with started(make_container(settings)) as running:
        yield running
