"""The files, fine-tuning and estimate routes, and the job watcher's lifetime (the router's lifespan).

FastAPI nests an included router's lifespan inside the app's, so the watcher starts after the
runtime is ready and stops before it closes; no hook in the shared startup code is needed.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import APIRouter, FastAPI

from service.finetune import estimate_api, files, jobs, webhooks
from service.finetune.model_owners import ModelOwners
from service.finetune.watcher import JobWatcher


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    watcher = JobWatcher(app.state.runtime)
    app.state.job_watcher = watcher
    runtime = app.state.runtime
    runtime.models.resolve = ModelOwners(runtime).claim
    await watcher.start()
    try:
        yield
    finally:
        await watcher.stop()


router = APIRouter(lifespan=lifespan, include_in_schema=False)

# Plain Starlette endpoints, like the inference path: no dependency resolution per request.
_ROUTES = (
    ("/v1/files", files.upload_file, "POST"),
    ("/v1/files", files.list_files, "GET"),
    ("/v1/files/{file_id}", files.retrieve_file, "GET"),
    ("/v1/files/{file_id}", files.delete_file, "DELETE"),
    ("/v1/files/{file_id}/content", files.file_content, "GET"),
    ("/v1/files/{file_id}/estimate", estimate_api.file_estimate, "GET"),
    ("/v1/fine_tuning/jobs", jobs.create_job, "POST"),
    ("/v1/fine_tuning/jobs", jobs.list_jobs, "GET"),
    ("/v1/fine_tuning/jobs/{job_id}", jobs.retrieve_job, "GET"),
    ("/v1/fine_tuning/jobs/{job_id}/cancel", jobs.cancel_job, "POST"),
    ("/v1/fine_tuning/jobs/{job_id}/pause", jobs.pause_job, "POST"),
    ("/v1/fine_tuning/jobs/{job_id}/resume", jobs.resume_job, "POST"),
    ("/v1/fine_tuning/jobs/{job_id}/events", jobs.list_events, "GET"),
    ("/v1/fine_tuning/jobs/{job_id}/checkpoints", jobs.list_checkpoints, "GET"),
    ("/v1/farebox/estimates", estimate_api.create_estimate, "POST"),
    ("/v1/farebox/webhooks/openai", webhooks.receive_webhook, "POST"),
)

for _path, _endpoint, _method in _ROUTES:
    router.add_route(_path, _endpoint, methods=[_method])
