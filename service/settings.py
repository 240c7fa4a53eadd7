"""Every Farebox setting, read once from the environment (FAREBOX_*) and passed down."""

from __future__ import annotations

import os
from functools import cached_property
from pathlib import Path
import ssl
from typing import Literal

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from service.proxy.upstream_pool import Proxy

_SECRET_FIELDS = (
    "admin_token", "openai_api_key", "key_pepper", "webhook_secret", "database_url", "redis_url", "upstream_proxy_url",
)


class Settings(BaseSettings):
    """Farebox configuration. Secrets may also come from files: FAREBOX_<NAME>_FILE."""

    # No error message repeats a value: several hold secrets (a database URL, a proxy password).
    model_config = SettingsConfigDict(env_prefix="FAREBOX_", extra="ignore", hide_input_in_errors=True)

    # Where Farebox listens.
    host: str = "127.0.0.1"
    port: int = 8080
    workers: int = 1
    # With several workers, each listens on a socket of its own (SO_REUSEPORT) so the kernel
    # spreads connections over them; false: one shared socket, as uvicorn does (serve_workers.py).
    reuse_port: bool = True

    # Upstream: the real OpenAI API, or the simulated one when no key is given.
    upstream_url: str = "https://api.openai.com/v1"
    openai_api_key: SecretStr | None = None
    openai_organization: str | None = None
    upstream_timeout_s: float = 600.0
    upstream_connect_timeout_s: float = 10.0
    upstream_pool_size: int = 256
    # An HTTP proxy every upstream connection goes through (a CONNECT tunnel), for networks whose
    # only way out is an egress proxy: http://[user:password@]host:port. Unset: direct.
    upstream_proxy_url: SecretStr | None = None
    # More certificate authorities to trust for the upstream's TLS, besides the system's (a
    # TLS-inspecting proxy's CA, a private gateway): a PEM file.
    upstream_ca_file: Path | None = None

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

    # Ledger writer. Where the outbox is drained into the ledger:
    # - inline: every worker process drains it on its own event loop;
    # - process: `farebox serve` runs one dedicated writer process beside its workers;
    # - external: workers do not drain it; `farebox ledger-writer` runs elsewhere;
    # - auto: process with Redis, inline with the in-process store (whose outbox lives in the worker).
    # Workers always write fail-open charges themselves and drain the outbox when they stop.
    ledger_writer: Literal["auto", "inline", "process", "external"] = "auto"
    ledger_batch_size: int = 500
    ledger_flush_interval_s: float = 0.2
    # The writer process (serve's, or `farebox ledger-writer`) runs under SCHED_IDLE on Linux: it
    # uses only CPU time no request wants, and a request's task preempts it at once. Workers that
    # leave the outbox to it drain it themselves while it holds more than ledger_help_backlog
    # entries (the writer is starved or gone); 0 means never.
    ledger_writer_idle: bool = True
    ledger_help_backlog: int = Field(default=10_000, ge=0)

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

    @model_validator(mode="after")
    def _upstream_proxy_and_ca(self) -> Settings:
        if self.upstream_proxy_url is not None:
            try:
                Proxy.from_url(self.upstream_proxy_url.get_secret_value())
            except ValueError as exc:  # its message never repeats the URL
                raise ValueError(f"FAREBOX_UPSTREAM_PROXY_URL: {exc}") from None
        if self.upstream_ca_file is not None:
            try:
                ssl.create_default_context().load_verify_locations(cafile=str(self.upstream_ca_file))
            except (OSError, ValueError) as exc:  # absent, unreadable, not PEM certificates
                raise ValueError(
                    f"FAREBOX_UPSTREAM_CA_FILE {self.upstream_ca_file} cannot be loaded as PEM certificates: {exc}"
                ) from None
        return self

    @model_validator(mode="after")
    def _writer_needs_redis(self) -> Settings:
        if self.ledger_writer in ("process", "external") and not self.redis_url:
            raise ValueError(
                f"FAREBOX_LEDGER_WRITER={self.ledger_writer} needs FAREBOX_REDIS_URL: without Redis the "
                "outbox lives inside each worker, so only `inline` (or `auto`) can drain it"
            )
        return self

    @property
    def ledger_writer_process(self) -> bool:
        """Whether `farebox serve` starts a dedicated writer process (and tells its workers `external`)."""
        return self.ledger_writer == "process" or (self.ledger_writer == "auto" and bool(self.redis_url))

    @property
    def ledger_writer_inline(self) -> bool:
        """Whether a worker drains the outbox on its own loop: unless told another process does."""
        return self.ledger_writer != "external"

    @property
    def simulated_upstream(self) -> bool:
        return self.openai_api_key is None

    @cached_property
    def uses_postgres(self) -> bool:
        return self.database_url.startswith("postgresql")
