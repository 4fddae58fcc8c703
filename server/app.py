"""The App: builds every long-lived object from the config and wires them together.

Nothing here runs at import; tests build a whole App in-process.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Callable

from aiohttp import web

from graph import Executor, InterruptFlag, NodeRegistry, make_cache
from nodes import register_builtin_nodes
from nodes.services import Services

from .comfy_routes import ComfyRoutes
from .config import AppConfig
from .events import EventHub
from .downloads.fetcher import ModelFetcher
from .folders import ModelFolders
from .frontend_routes import FrontendRoutes
from .middleware import api_key_middleware, cors_middleware, error_middleware
from .queue import PromptQueue
from .worker import Worker

log = logging.getLogger(__name__)


class App:
    def __init__(self, config: AppConfig, *, register_nodes: Callable[[NodeRegistry], None] = register_builtin_nodes,
                 model_manager=None) -> None:
        self.config = config
        self.folders = ModelFolders.from_config(config)
        # first-use model downloads (off unless config.download; tests may swap in their own)
        self.fetcher = ModelFetcher.from_config(self.folders, config)
        for directory in (config.output_dir, config.input_dir, config.temp_dir):
            Path(directory).mkdir(parents=True, exist_ok=True)
        self.registry = NodeRegistry(resolve_folder=self._folder_choices)
        register_nodes(self.registry)
        self.services = Services(folders=self.folders, output_dir=Path(config.output_dir),
                                 input_dir=Path(config.input_dir), temp_dir=Path(config.temp_dir),
                                 models=model_manager, options=config)
        self.executor = Executor(self.registry, make_cache(config.cache), self.services)
        self.hub = EventHub(config.preview_size)
        self.interrupt = InterruptFlag()
        self.queue = PromptQueue(history_limit=config.max_history, on_change=self._queue_changed)
        free_models = (lambda: model_manager.free_all()) if model_manager is not None else None
        self.worker = Worker(self.queue, self.executor, self.hub, self.interrupt, free_models,
                             preview_method=config.preview_method)
        self.extensions: list = []  # route packs (the Fooocus API) added by the caller
        # custom node packs' WEB_DIRECTORY folders by pack name: listed by /extensions
        self.web_directories: dict[str, Path] = {}
        # ComfyUI custom-node packs (comfy_compat): the PromptServer they see, their prompt hooks
        self.prompt_handlers: list[Callable[[dict], dict]] = []
        self.prompt_server = None
        self._web_app: web.Application | None = None
        if config.custom_nodes_dir is not None:  # last: packs may use every service at import
            from comfy_compat.loader import load_custom_nodes
            load_custom_nodes(self, config.custom_nodes_dir)

    def _folder_choices(self, folder: str) -> list[str]:
        """COMBO choices backed by a folder: a model folder, or `__input__` (uploaded images)."""
        if folder == "__input__":
            base = Path(self.config.input_dir)
            if not base.is_dir():
                return []
            return sorted(p.relative_to(base).as_posix() for p in base.rglob("*")
                          if p.is_file() and not p.name.startswith("."))
        return self.folders.list(folder)

    # --- facts for routes ---------------------------------------------------------------------
    def status_payload(self) -> dict:
        return {"status": {"exec_info": {"queue_remaining": self.queue.remaining()}}}

    def _queue_changed(self) -> None:
        self.hub.publish("status", self.status_payload(), broadcast=True)

    def folder_for(self, kind: str) -> Path:
        return {"output": Path(self.config.output_dir), "input": Path(self.config.input_dir),
                "temp": Path(self.config.temp_dir)}[kind]

    def worker_node_for(self, prompt_id: str) -> str | None:
        return self.worker.executing_node(prompt_id)

    def features(self) -> dict:
        return {"supports_preview_metadata": True, "max_upload_size": int(self.config.max_upload_size_mb * 1024 * 1024)}

    @staticmethod
    def ram_total() -> int:
        try:
            return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
        except (ValueError, OSError, AttributeError):
            return 0

    @staticmethod
    def ram_free() -> int:
        try:
            return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES")
        except (ValueError, OSError, AttributeError):
            return 0

    def torch_version(self) -> str:
        import sys
        torch = sys.modules.get("torch")
        return getattr(torch, "__version__", "") if torch else ""

    def devices(self) -> list[dict]:
        manager = self.services.models
        if manager is not None and hasattr(manager, "device_stats"):
            return manager.device_stats()
        return [{"name": "cpu", "type": "cpu", "index": None, "vram_total": 0, "vram_free": 0,
                 "torch_vram_total": 0, "torch_vram_free": 0}]

    # --- the aiohttp application --------------------------------------------------------------
    def web_application(self) -> web.Application:
        """The aiohttp application the next make_web_app fills: ComfyUI packs may reach it
        (PromptServer.instance.app) while they import, before any route exists."""
        if self._web_app is None:
            middlewares = [cors_middleware, error_middleware]
            if self.config.apikey:
                middlewares.insert(1, api_key_middleware(self.config.apikey))
            self._web_app = web.Application(client_max_size=int(self.config.max_upload_size_mb * 1024 * 1024),
                                            middlewares=middlewares)
        return self._web_app

    def make_web_app(self) -> web.Application:
        if self._web_app is not None and APP_KEY in self._web_app:
            self._web_app = None  # made once already: each call builds a fresh application
        web_app = self.web_application()
        web_app[APP_KEY] = self
        comfy = ComfyRoutes(self)
        for method, path, handler in comfy.routes():
            web_app.router.add_route(method, path, handler)
            web_app.router.add_route(method, "/api" + path, handler)
        web_app.router.add_get("/ping", ping)
        web_app.router.add_get("/api/ping", ping)
        # the App starts first and stops first (the worker ends before the job store closes)
        web_app.on_startup.append(self._on_startup)
        web_app.on_cleanup.append(self._on_cleanup)
        for extension in self.extensions:
            extension.install(web_app)
        if self.prompt_server is not None:  # custom-node routes and web folders, before the frontend's "/"
            from comfy_compat.prompt_server import install
            install(self, web_app)
        FrontendRoutes(self).install(web_app)  # last: its static files take every path left at /
        return web_app

    async def _on_startup(self, web_app: web.Application) -> None:
        await self.hub.start()
        self.worker.start()

    async def _on_cleanup(self, web_app: web.Application) -> None:
        self.worker.stop()
        await self.hub.stop()
        if self.prompt_server is not None:
            import comfy_compat
            comfy_compat.unbind(self)


APP_KEY = web.AppKey("app", App)


async def ping(request: web.Request) -> web.Response:
    return web.json_response("pong")
