"""The Fooocus API as an App extension: builds the job system and mounts its routes."""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Callable

from aiohttp import web

from server.jobs import JobStore, WebhookSender

from .jobs import FooocusJobs, Planner
from .outputs import OutputStore
from .routes import FooocusRoutes
from .validation import Vocabulary

log = logging.getLogger(__name__)


class FooocusAPI:
    def __init__(self, app, planner: Planner, *, vocabulary: Callable[[], Vocabulary],
                 style_names: Callable[[], list[str]], sampler_nodes: Callable[[str | None], bool] = lambda n: True,
                 webhook_options: dict | None = None) -> None:
        config = app.config
        self.app = app
        database = Path(config.database) if config.database else Path(config.output_dir) / "jobs.sqlite3"
        database.parent.mkdir(parents=True, exist_ok=True)
        self.store = JobStore(database)
        self.outputs = OutputStore(config.output_dir, config.public_base_url)
        self.webhooks = WebhookSender(on_outcome=self._webhook_outcome, **(webhook_options or {}))
        self.jobs = FooocusJobs(store=self.store, queue=app.queue, outputs=self.outputs, webhooks=self.webhooks,
                                planner=planner, interrupt=app.interrupt, queue_size=config.queue_size,
                                queue_history=config.queue_history, webhook_url=config.webhook_url,
                                sampler_nodes=sampler_nodes)
        free = None
        if app.services.models is not None:
            free = lambda: app.worker.request_free(True, False)  # noqa: E731
        self.routes = FooocusRoutes(self.jobs, self.outputs, vocabulary, self.list_models, style_names, free)

    def list_models(self) -> dict:
        folders = self.app.folders
        return {"model_filenames": folders.list("checkpoints"), "lora_filenames": folders.list("loras")}

    def _webhook_outcome(self, outcome) -> None:
        record = self.store.get(outcome.job_id)
        if record is not None:
            outcome.apply_to(record)
            self.store.update(record)

    def install(self, web_app: web.Application) -> None:
        for method, path, handler in self.routes.routes():
            web_app.router.add_route(method, path, handler)
        web_app.on_startup.append(self._on_startup)
        web_app.on_cleanup.append(self._on_cleanup)

    async def _on_startup(self, web_app: web.Application) -> None:
        await self.webhooks.start()
        self.jobs.recover()

    async def _on_cleanup(self, web_app: web.Application) -> None:
        await self.webhooks.stop()
        self.store.close()
