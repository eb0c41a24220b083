"""Every setting of the service, read from the environment (prefix ``AUTH_``), ``.env``, and
files in a secrets directory (``default_secrets_dir``; the environment wins).

``production_problems`` is the production guard: in ``AUTH_ENVIRONMENT=production``
the service refuses to start on any problem it lists, one line each.
"""

from __future__ import annotations

import ipaddress
import os
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Literal
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from auth_service.errors import ConfigurationError

CommaList = Annotated[list[str], NoDecode]

MIN_SECRET_LENGTH = 64
OWASP_MEMORY_KIB = 19_456
DEFAULT_SQLITE_PATH = Path("var") / "auth-service.db"
DOCKER_SECRETS_DIR = "/run/secrets"


JWKS_MAX_AGE_FRACTION = 10  # max-age at most a tenth of the rotation interval


def default_secrets_dir() -> str | None:
    """Where files named like a setting (``auth_key_encryption_secret``) supply it when the
    environment does not: ``AUTH_SECRETS_DIR``, else Docker's ``/run/secrets`` if present."""
    configured = os.environ.get("AUTH_SECRETS_DIR")
    if configured:
        return configured
    return DOCKER_SECRETS_DIR if Path(DOCKER_SECRETS_DIR).is_dir() else None


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="AUTH_",
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        secrets_dir=default_secrets_dir(),
    )

    environment: Literal["development", "production"] = "development"
    database_url: str = f"sqlite+aiosqlite:///{DEFAULT_SQLITE_PATH}"
    redis_url: str | None = None
    redis_key_prefix: str = "auth:"
    issuer: str = "http://127.0.0.1:8000"
    audience: CommaList = Field(default_factory=lambda: ["auth-service"])
    key_encryption_secret: SecretStr | None = None
    # Beyond API.md: more secrets that open stored values but never seal (a comma list), for
    # rotating the master secret with no downtime (SECURITY.md, `keys rewrap`).
    key_decryption_secrets: SecretStr | None = None

    access_token_ttl_seconds: int = Field(900, ge=60, le=86_400)
    refresh_token_ttl_seconds: int = Field(2_592_000, ge=300)
    mfa_token_ttl_seconds: int = Field(300, ge=30, le=3600)
    clock_leeway_seconds: int = Field(10, ge=0, le=300)
    refresh_reuse_grace_seconds: int = Field(10, ge=0, le=300)
    key_rotation_interval_hours: float = Field(24, gt=0)
    scheduler_enabled: bool = True
    login_failure_limit: int = Field(5, ge=1)
    login_account_failure_limit: int = Field(50, ge=1)
    login_ip_limit: int = Field(100, ge=1)  # attempts per client IP (or IPv6 /64), all accounts
    register_ip_limit: int = Field(10, ge=1)  # registrations per client IP per hour
    client_auth_failure_limit: int = Field(20, ge=1)  # per client id and per IP per minute
    known_client_days: int = Field(30, ge=0, le=365)  # a past login lets (account, IP) pass
    registration_open: bool = True
    cors_origins: CommaList = Field(default_factory=list)
    # Beyond API.md: browser frontends (docs/design/browser.md).
    cors_max_age_seconds: int = Field(600, ge=0, le=86_400)
    refresh_cookie: bool = False
    refresh_cookie_path: str = Field("/auth", pattern=r"^/(auth/?)?$")
    docs_enabled: bool | None = None  # unset: on in development, off in production
    trusted_proxies: CommaList = Field(default_factory=list)
    mail_backend: Literal["log", "file", "smtp"] = "log"
    mail_file_path: Path = Path("var") / "mail.jsonl"

    totp_issuer_name: str = Field("auth-service", min_length=1, max_length=64)

    # Beyond API.md: mail and the links it carries.
    mail_from: str = "auth-service <no-reply@localhost>"
    password_reset_url: str = "http://localhost:8000/reset-password"  # noqa: S105  (a URL)
    password_reset_ttl_seconds: int = Field(1800, ge=300, le=86_400)
    # Beyond API.md (issue 15): invitations and email verification.
    require_email_verification: bool = False
    email_verification_url: str = "http://localhost:8000/verify-email"
    invitation_url: str = "http://localhost:8000/accept-invitation"
    smtp_host: str = "localhost"
    smtp_port: int = Field(25, ge=1, le=65_535)
    smtp_username: str | None = None
    smtp_password: SecretStr | None = None
    smtp_starttls: bool = False
    smtp_timeout_seconds: float = Field(10, gt=0, le=120)

    # Beyond API.md: the password policy (zxcvbn score 0-4 the password must reach).
    password_min_score: int = Field(3, ge=0, le=4)

    # Beyond API.md: admins must have used a second factor (unset: on in production).
    admin_require_mfa: bool | None = None

    # Beyond API.md: password hashing (argon2id; OWASP minimum m=19 MiB, t=2 in production).
    password_hash_memory_kib: int = Field(19_456, ge=8)
    password_hash_time_cost: int = Field(2, ge=1)
    password_hash_parallelism: int = Field(1, ge=1, le=16)
    # Hashes waiting for a core beyond which a request is refused at once (503 server_busy).
    password_hash_queue_limit: int = Field(32, ge=1)

    # Beyond API.md: signing keys, JWKS and the key cache.
    signing_key_bits: Literal[2048, 3072, 4096] = 2048
    allowed_algorithms: CommaList = Field(default_factory=lambda: ["RS256"])
    jwks_max_age_seconds: int = Field(300, ge=0, le=86_400)
    key_cache_refresh_seconds: int = Field(60, ge=1)
    key_lock_ttl_seconds: int = Field(30, ge=5)
    key_check_interval_seconds: float = Field(60, gt=0, le=3600)
    # The audit chain: events older than this are pruned hourly with a signed checkpoint
    # (0 keeps every event).
    audit_retention_days: int = Field(0, ge=0, le=36_500)
    # How often an idle webhook sender looks for due deliveries.
    webhook_poll_seconds: float = Field(1.0, gt=0, le=60)
    unknown_kid_reload_seconds: float = Field(5, ge=0, le=3600)
    max_request_bytes: int = Field(524_288, ge=1024)
    validation_cache_size: int = Field(100_000, ge=0)
    # The signature cache's bytes (each entry charged an estimate, about 2.8 KB for a user
    # token; docs/design/cache-memory.md), a bound beside the entry count; 0 disables it.
    validation_cache_max_bytes: int = Field(33_554_432, ge=0)
    revocation_mirror: bool = True
    # While Redis cannot answer (a restart, a Sentinel failover), a mirror that was current
    # keeps answering revocation checks from memory this long; 0 fails closed at once.
    revocation_mirror_outage_grace_seconds: float = Field(10, ge=0, le=300)
    # Redis Sentinel: "host:port" of each sentinel, and the monitored master's name. With
    # them, AUTH_REDIS_URL supplies only the database number, credentials and TLS.
    redis_sentinels: CommaList = Field(default_factory=list)
    redis_sentinel_service: str = Field("mymaster", min_length=1, max_length=128)
    # The revocation stream (GET /events/revocations): streams per client per instance, and
    # the interval of its heartbeat comment.
    event_streams_per_client: int = Field(32, ge=1, le=1000)
    event_heartbeat_seconds: float = Field(15, gt=0, le=300)
    client_auth_cache_seconds: int = Field(30, ge=0, le=300)
    log_format: Literal["text", "json"] = "text"
    access_log: bool = True  # one line a request (auth_service/access_log.py), at INFO
    # GET /metrics (Prometheus): served to these networks, or with this bearer token.
    metrics_enabled: bool = True
    metrics_allow: CommaList = Field(default_factory=lambda: ["127.0.0.1/32", "::1/128"])
    metrics_token: SecretStr | None = None
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"

    # Database engine (production pools).
    db_pool_size: int = Field(10, ge=1)
    db_max_overflow: int = Field(20, ge=0)
    db_pool_timeout_seconds: float = Field(10, gt=0)
    db_pool_recycle_seconds: int = Field(1800, ge=-1)
    db_pool_pre_ping: bool = True
    db_connect_timeout_seconds: float = Field(5, gt=0)
    db_statement_timeout_ms: int = Field(15_000, ge=0)
    redis_socket_timeout_seconds: float = Field(2, gt=0)
    # Managed Redis may refuse CONFIG GET: then production starts only if the operator
    # vouches that maxmemory-policy is noeviction.
    redis_assume_noeviction: bool = False

    @field_validator(
        "audience",
        "cors_origins",
        "trusted_proxies",
        "allowed_algorithms",
        "metrics_allow",
        "redis_sentinels",
        mode="before",
    )
    @classmethod
    def _split_commas(cls, value: object) -> object:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @field_validator("metrics_allow")
    @classmethod
    def _networks(cls, value: list[str]) -> list[str]:
        try:
            return [str(ipaddress.ip_network(entry, strict=False)) for entry in value]
        except ValueError:
            raise ValueError(
                "each entry must be an IP network, e.g. 10.0.0.0/8 or ::1/128"
            ) from None

    @field_validator("redis_sentinels")
    @classmethod
    def _host_ports(cls, value: list[str]) -> list[str]:
        for entry in value:
            host, _, port = entry.rpartition(":")
            if not host or not port.isdigit() or not 0 < int(port) < 65_536:
                raise ValueError("each sentinel must be host:port, e.g. sentinel-1:26379")
        return value

    @field_validator("redis_url", "metrics_token", "key_decryption_secrets", mode="before")
    @classmethod
    def _blank_is_unset(cls, value: object) -> object:
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("allowed_algorithms")
    @classmethod
    def _only_asymmetric(cls, value: list[str]) -> list[str]:
        refused = [alg for alg in value if alg.lower() == "none" or alg.upper().startswith("HS")]
        if refused:
            raise ValueError(f"algorithms {refused} are never allowed (none and HMAC are refused)")
        if value != ["RS256"]:
            raise ValueError("only RS256 is supported as a signing algorithm")
        return value

    @field_validator("issuer")
    @classmethod
    def _issuer_is_url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError("the issuer must be an absolute http(s) URL")
        return value.rstrip("/")

    @model_validator(mode="after")
    def _audience_not_empty(self) -> Settings:
        if not self.audience:
            raise ValueError("AUTH_AUDIENCE must name at least one audience")
        return self

    @model_validator(mode="after")
    def _sentinels_need_a_url(self) -> Settings:
        if self.redis_sentinels and self.redis_url is None:
            raise ValueError(
                "AUTH_REDIS_SENTINELS needs AUTH_REDIS_URL too (its database number, password "
                "and TLS are used; its host is not), e.g. redis://:password@redis/0"
            )
        return self

    @model_validator(mode="after")
    def _jwks_cached_well_below_rotation(self) -> Settings:
        # A verifier that caches JWKS for max-age must already hold the key that signs next:
        # it was published a whole interval before, which must dwarf the cache lifetime.
        interval = self.key_rotation_interval_hours * 3600
        if self.jwks_max_age_seconds * JWKS_MAX_AGE_FRACTION > interval:
            raise ValueError(
                f"AUTH_JWKS_MAX_AGE_SECONDS ({self.jwks_max_age_seconds}) must be at most "
                f"1/{JWKS_MAX_AGE_FRACTION} of AUTH_KEY_ROTATION_INTERVAL_HOURS "
                f"({self.key_rotation_interval_hours} h = {interval:.0f} s)"
            )
        return self

    # Derived values ---------------------------------------------------------------
    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")

    @property
    def sqlite_path(self) -> Path | None:
        """The database file for a SQLite URL (None for in-memory or other databases)."""
        if not self.is_sqlite:
            return None
        path = self.database_url.split(":///", 1)[1] if ":///" in self.database_url else ""
        path = path.split("?", 1)[0]
        return None if path in ("", ":memory:") else Path(path)

    @property
    def docs_served(self) -> bool:
        if self.docs_enabled is None:
            return self.environment == "development"
        return self.docs_enabled

    @property
    def admin_mfa_required(self) -> bool:
        if self.admin_require_mfa is None:
            return self.environment == "production"
        return self.admin_require_mfa

    @property
    def access_token_ttl(self) -> timedelta:
        return timedelta(seconds=self.access_token_ttl_seconds)

    @property
    def clock_leeway(self) -> timedelta:
        return timedelta(seconds=self.clock_leeway_seconds)

    @property
    def key_rotation_interval(self) -> timedelta:
        return timedelta(hours=self.key_rotation_interval_hours)

    @property
    def key_cache_refresh(self) -> timedelta:
        return timedelta(seconds=self.key_cache_refresh_seconds)

    @property
    def jwks_max_age(self) -> timedelta:
        return timedelta(seconds=self.jwks_max_age_seconds)

    def secret_value(self) -> str:
        if self.key_encryption_secret is None:
            raise ConfigurationError(
                "AUTH_KEY_ENCRYPTION_SECRET is not set: generate one with "
                "`auth-service gen-secret` and set it in the environment, .env, or a secrets file"
            )
        return self.key_encryption_secret.get_secret_value()

    def secret_values(self) -> list[str]:
        """The secret that seals, then every other one that still opens (in that order)."""
        current = self.secret_value()
        extra = self.key_decryption_secrets
        others = extra.get_secret_value().split(",") if extra is not None else []
        return [current, *(s.strip() for s in others if s.strip() and s.strip() != current)]
