"""Pydantic models of the admin API's bodies and answers."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, HttpUrl, UrlConstraints

WEBHOOK_URL_MAX = 2000  # teams.webhook_url


def _fits_column(url: HttpUrl) -> HttpUrl:
    # Normalising can lengthen a URL (a trailing slash, punycode): check what will be stored.
    if len(str(url)) > WEBHOOK_URL_MAX:
        raise ValueError(f"the webhook URL is longer than {WEBHOOK_URL_MAX} characters")
    return url


WebhookUrl = Annotated[HttpUrl, UrlConstraints(max_length=WEBHOOK_URL_MAX), AfterValidator(_fits_column)]
Period = Literal["daily", "weekly", "monthly", "total"]
Kind = Literal["inference", "training"]


class TeamIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=200, pattern=r"^[A-Za-z0-9][A-Za-z0-9 _.\-]*$")
    webhook_url: WebhookUrl | None = None
    validate_training_files: bool = True


class TeamPatch(BaseModel):
    model_config = ConfigDict(extra="forbid")
    webhook_url: WebhookUrl | None = None
    validate_training_files: bool | None = None


class TeamOut(BaseModel):
    id: str
    name: str
    webhook_url: str | None
    validate_training_files: bool
    created_at: datetime


class KeyIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(default="", max_length=200)
    expires_at: datetime | None = None


class KeyOut(BaseModel):
    id: str
    team_id: str
    name: str
    prefix: str
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None


class NewKeyOut(KeyOut):
    key: str = Field(description="The secret. Shown once: Farebox stores only its hash.")


class BudgetIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(default="", max_length=200)
    limit_usd: Decimal = Field(ge=0, le=Decimal("9000000"), max_digits=21, decimal_places=9)
    period: Period
    timezone: str | None = Field(default=None, max_length=64)
    key_id: str | None = Field(default=None, max_length=64)
    models: list[str] | None = Field(default=None, max_length=100)
    kind: Kind | None = None
    thresholds: list[int] | None = Field(default=None, max_length=10)


class BudgetPatch(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str | None = Field(default=None, max_length=200)
    limit_usd: Decimal | None = Field(default=None, ge=0, le=Decimal("9000000"), max_digits=21, decimal_places=9)
    period: Period | None = None
    timezone: str | None = Field(default=None, max_length=64)
    models: list[str] | None = Field(default=None, max_length=100)
    kind: Kind | None = None
    thresholds: list[int] | None = Field(default=None, max_length=10)


class BudgetOut(BaseModel):
    id: str
    team_id: str
    key_id: str | None
    name: str
    limit_usd: str
    limit_nano: int
    period: str
    timezone: str
    models: list[str] | None
    kind: str | None
    thresholds: list[int]
    source: str


class StandingOut(BaseModel):
    budget_id: str
    name: str
    period: str
    period_start: datetime | None
    period_end: datetime | None
    limit_usd: str
    spent_usd: str
    reserved_usd: str
    remaining_usd: str
    limit_nano: int
    spent_nano: int
    reserved_nano: int
    remaining_nano: int
    utilisation: float


class ShareIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    team_id: str = Field(min_length=1, max_length=64)


class ClaimIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    team_id: str = Field(min_length=1, max_length=64)
