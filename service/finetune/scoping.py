"""A team sees only its own files and jobs: lookups by owner, and the 404s OpenAI gives for unknown ids.

Another team's object and an object that does not exist answer the same error, so an id
never reveals that it belongs to someone else.
"""

from __future__ import annotations

from sqlalchemy import select

from service.db.models import FineTuneJob, TrainingFile
from service.errors import NotFound
from service.runtime import Runtime


class NoSuchObject(NotFound):
    """OpenAI's own not-found shape: invalid_request_error with no code."""

    code = None


def no_such_file(file_id: str, param: str = "id") -> NoSuchObject:
    return NoSuchObject(f"No such File object: {file_id}", param=param)


def no_such_job(job_id: str) -> NoSuchObject:
    return NoSuchObject(f"No such fine-tuning job: {job_id}", param="fine_tuning_job_id")


async def owned_file(rt: Runtime, team_id: str, file_id: str, *, param: str = "id") -> TrainingFile:
    """The team's live file with this id, or the not-found error."""
    async with rt.sessions() as session:
        row = (
            await session.execute(
                select(TrainingFile).where(
                    TrainingFile.id == file_id,
                    TrainingFile.team_id == team_id,
                    TrainingFile.deleted_at.is_(None),  # type: ignore[union-attr]
                )
            )
        ).scalar_one_or_none()
    if row is None:
        raise no_such_file(file_id, param)
    return row


async def owned_job(rt: Runtime, team_id: str, job_id: str) -> FineTuneJob:
    """The team's job with this id, or the not-found error."""
    async with rt.sessions() as session:
        row = (
            await session.execute(
                select(FineTuneJob).where(FineTuneJob.id == job_id, FineTuneJob.team_id == team_id)
            )
        ).scalar_one_or_none()
    if row is None:
        raise no_such_job(job_id)
    return row
