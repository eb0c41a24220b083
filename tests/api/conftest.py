"""Fixtures of the HTTP tests."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture
def mail_file(tmp_path: Path) -> Path:
    """Where the ``file`` mail backend of a test's app writes (its settings name it)."""
    return tmp_path / "mail.jsonl"
