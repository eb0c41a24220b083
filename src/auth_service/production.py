"""The production guard: ``production_problems`` lists, one line each, every reason a
``Settings`` must not serve production traffic; ``ensure_production_ready`` refuses to start
on any of them (``AUTH_ENVIRONMENT=production``)."""

from __future__ import annotations

import itertools
import math
import zlib
from collections import Counter
from urllib.parse import urlsplit

from auth_service.errors import ConfigurationError
from auth_service.settings import MIN_SECRET_LENGTH, OWASP_MEMORY_KIB, Settings


def secret_weakness(secret: str | None) -> str | None:
    """Why ``secret`` is not strong enough to protect the signing keys, or None."""
    if not secret:
        return "AUTH_KEY_ENCRYPTION_SECRET is missing"
    if len(secret) < MIN_SECRET_LENGTH:
        return (
            f"AUTH_KEY_ENCRYPTION_SECRET is {len(secret)} characters; at least "
            f"{MIN_SECRET_LENGTH} are required (use `auth-service gen-secret`)"
        )
    counts = Counter(secret)
    bits_per_char = -sum(n / len(secret) * math.log2(n / len(secret)) for n in counts.values())
    compressed_ratio = len(zlib.compress(secret.encode(), 9)) / len(secret.encode())
    steps = sum(abs(ord(b) - ord(a)) <= 1 for a, b in itertools.pairwise(secret))
    sequential_share = steps / (len(secret) - 1)
    if bits_per_char < 3.5 or len(counts) < 10 or compressed_ratio < 0.6 or sequential_share > 0.5:
        return (
            "AUTH_KEY_ENCRYPTION_SECRET has low entropy (repeated or predictable "
            "characters); use `auth-service gen-secret`"
        )
    return None


def production_problems(settings: Settings) -> list[str]:
    """Each reason, one line, why ``settings`` must not serve production traffic."""
    if settings.environment != "production":
        return []
    problems: list[str] = []
    secret = (
        settings.key_encryption_secret.get_secret_value()
        if settings.key_encryption_secret
        else None
    )
    weakness = secret_weakness(secret)
    if weakness:
        problems.append(weakness)
    extra = settings.key_decryption_secrets
    for other in extra.get_secret_value().split(",") if extra is not None else []:
        if other.strip() and secret_weakness(other.strip()):
            problems.append("AUTH_KEY_DECRYPTION_SECRETS holds a weak secret")
            break
    token = settings.metrics_token
    if token is not None and len(token.get_secret_value()) < 32:
        problems.append("AUTH_METRICS_TOKEN is shorter than 32 characters")
    problems += _cors_problems(settings)
    if any(proxy.strip() == "*" for proxy in settings.trusted_proxies):
        problems.append("AUTH_TRUSTED_PROXIES contains '*': any client could forge its address")
    if settings.is_sqlite:
        problems.append("AUTH_DATABASE_URL is SQLite: production needs PostgreSQL")
    if settings.redis_url is None:
        problems.append(
            "AUTH_REDIS_URL is not set: the in-process store would give each instance its own "
            "revocations, rate limits and locks (set a shared Redis)"
        )
    if urlsplit(settings.issuer).scheme != "https":
        problems.append("AUTH_ISSUER is not an https URL")
    if settings.password_hash_memory_kib < OWASP_MEMORY_KIB or settings.password_hash_time_cost < 2:
        problems.append(
            "AUTH_PASSWORD_HASH_MEMORY_KIB/TIME_COST are below OWASP's argon2id minimum "
            f"(m >= {OWASP_MEMORY_KIB} KiB, t >= 2)"
        )
    problems += _mail_problems(settings)
    for name in ("password_reset_url", "email_verification_url", "invitation_url"):
        if urlsplit(getattr(settings, name)).scheme != "https":
            problems.append(f"AUTH_{name.upper()} is not an https URL")
    return problems


_LOOPBACK_HOSTS = frozenset({"localhost", "127.0.0.1", "::1"})


def _cors_problems(settings: Settings) -> list[str]:
    """Production grants credentials only to exact https origins (or a loopback http one)."""
    problems: list[str] = []
    for origin in settings.cors_origins:
        if origin.strip().lower() in ("*", "null"):
            problems.append(
                "AUTH_CORS_ORIGINS contains '*' or 'null': list the allowed origins explicitly"
            )
            continue
        parts = urlsplit(origin)
        try:
            host, _ = parts.hostname, parts.port  # a port that is not a number raises
        except ValueError:
            host = None
        if parts.scheme == "http" and host is not None and host not in _LOOPBACK_HOSTS:
            problems.append(f"AUTH_CORS_ORIGINS has {origin!r}: only https origins in production")
        elif parts.scheme not in ("http", "https") or parts.path or parts.query or not host:
            problems.append(f"AUTH_CORS_ORIGINS has {origin!r}: an origin is scheme://host[:port]")
    return problems


def _mail_problems(settings: Settings) -> list[str]:
    """Reset links are bearer secrets: never logged, never at rest, never sent in the clear."""
    if settings.mail_backend == "log":
        return ["AUTH_MAIL_BACKEND is log: reset links would be written to the logs"]
    if settings.mail_backend == "file":
        return ["AUTH_MAIL_BACKEND is file: reset links would be kept on disk in the clear"]
    if not settings.smtp_starttls:
        return [
            "AUTH_MAIL_BACKEND is smtp without AUTH_SMTP_STARTTLS: reset links (and any SMTP "
            "login) would cross the network in the clear"
        ]
    return []


def ensure_production_ready(settings: Settings) -> None:
    problems = production_problems(settings)
    if problems:
        raise ConfigurationError("refusing to start in production: " + "; ".join(problems))
