"""The settings every in-process test app starts from."""

from __future__ import annotations

from typing import Any

from auth_service.settings import Settings
from tests.support.backends import REDIS_URL, TEST_SECRET, is_postgres


def suite_settings(database_url: str, redis_prefix: str, /, **overrides: Any) -> Settings:
    """Settings on ``database_url`` and the backend's store under ``redis_prefix``; cheap
    argon2id, no scheduler, per-IP limits lifted; ``overrides`` win."""
    values: dict[str, Any] = {
        "environment": "development",
        "database_url": database_url,
        "redis_url": REDIS_URL if is_postgres() else None,
        "redis_key_prefix": redis_prefix,
        "issuer": "https://auth.example.test",
        "audience": ["api.example.test"],
        "key_encryption_secret": TEST_SECRET,
        "scheduler_enabled": False,
        "password_hash_memory_kib": 8,  # cheap argon2id: tests, not production
        "password_hash_time_cost": 1,
        # Every client of the suite shares one IP: per-IP limits are lifted unless a test
        # sets them (each attack test of a limit sets its own).
        "login_ip_limit": 10_000,
        "register_ip_limit": 10_000,
        "client_auth_failure_limit": 10_000,
    }
    values.update(overrides)
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]
