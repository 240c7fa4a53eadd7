"""Every Farebox setting, read once from the environment (FAREBOX_*) and passed down."""

from __future__ import annotations

import os
from functools import cached_property
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

_SECRET_FIELDS = ("admin_token", "openai_api_key", "key_pepper", "webhook_secret", "database_url", "redis_url")


class Settings(BaseSettings):
    """Farebox configuration. Secrets may also come from files: FAREBOX_<NAME>_FILE."""

    model_config = SettingsConfigDict(env_prefix="FAREBOX_", extra="ignore")

    # Where Farebox listens.
    host: str = "127.0.0.1"
    port: int = 8080
    workers: int = 1

    # Upstream: the real OpenAI API, or the simulated one when no key is given.
    upstream_url: str = "https://api.openai.com/v1"
    openai_api_key: SecretStr | None = None
    openai_organization: str | None = None
    upstream_timeout_s: float = 600.0
    upstream_connect_timeout_s: float = 10.0
    upstream_pool_size: int = 256

    # State.
    database_url: str = "sqlite+aiosqlite:///./farebox.db"
    redis_url: str | None = None
    redis_namespace: str = "fb"
    auto_migrate: bool = True

    # Security.
    admin_token: SecretStr | None = None
    key_pepper: SecretStr = SecretStr("farebox-default-pepper")
    auth_cache_ttl_s: float = 30.0
    auth_fail_limit: int = 20
    auth_fail_window_s: float = 60.0
    max_body_bytes: int = 32 * 1024 * 1024
    max_upload_bytes: int = 8 * 1024 * 1024 * 1024

    # Budgets.
    budget_timezone: str = "UTC"
    fail_open: bool = False
    reservation_ttl_s: int = 900
    budgets_file: Path | None = None
    rebuild_counters_at_start: bool = True

    # Ledger writer.
    ledger_batch_size: int = 500
    ledger_flush_interval_s: float = 0.2

    # Fine-tuning.
    job_poll_interval_s: float = 10.0
    job_poll_max_interval_s: float = 120.0
    webhook_secret: SecretStr | None = None
    spool_dir: Path | None = None

    # Alerts.
    alert_thresholds: list[int] = Field(default_factory=lambda: [50, 80, 100])
    alert_retry_max_s: float = 300.0
    alert_webhook_format: Literal["auto", "slack", "json"] = "auto"

    # Observability.
    log_level: str = "INFO"
    log_format: Literal["json", "console"] = "json"

    # Graceful shutdown.
    drain_grace_s: float = 30.0

    @model_validator(mode="before")
    @classmethod
    def _secrets_from_files(cls, values: dict) -> dict:
        """Let FAREBOX_<SECRET>_FILE name a file holding the secret (Docker/K8s secrets)."""
        for name in _SECRET_FIELDS:
            path = os.environ.get(f"FAREBOX_{name.upper()}_FILE")
            if path and not values.get(name):
                values[name] = Path(path).read_text().strip()
        return values

    @property
    def simulated_upstream(self) -> bool:
        return self.openai_api_key is None

    @cached_property
    def uses_postgres(self) -> bool:
        return self.database_url.startswith("postgresql")
