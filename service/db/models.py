"""The tables Farebox keeps in Postgres (or SQLite on the embedded default).

Money columns are BigInteger nano-USD. Timestamps are timezone-aware UTC.
"""

from __future__ import annotations

from datetime import date, datetime, timezone

from sqlalchemy import JSON, BigInteger, Column, DateTime, Index, Integer, UniqueConstraint
from sqlmodel import Field, SQLModel


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def _ts(nullable: bool = False, index: bool = False) -> Column:
    return Column(DateTime(timezone=True), nullable=nullable, index=index)


class Team(SQLModel, table=True):
    __tablename__ = "teams"

    id: str = Field(primary_key=True, max_length=64)
    name: str = Field(unique=True, max_length=200)
    webhook_url: str | None = Field(default=None, max_length=2000)
    validate_training_files: bool = True
    created_at: datetime = Field(default_factory=utcnow, sa_column=_ts())


class ApiKey(SQLModel, table=True):
    __tablename__ = "api_keys"

    id: str = Field(primary_key=True, max_length=64)
    team_id: str = Field(foreign_key="teams.id", index=True, max_length=64)
    name: str = Field(default="", max_length=200)
    prefix: str = Field(max_length=32)
    key_hash: str = Field(unique=True, max_length=128)
    created_at: datetime = Field(default_factory=utcnow, sa_column=_ts())
    expires_at: datetime | None = Field(default=None, sa_column=_ts(nullable=True))
    revoked_at: datetime | None = Field(default=None, sa_column=_ts(nullable=True))


class Budget(SQLModel, table=True):
    __tablename__ = "budgets"

    id: str = Field(primary_key=True, max_length=64)
    team_id: str = Field(foreign_key="teams.id", index=True, max_length=64)
    key_id: str | None = Field(default=None, max_length=64)
    name: str = Field(default="", max_length=200)
    limit_nano: int = Field(sa_column=Column(BigInteger, nullable=False))
    period: str = Field(max_length=16)  # daily | weekly | monthly | total
    timezone: str = Field(default="UTC", max_length=64)
    models: list[str] | None = Field(default=None, sa_column=Column(JSON, nullable=True))
    kind: str | None = Field(default=None, max_length=16)  # inference | training | None
    thresholds: list[int] | None = Field(default=None, sa_column=Column(JSON, nullable=True))
    source: str = Field(default="api", max_length=16)  # api | file
    created_at: datetime = Field(default_factory=utcnow, sa_column=_ts())
    updated_at: datetime = Field(default_factory=utcnow, sa_column=_ts())


class LedgerEntry(SQLModel, table=True):
    """One settled charge. Append-only; request_id makes every write idempotent."""

    __tablename__ = "ledger"
    __table_args__ = (
        Index("ix_ledger_team_started", "team_id", "started_at"),
        Index("ix_ledger_started", "started_at"),
        Index("ix_ledger_job", "job_id"),
    )

    id: int | None = Field(
        default=None,
        sa_column=Column(
            BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
        ),
    )
    request_id: str = Field(unique=True, max_length=64)
    upstream_request_id: str | None = Field(default=None, max_length=128)
    team_id: str = Field(max_length=64)
    key_id: str | None = Field(default=None, max_length=64)
    kind: str = Field(max_length=16)  # inference | training
    endpoint: str = Field(default="", max_length=64)
    model_requested: str = Field(default="", max_length=256)
    model_answered: str | None = Field(default=None, max_length=256)
    base_model: str | None = Field(default=None, max_length=128)
    fine_tuned: bool = False
    priced: bool = True
    prompt_tokens: int = 0
    cached_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0
    trained_tokens: int = Field(default=0, sa_column=Column(BigInteger, nullable=False))
    cost_nano: int = Field(default=0, sa_column=Column(BigInteger, nullable=False))
    input_rate_nano: int | None = Field(default=None, sa_column=Column(BigInteger))
    cached_rate_nano: int | None = Field(default=None, sa_column=Column(BigInteger))
    output_rate_nano: int | None = Field(default=None, sa_column=Column(BigInteger))
    training_rate_nano: int | None = Field(default=None, sa_column=Column(BigInteger))
    catalog_version: str = Field(default="", max_length=64)
    status: str = Field(max_length=32)  # ok | upstream_error | client_disconnected | stream_broken | failed | cancelled
    usage_source: str = Field(default="upstream", max_length=16)  # upstream | tiktoken | none
    http_status: int | None = None
    job_id: str | None = Field(default=None, max_length=128)
    started_at: datetime = Field(sa_column=_ts())
    finished_at: datetime = Field(sa_column=_ts())
    recorded_at: datetime = Field(default_factory=utcnow, sa_column=_ts())
    # Where the charge sat in its team's outbox (a Redis stream id, ms-seq); NULL for charges
    # written straight to the ledger. A counter rebuild sums the rows up to a position it read
    # together with the counter, so charges settled meanwhile are neither lost nor counted twice.
    outbox_ms: int | None = Field(default=None, sa_column=Column(BigInteger))
    outbox_seq: int | None = Field(default=None, sa_column=Column(BigInteger))


class DailyRollup(SQLModel, table=True):
    """Per-day sums of the ledger, kept in the same transaction as the rows they sum."""

    __tablename__ = "ledger_daily"

    day: date = Field(primary_key=True)
    team_id: str = Field(primary_key=True, max_length=64)
    key_id: str = Field(primary_key=True, max_length=64)
    model: str = Field(primary_key=True, max_length=256)
    base_model: str = Field(primary_key=True, max_length=128)
    kind: str = Field(primary_key=True, max_length=16)
    requests: int = Field(default=0, sa_column=Column(BigInteger, nullable=False))
    prompt_tokens: int = Field(default=0, sa_column=Column(BigInteger, nullable=False))
    cached_tokens: int = Field(default=0, sa_column=Column(BigInteger, nullable=False))
    completion_tokens: int = Field(default=0, sa_column=Column(BigInteger, nullable=False))
    trained_tokens: int = Field(default=0, sa_column=Column(BigInteger, nullable=False))
    cost_nano: int = Field(default=0, sa_column=Column(BigInteger, nullable=False))


class TrainingFile(SQLModel, table=True):
    __tablename__ = "files"

    id: str = Field(primary_key=True, max_length=128)  # the upstream file id
    team_id: str = Field(index=True, max_length=64)
    filename: str = Field(default="", max_length=512)
    purpose: str = Field(default="", max_length=64)
    bytes: int = Field(default=0, sa_column=Column(BigInteger, nullable=False))
    examples: int | None = None
    billable_tokens: int | None = Field(default=None, sa_column=Column(BigInteger))
    validated: bool = False
    created_at: datetime = Field(default_factory=utcnow, sa_column=_ts())
    deleted_at: datetime | None = Field(default=None, sa_column=_ts(nullable=True))


class FineTuneJob(SQLModel, table=True):
    __tablename__ = "fine_tuning_jobs"

    id: str = Field(primary_key=True, max_length=128)  # the upstream job id
    team_id: str = Field(index=True, max_length=64)
    key_id: str | None = Field(default=None, max_length=64)
    request_id: str = Field(unique=True, max_length=64)  # reservation and ledger id
    model: str = Field(max_length=256)
    base_model: str | None = Field(default=None, max_length=128)
    training_file: str = Field(max_length=128)
    validation_file: str | None = Field(default=None, max_length=128)
    n_epochs: int | None = None
    estimated_tokens: int | None = Field(default=None, sa_column=Column(BigInteger))
    estimate_nano: int = Field(default=0, sa_column=Column(BigInteger, nullable=False))
    training_rate_nano: int | None = Field(default=None, sa_column=Column(BigInteger))
    catalog_version: str = Field(default="", max_length=64)
    status: str = Field(default="validating_files", max_length=32)
    trained_tokens: int | None = Field(default=None, sa_column=Column(BigInteger))
    fine_tuned_model: str | None = Field(default=None, max_length=256)
    cost_nano: int | None = Field(default=None, sa_column=Column(BigInteger))
    created_at: datetime = Field(default_factory=utcnow, sa_column=_ts())
    finished_at: datetime | None = Field(default=None, sa_column=_ts(nullable=True))
    settled_at: datetime | None = Field(default=None, sa_column=_ts(nullable=True))
    next_poll_at: datetime | None = Field(default=None, sa_column=_ts(nullable=True, index=True))
    poll_failures: int = 0


class OwnedModel(SQLModel, table=True):
    """A fine-tuned model and the team that owns it (from the job that made it)."""

    __tablename__ = "owned_models"

    name: str = Field(primary_key=True, max_length=256)
    team_id: str = Field(index=True, max_length=64)
    job_id: str | None = Field(default=None, max_length=128)
    created_at: datetime = Field(default_factory=utcnow, sa_column=_ts())


class ModelShare(SQLModel, table=True):
    __tablename__ = "model_shares"

    model: str = Field(primary_key=True, max_length=256)
    team_id: str = Field(primary_key=True, max_length=64)
    created_at: datetime = Field(default_factory=utcnow, sa_column=_ts())


class AlertSent(SQLModel, table=True):
    """One budget threshold crossing in one period; the unique key de-duplicates replicas."""

    __tablename__ = "alerts"
    __table_args__ = (UniqueConstraint("budget_id", "period_start", "threshold"),)

    id: int | None = Field(default=None, primary_key=True)
    budget_id: str = Field(max_length=64)
    team_id: str = Field(index=True, max_length=64)
    period_start: datetime = Field(sa_column=_ts())
    threshold: int
    spent_nano: int = Field(sa_column=Column(BigInteger, nullable=False))
    limit_nano: int = Field(sa_column=Column(BigInteger, nullable=False))
    status: str = Field(default="pending", max_length=16)  # pending | delivered | no_webhook | failed
    attempts: int = 0
    last_error: str | None = Field(default=None, max_length=1000)
    created_at: datetime = Field(default_factory=utcnow, sa_column=_ts())
    delivered_at: datetime | None = Field(default=None, sa_column=_ts(nullable=True))
    next_attempt_at: datetime | None = Field(default=None, sa_column=_ts(nullable=True))
