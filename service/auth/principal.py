"""Who is calling: a team and one of its keys."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime


@dataclass(frozen=True, slots=True)
class Principal:
    team_id: str
    team_name: str
    key_id: str
    key_hash: str
    expires_at: datetime | None
    validate_training_files: bool = True
