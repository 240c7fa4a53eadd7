"""Everything one simulator instance remembers, shared by its route handlers."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from service.simulator.catalog import Catalog
from service.simulator.config import SimulatorConfig
from service.simulator.faults import Faults
from service.simulator.files import FileStore
from service.simulator.jobs import JobStore
from service.simulator.recorder import Recorder
from service.simulator.webhooks import WebhookSender


class Simulator:
    """The state behind one app: models, files, jobs, faults, and what was received."""

    def __init__(self, config: SimulatorConfig) -> None:
        self.config = config
        self.catalog = Catalog(strict_fine_tuned=config.strict_fine_tuned_models)
        self.recorder = Recorder(config.recent_requests)
        self.faults = Faults(config)
        self._own_dir = config.data_dir is None
        self.data_dir = (
            Path(tempfile.mkdtemp(prefix="farebox-sim-"))
            if self._own_dir
            else Path(config.data_dir)
        )
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.files = FileStore(self.data_dir)
        self.webhooks = WebhookSender(config)
        self.jobs = JobStore(config, self.catalog, self.files, self.webhooks)

    async def close(self) -> None:
        await self.jobs.close()
        await self.webhooks.close()
        if self._own_dir:
            shutil.rmtree(self.data_dir, ignore_errors=True)
