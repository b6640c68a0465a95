"""Settings: one class, read from `SESSION_BROKER_*` environment variables.

Invalid configuration must fail at start with a message naming the setting, so every
cross-field rule lives in a validator here rather than being discovered at request time.
"""

from __future__ import annotations

import difflib
import ipaddress
import os
from collections.abc import Mapping
from enum import StrEnum
from functools import lru_cache
from pathlib import Path
from typing import Any, Self

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

ENV_PREFIX = "SESSION_BROKER_"


class MismatchStatus(StrEnum):
    """What a `Session-Principal` mismatch answers: a missing session (404) or forbidden (403)."""

    not_found = "404"
    forbidden = "403"


class QuotaPolicy(StrEnum):
    """What happens when a create would exceed a quota."""

    reject = "reject"
    evict_oldest_idle = "evict_oldest_idle"


class LogFormat(StrEnum):
    """`json` lines in production, readable `text` locally; `auto` picks json unless stderr is a tty."""

    auto = "auto"
    json = "json"
    text = "text"


class Settings(BaseSettings):
    """Every tunable of the broker. Field names map to `SESSION_BROKER_<NAME>` env vars."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore", frozen=True)

    # --- network -------------------------------------------------------------------------------
    host: str = Field(
        "127.0.0.1", description="bind address; without API keys only a loopback address is allowed"
    )
    port: int = Field(8080, ge=1, le=65535, description="HTTP port")
    workers: int = Field(
        1, ge=1, le=64, description="uvicorn worker processes (metrics aggregate across them)"
    )
    http_max_header_bytes: int = Field(
        65536, ge=1024, le=16 * 1024 * 1024, description="request line and headers, at most (431 past it)"
    )
    http_header_timeout_seconds: float = Field(
        10.0, gt=0, le=600, description="time to send the request line and headers (408 past it)"
    )
    http_body_timeout_seconds: float = Field(
        30.0, gt=0, le=3600, description="time to send a request body once the headers are in (408 past it)"
    )
    http_max_connections: int = Field(
        1024, ge=1, le=1_000_000, description="open connections (and requests) per worker; 503 past it"
    )

    # --- database ------------------------------------------------------------------------------
    database_url: SecretStr | None = Field(
        None, description="`postgresql://user:pass@host:5432/db`; unset: an embedded PostgreSQL in DATA_DIR"
    )
    read_database_url: SecretStr | None = Field(
        None,
        description="a streaming standby for list, stats and admin figures (never get/touch); unset: the "
        "primary serves them",
    )
    read_max_lag_seconds: float = Field(
        5.0,
        gt=0,
        le=3600,
        description="reads go to the primary while the standby is further behind than this (or unreachable)",
    )
    data_dir: Path = Field(
        Path(".session-broker-data"), description="where the embedded PostgreSQL keeps its data"
    )
    auto_migrate: bool | None = Field(
        None, description="migrate to head on `serve`; default: yes for the embedded database only"
    )
    db_pool_min_size: int = Field(1, ge=0, le=1000, description="connections kept open per process")
    db_pool_max_size: int = Field(20, ge=1, le=1000, description="connection cap per process")
    db_connect_timeout_seconds: float = Field(5.0, gt=0, le=300, description="opening a connection")
    db_acquire_timeout_seconds: float = Field(
        5.0, gt=0, le=300, description="waiting for a pooled connection before answering 503"
    )
    db_statement_timeout_seconds: float = Field(
        5.0, gt=0, le=3600, description="client-side statement timeout before answering 503"
    )
    db_deadline_seconds: float = Field(
        5.0,
        gt=0,
        le=300,
        description="total time a request may spend on database work (queueing, connecting, statements) "
        "before it answers 503",
    )
    db_prepared_statements: bool = Field(
        True, description="false for PgBouncer in transaction pooling mode (asyncpg statement cache off)"
    )
    retry_after_seconds: int = Field(2, ge=1, le=3600, description="`Retry-After` on 503 answers")

    # --- auth ----------------------------------------------------------------------------------
    api_keys: SecretStr | None = Field(
        None, description="comma-separated `tenant=key` pairs (keys ≥ 16 chars)"
    )
    api_keys_file: Path | None = Field(
        None, description="file with one `tenant=key` per line (`#` comments), e.g. a mounted Secret"
    )
    admin_api_keys: SecretStr | None = Field(
        None, description="comma-separated admin keys (`name=key` or `key`)"
    )
    principal_mismatch_status: MismatchStatus = Field(
        MismatchStatus.not_found, description="answer to a `Session-Principal` mismatch: `404` or `403`"
    )

    # --- session policy ------------------------------------------------------------------------
    default_idle_timeout_seconds: int = Field(1800, ge=1, description="idle timeout when a create omits it")
    min_idle_timeout_seconds: int = Field(1, ge=1, description="smallest idle timeout a create may ask for")
    max_idle_timeout_seconds: int = Field(
        86400, ge=1, description="largest idle timeout a create may ask for"
    )
    default_max_lifetime_seconds: int = Field(
        28800, ge=1, description="absolute lifetime when a create omits it"
    )
    min_max_lifetime_seconds: int = Field(
        1, ge=1, description="smallest absolute lifetime a create may ask for"
    )
    max_max_lifetime_seconds: int = Field(
        604800, ge=1, description="largest absolute lifetime a create may ask for"
    )
    touch_granularity_seconds: float = Field(
        60.0,
        ge=0,
        le=86400,
        description="a touch writes only if it moves expiry by ≥ min(this, idle timeout / 10); 0: always",
    )
    touch_synchronous_commit: bool = Field(
        False,
        description="a touch waits for its WAL flush (and synchronous standbys); false: it commits "
        "asynchronously, so a database crash can undo the last moments' touches (expiry stays where it was)",
    )
    list_max_page_bytes: int = Field(
        2 * 1024 * 1024,
        ge=1024,
        le=256 * 1024 * 1024,
        description="a list page ends where its sessions' metadata passes this many bytes (at least one "
        "session per page; `next_cursor` continues)",
    )
    list_concurrent_pages: int = Field(
        4, ge=1, le=1000, description="list pages served at once per worker (the others wait their turn)"
    )
    list_concurrent_pages_per_tenant: int = Field(
        1,
        ge=1,
        le=1000,
        description="list pages served at once per worker for one tenant (the tenant's others wait their "
        "turn, within their deadline)",
    )
    max_metadata_bytes: int = Field(
        65536, ge=2, le=16 * 1024 * 1024, description="limit on a session's metadata as JSON (413 past it)"
    )

    # --- lifecycle -----------------------------------------------------------------------------
    tombstone_retention_seconds: int = Field(
        86400,
        ge=0,
        le=90 * 86400,
        description="how long an ended session's reason is remembered (and its id blocked)",
    )
    event_retention_seconds: int = Field(
        86400, ge=60, le=90 * 86400, description="how long lifecycle events stay replayable"
    )
    purge_enabled: bool = Field(True, description="run the purge loop in this process")
    purge_interval_seconds: float = Field(
        1.0,
        gt=0,
        le=86400,
        description="mean pause between purge runs (jittered ±50 %); an expiry is recorded within twice this",
    )
    purge_batch_size: int = Field(5000, ge=1, le=100000, description="rows per purge transaction")
    purge_max_rows_per_second: float = Field(
        25000.0,
        ge=0,
        description="pace a purge run to at most this many deleted rows per second (0: unlimited)",
    )
    purge_max_busy_fraction: float = Field(
        1.0,
        gt=0,
        le=1,
        description="a purge run spends at most this share of its time in statements and rests the rest, so "
        "it backs off when a busy database slows its batches (1: no rest)",
    )
    purge_synchronous_commit: bool = Field(
        False,
        description="each purge batch waits for its WAL flush; false: it commits asynchronously (a database "
        "crash can undo the last batches, which the next run redoes; no event is streamed before its flush)",
    )
    purge_time_budget_seconds: float = Field(
        30.0, gt=0, le=3600, description="a purge run stops after this long"
    )
    expiry_warning_seconds: int = Field(
        0,
        ge=0,
        le=7 * 86400,
        description="a live session this close to its expiry gets one `session.expiring` event; 0: off",
    )
    idempotency_key_retention_seconds: int = Field(
        86400,
        ge=1,
        le=7 * 86400,
        description="how long an `Idempotency-Key` on a create or rotation is remembered",
    )
    stats_refresh_seconds: float = Field(
        15.0, gt=0, le=3600, description="how often one replica recounts live sessions for the fleet gauges"
    )
    quota_policy: QuotaPolicy = Field(
        QuotaPolicy.reject, description="when a quota is full: `reject` (429) or `evict_oldest_idle`"
    )
    max_sessions_per_tenant: int = Field(1_000_000, ge=1, description="live sessions per tenant")
    max_sessions_per_principal: int = Field(10_000, ge=1, description="live sessions per principal")
    max_sessions_per_client: int = Field(100_000, ge=1, description="live sessions per client_id")
    default_max_requests_per_session: int = Field(
        0,
        ge=0,
        le=2**31 - 1,
        description="touches a session may have in its life, when its create omits it; 0: unlimited",
    )
    default_max_requests_per_minute: int = Field(
        0,
        ge=0,
        le=2**31 - 1,
        description="touches per minute a session may have, when its create omits it; 0: unlimited",
    )
    request_limit_sync_seconds: float = Field(
        1.0,
        gt=0,
        le=60,
        description="how often each replica syncs the touches it counted for request limits",
    )
    tenant_quotas: str | None = Field(
        None,
        description='JSON per-tenant overrides, e.g. `{"acme": {"max_sessions_per_principal": 50, '
        '"quota_policy": "evict_oldest_idle", "default_max_requests_per_minute": 600}}`',
    )

    # --- work across replicas (docs/design.md, "Leases", "In-flight work", "Pending requests") -------
    max_lease_ttl_seconds: int = Field(
        300, ge=1, le=86400, description="longest TTL a stream lease may ask for (1 s is the shortest)"
    )
    max_in_flight_ttl_seconds: int = Field(
        300,
        ge=1,
        le=86400,
        description="longest TTL an in-flight mark may ask for: how long a replica that died can keep a "
        "session from idle expiry",
    )
    max_pending_timeout_seconds: int = Field(
        3600, ge=1, le=86400, description="longest deadline a pending server-to-client request may ask for"
    )
    pending_retention_seconds: int = Field(
        300,
        ge=1,
        le=86400,
        description="how long an ended pending request is remembered (a late reply to it is refused "
        "as ended)",
    )
    metrics_top_kinds: int = Field(
        10,
        ge=1,
        le=1000,
        description="session_broker_sessions_live exports each tenant's largest kinds by name, the rest as "
        "`other` (kinds come from clients: the label set stays bounded)",
    )

    # --- logging -------------------------------------------------------------------------------
    log_level: str = Field("INFO", description="CRITICAL, ERROR, WARNING, INFO or DEBUG")
    log_format: LogFormat = Field(
        LogFormat.auto, description="`json`, `text`, or `auto` (json unless a terminal)"
    )

    @field_validator("log_level")
    @classmethod
    def _known_level(cls, value: str) -> str:
        level = value.upper()
        if level not in {"CRITICAL", "ERROR", "WARNING", "INFO", "DEBUG"}:
            raise ValueError("must be one of CRITICAL, ERROR, WARNING, INFO, DEBUG")
        return level

    @field_validator("database_url", "read_database_url")
    @classmethod
    def _postgres_url(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None or not value.get_secret_value().strip():
            return None
        scheme = value.get_secret_value().split("://", 1)[0]
        if scheme not in {"postgresql", "postgres", "postgresql+asyncpg"}:
            raise ValueError("must be a postgresql:// URL")
        return value

    @model_validator(mode="after")
    def _bounds_are_consistent(self) -> Self:
        problems = []
        if (
            not self.min_idle_timeout_seconds
            <= self.default_idle_timeout_seconds
            <= self.max_idle_timeout_seconds
        ):
            problems.append(
                "SESSION_BROKER_DEFAULT_IDLE_TIMEOUT_SECONDS must lie within "
                "SESSION_BROKER_MIN_IDLE_TIMEOUT_SECONDS..SESSION_BROKER_MAX_IDLE_TIMEOUT_SECONDS"
            )
        if (
            not self.min_max_lifetime_seconds
            <= self.default_max_lifetime_seconds
            <= self.max_max_lifetime_seconds
        ):
            problems.append(
                "SESSION_BROKER_DEFAULT_MAX_LIFETIME_SECONDS must lie within "
                "SESSION_BROKER_MIN_MAX_LIFETIME_SECONDS..SESSION_BROKER_MAX_MAX_LIFETIME_SECONDS"
            )
        if self.db_acquire_timeout_seconds > self.db_deadline_seconds:
            problems.append(
                "SESSION_BROKER_DB_ACQUIRE_TIMEOUT_SECONDS must not exceed SESSION_BROKER_DB_DEADLINE_SECONDS"
            )
        if self.db_pool_min_size > self.db_pool_max_size:
            problems.append("SESSION_BROKER_DB_POOL_MIN_SIZE must not exceed SESSION_BROKER_DB_POOL_MAX_SIZE")
        if self.api_keys_file is not None and not self.api_keys_file.is_file():
            problems.append(f"SESSION_BROKER_API_KEYS_FILE: {self.api_keys_file} is not a readable file")
        if problems:
            raise ValueError("; ".join(problems))
        return self

    @property
    def uses_embedded_database(self) -> bool:
        return self.database_url is None

    @property
    def should_auto_migrate(self) -> bool:
        return self.uses_embedded_database if self.auto_migrate is None else self.auto_migrate

    @property
    def binds_loopback_only(self) -> bool:
        if self.host == "localhost":
            return True
        try:
            return ipaddress.ip_address(self.host).is_loopback
        except ValueError:
            return False


class ConfigurationError(Exception):
    """Raised at start when settings are invalid; the message names the offending settings."""


def describe_validation_error(error: ValidationError) -> str:
    """Turn pydantic's error into lines that name the environment variable, not the field."""
    lines = []
    for item in error.errors():
        location = [str(part) for part in item["loc"] if part]
        name = ENV_PREFIX + location[0].upper() if location else "settings"
        message = item["msg"].removeprefix("Value error, ")
        lines.append(f"{name}: {message}")
    return "invalid configuration:\n  " + "\n  ".join(lines)


def setting_variables() -> list[str]:
    """Every environment variable that names a setting."""
    return [ENV_PREFIX + name.upper() for name in Settings.model_fields]


def unknown_variables(environ: Mapping[str, str]) -> list[str]:
    """Lines naming each `SESSION_BROKER_*` variable that is no setting, with the closest real one.

    Settings are matched case-insensitively (as pydantic-settings reads them), so this is too."""
    known = setting_variables()
    problems = []
    for name in sorted(environ):
        upper = name.upper()
        if upper.startswith(ENV_PREFIX) and upper not in known:
            close = difflib.get_close_matches(upper, known, n=1, cutoff=0.6)
            hint = f"; did you mean {close[0]}?" if close else ""
            problems.append(f"{name}: not a setting{hint}")
    return problems


def load_settings(**overrides: Any) -> Settings:
    """Read settings from the environment (plus explicit overrides); raise ConfigurationError, also for
    a `SESSION_BROKER_*` variable that names no setting (a typo must not leave a default in force)."""
    unknown = unknown_variables(os.environ)
    if unknown:
        raise ConfigurationError("invalid configuration:\n  " + "\n  ".join(unknown))
    try:
        return Settings(**overrides)
    except ValidationError as error:
        raise ConfigurationError(describe_validation_error(error)) from None


@lru_cache
def get_settings() -> Settings:
    """Process-wide settings; tests call `get_settings.cache_clear()` after changing the environment."""
    return load_settings()
