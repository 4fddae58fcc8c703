"""The Fooocus API as an App extension: builds the job system and mounts its routes."""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Callable

from aiohttp import web

from server.jobs import JobStore, WebhookSender

from .docs import install_docs
from .hashes import ModelHashes
from .jobs import FooocusJobs, Planner
from .metadata import EmbeddedMetadata, GenerationRecord, LoraRecord
from .requests import MetaScheme
from .outputs import OutputStore
from .routes import FooocusRoutes
from .validation import Vocabulary

log = logging.getLogger(__name__)


class FooocusImageWriter:
    """What the FooocusSaveImage node calls (through the node services) to write a job's image."""

    def __init__(self, outputs: OutputStore, hashes: ModelHashes | None = None, folders=None) -> None:
        self.outputs = outputs
        self.hashes = hashes
        self.folders = folders

    def save(self, image, *, job_id: str, index: int, extension: str, save_name: str, scheme: str,
             metadata: dict) -> dict:
        embedded = None
        if scheme != "none" and metadata:
            refiner = metadata.get("refiner_model", "None")
            hashes = {"base_model_hash": self._model_hash("checkpoints", metadata.get("base_model")),
                      "refiner_model_hash": self._model_hash("checkpoints", refiner) if refiner != "None" else ""}
            loras = tuple(LoraRecord(name, weight, self._model_hash("loras", name))
                          for name, weight in metadata.get("loras", []))
            record = GenerationRecord(**{**metadata, **hashes, "loras": loras,
                                         "adm_guidance": tuple(metadata.get("adm_guidance", (1.5, 0.8, 0.3))),
                                         "freeu": tuple(metadata["freeu"]) if metadata.get("freeu") else None})
            embedded = EmbeddedMetadata.of(record, MetaScheme(scheme))
        saved = self.outputs.save(image, job_id=job_id, index=index, extension=extension, save_name=save_name,
                                  metadata=embedded)
        day, name = saved.relative_path.split("/", 1)
        return {"fooocus": {"url": saved.url, "path": str(saved.path)},
                "image": {"filename": name, "subfolder": f"files/{day}", "type": "output"}}

    def _model_hash(self, folder: str, name: str | None) -> str:
        """The file's hash prefix; empty when there is no file (or no hasher): metadata never fails a job."""
        if self.hashes is None or self.folders is None or not name:
            return ""
        try:
            return self.hashes.sha256_prefix(self.folders.path(folder, name))
        except OSError as exc:
            log.warning("no hash for %s/%s: %s", folder, name, exc)
            return ""


class FooocusAPI:
    def __init__(self, app, planner: Planner, *, vocabulary: Callable[[], Vocabulary],
                 style_names: Callable[[], list[str]], sampler_nodes: Callable[[str | None], bool] = lambda n: True,
                 webhook_options: dict | None = None, request_params=None, inputs=None) -> None:
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
                                sampler_nodes=sampler_nodes, inputs=inputs)
        free = None
        if app.services.models is not None:
            free = lambda: app.worker.request_free(True, False)  # noqa: E731
        routes_options = {"request_params": request_params} if request_params is not None else {}
        self.routes = FooocusRoutes(self.jobs, self.outputs, vocabulary, self.list_models, style_names, free,
                                    **routes_options)
        self.route_packs: list = [self.routes]  # more packs (image routes, tools) are added by setup
        self.hashes = ModelHashes(Path(config.output_dir) / "model_hashes.json")
        app.services.extras["fooocus_writer"] = FooocusImageWriter(self.outputs, self.hashes, app.folders)

    def list_models(self, refresh: bool = False) -> dict:
        folders = self.app.folders
        if refresh:  # refresh-models: scan again even where no folder's mtime changed
            folders.invalidate()
        return {"model_filenames": folders.list("checkpoints"), "lora_filenames": folders.list("loras")}

    def _webhook_outcome(self, outcome) -> None:
        record = self.store.get(outcome.job_id)
        if record is not None:
            outcome.apply_to(record)
            self.store.update(record)

    def install(self, web_app: web.Application) -> None:
        for pack in self.route_packs:
            for method, path, handler in pack.routes():
                web_app.router.add_route(method, path, handler)
        install_docs(web_app, self)
        web_app.on_startup.append(self._on_startup)
        web_app.on_cleanup.append(self._on_cleanup)

    async def _on_startup(self, web_app: web.Application) -> None:
        await self.webhooks.start()
        self.jobs.recover()

    async def _on_cleanup(self, web_app: web.Application) -> None:
        await self.webhooks.stop()
        self.store.close()
