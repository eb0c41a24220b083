"""Settings parsing and the production guard: each weak setting is refused on its own."""

from __future__ import annotations

import itertools
import secrets
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from auth_service.errors import ConfigurationError
from auth_service.production import ensure_production_ready, production_problems, secret_weakness
from auth_service.settings import Settings, default_secrets_dir

STRONG = secrets.token_urlsafe(64)
ALPHABET = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ_-"
GOOD_PRODUCTION: dict[str, Any] = {
    "environment": "production",
    "database_url": "postgresql+asyncpg://auth@db/auth",
    "redis_url": "rediss://auth@redis.internal:6380/0",
    "issuer": "https://auth.example.com",
    "key_encryption_secret": STRONG,
    "cors_origins": "https://app.example.com",
    "mail_backend": "smtp",
    "smtp_username": "auth",
    "smtp_starttls": True,
    "password_reset_url": "https://app.example.com/reset",
    "email_verification_url": "https://app.example.com/verify",
    "invitation_url": "https://app.example.com/invite",
}


def _settings(**values: Any) -> Settings:
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


def test_defaults_match_the_contract() -> None:
    settings = _settings()
    assert settings.environment == "development"
    assert settings.is_sqlite and settings.sqlite_path is not None
    assert settings.redis_url is None
    assert (settings.access_token_ttl_seconds, settings.refresh_token_ttl_seconds) == (900, 2592000)
    assert (settings.mfa_token_ttl_seconds, settings.clock_leeway_seconds) == (300, 10)
    assert settings.refresh_reuse_grace_seconds == 10
    assert settings.key_rotation_interval_hours == 24
    assert settings.scheduler_enabled and settings.registration_open
    assert (settings.login_failure_limit, settings.login_account_failure_limit) == (5, 50)
    assert settings.mail_backend == "log"
    assert settings.allowed_algorithms == ["RS256"]


def test_comma_lists_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AUTH_AUDIENCE", "api-a, api-b,,")
    monkeypatch.setenv("AUTH_CORS_ORIGINS", "https://a.example,https://b.example")
    monkeypatch.setenv("AUTH_TRUSTED_PROXIES", "10.0.0.1")
    settings = _settings()
    assert settings.audience == ["api-a", "api-b"]
    assert settings.cors_origins == ["https://a.example", "https://b.example"]
    assert settings.trusted_proxies == ["10.0.0.1"]


@pytest.mark.parametrize("algorithms", ["none", "HS256", "RS256,HS256", "ES256"])
def test_unsafe_or_unsupported_algorithms_are_refused(algorithms: str) -> None:
    with pytest.raises(ValidationError):
        _settings(allowed_algorithms=algorithms)


@pytest.mark.parametrize("issuer", ["auth.example.com", "ftp://x", ""])
def test_issuer_must_be_a_url(issuer: str) -> None:
    with pytest.raises(ValidationError):
        _settings(issuer=issuer)


def test_issuer_trailing_slash_is_dropped() -> None:
    assert _settings(issuer="https://auth.example.com/").issuer == "https://auth.example.com"


def test_an_empty_audience_is_refused() -> None:
    with pytest.raises(ValidationError):
        _settings(audience="")


def test_good_production_settings_pass() -> None:
    settings = _settings(**GOOD_PRODUCTION)
    assert production_problems(settings) == []
    ensure_production_ready(settings)
    without_login = _settings(**{**GOOD_PRODUCTION, "smtp_username": None})
    assert production_problems(without_login) == []  # STARTTLS without a login is fine


def test_each_new_refusal_names_its_setting_and_why() -> None:
    problems = production_problems(
        _settings(**{**GOOD_PRODUCTION, "mail_backend": "file", "redis_url": None})
    )
    assert problems == [
        "AUTH_REDIS_URL is not set: the in-process store would give each instance its own "
        "revocations, rate limits and locks (set a shared Redis)",
        "AUTH_MAIL_BACKEND is file: reset links would be kept on disk in the clear",
    ]
    (smtp,) = production_problems(_settings(**{**GOOD_PRODUCTION, "smtp_starttls": False}))
    assert smtp == (
        "AUTH_MAIL_BACKEND is smtp without AUTH_SMTP_STARTTLS: reset links (and any SMTP "
        "login) would cross the network in the clear"
    )


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ({"key_encryption_secret": None}, "AUTH_KEY_ENCRYPTION_SECRET is missing"),
        ({"key_encryption_secret": STRONG[:63]}, "63 characters; at least 64"),
        ({"key_encryption_secret": "a" * 90}, "low entropy"),
        ({"key_encryption_secret": "0123456789abcdef" * 5}, "low entropy"),
        ({"key_encryption_secret": ALPHABET}, "low entropy"),
        ({"cors_origins": "https://app.example.com,*"}, "AUTH_CORS_ORIGINS contains '*'"),
        ({"cors_origins": "null"}, "AUTH_CORS_ORIGINS contains '*' or 'null'"),
        ({"trusted_proxies": "*"}, "AUTH_TRUSTED_PROXIES contains '*'"),
        ({"database_url": "sqlite+aiosqlite:///prod.db"}, "SQLite"),
        ({"issuer": "http://auth.example.com"}, "AUTH_ISSUER is not an https URL"),
        ({"password_hash_memory_kib": 8192}, "below OWASP's argon2id minimum"),
        ({"password_hash_time_cost": 1}, "below OWASP's argon2id minimum"),
        ({"mail_backend": "log"}, "reset links would be written to the logs"),
        ({"mail_backend": "file"}, "AUTH_MAIL_BACKEND is file: reset links would be kept on disk"),
        ({"redis_url": None}, "AUTH_REDIS_URL is not set"),
        ({"redis_url": "  "}, "AUTH_REDIS_URL is not set"),
        ({"smtp_starttls": False}, "AUTH_MAIL_BACKEND is smtp without AUTH_SMTP_STARTTLS"),
        (
            {"smtp_starttls": False, "smtp_username": None},
            "AUTH_MAIL_BACKEND is smtp without AUTH_SMTP_STARTTLS",
        ),
        ({"password_reset_url": "http://app.example.com/r"}, "AUTH_PASSWORD_RESET_URL is not"),
        ({"invitation_url": "http://app.example.com/i"}, "AUTH_INVITATION_URL is not"),
        ({"key_decryption_secrets": "short"}, "AUTH_KEY_DECRYPTION_SECRETS holds a weak"),
        ({"metrics_token": "t" * 20}, "AUTH_METRICS_TOKEN is shorter"),
        (
            {"email_verification_url": "http://app.example.com/v"},
            "AUTH_EMAIL_VERIFICATION_URL is not",
        ),
    ],
)
def test_production_refuses_each_weak_setting(override: dict[str, Any], expected: str) -> None:
    settings = _settings(**{**GOOD_PRODUCTION, **override})
    problems = production_problems(settings)
    assert len(problems) == 1 and expected in problems[0]
    with pytest.raises(ConfigurationError) as excinfo:
        ensure_production_ready(settings)
    assert "\n" not in str(excinfo.value) and expected in str(excinfo.value)
    assert STRONG not in str(excinfo.value)


def test_development_is_not_guarded() -> None:
    assert production_problems(_settings(cors_origins="*")) == []


def test_generated_secrets_are_never_called_weak() -> None:
    assert all(secret_weakness(secrets.token_urlsafe(64)) is None for _ in range(500))


def test_missing_secret_names_the_fix() -> None:
    with pytest.raises(ConfigurationError, match="auth-service gen-secret"):
        _settings().secret_value()


def test_readme_documents_every_setting() -> None:
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    missing = [name for name in Settings.model_fields if f"`AUTH_{name.upper()}`" not in readme]
    assert missing == []


def test_env_example_lists_every_setting_with_its_default() -> None:
    lines = (Path(__file__).resolve().parents[1] / ".env.example").read_text().splitlines()
    listed = {}
    for before, line in itertools.pairwise(lines):
        if line.startswith("# AUTH_") and "=" in line:
            name, _, value = line.removeprefix("# AUTH_").partition("=")
            assert before.startswith("# ") and not before.startswith("# AUTH_"), line
            listed[name.lower()] = value
    assert sorted(listed) == sorted(Settings.model_fields)
    for name, field in Settings.model_fields.items():
        default = field.get_default(call_default_factory=True)
        if isinstance(default, bool):
            assert listed[name] == str(default).lower(), name
        elif isinstance(default, int | str) or default is None:
            assert listed[name] == ("" if default is None else str(default)), name


def test_a_secret_file_supplies_a_setting_and_the_environment_wins(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Docker secrets: /run/secrets/auth_key_encryption_secret (here a temp directory)."""
    monkeypatch.delenv("AUTH_KEY_ENCRYPTION_SECRET", raising=False)
    secret = secrets.token_urlsafe(64)
    (tmp_path / "auth_key_encryption_secret").write_text(secret + "\n")
    from_file = Settings(_secrets_dir=tmp_path)  # type: ignore[call-arg]
    assert from_file.secret_value() == secret
    monkeypatch.setenv("AUTH_KEY_ENCRYPTION_SECRET", "e" * 64)
    assert Settings(_secrets_dir=tmp_path).secret_value() == "e" * 64  # type: ignore[call-arg]


def test_the_secrets_directory_comes_from_auth_secrets_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AUTH_SECRETS_DIR", str(tmp_path))
    assert default_secrets_dir() == str(tmp_path)
    monkeypatch.delenv("AUTH_SECRETS_DIR")
    assert default_secrets_dir() in {None, "/run/secrets"}
