"""Start the server for a config: demo models if needed, the App, the HTTP listener."""
from __future__ import annotations

import logging

from aiohttp import web

from .app import App
from .config import AppConfig
from .demo import ensure_models_or_demo

log = logging.getLogger(__name__)


def build_app(config: AppConfig) -> App:
    from .downloads.startup import startup_downloads
    from .fooocus.setup import attach_fooocus_api

    startup_downloads(config)  # the preset's files first: a real checkpoint means no demo models
    ensure_models_or_demo(config)
    app = App(config, model_manager=make_model_manager(config))
    attach_fooocus_api(app)
    return app


def make_model_manager(config: AppConfig):
    try:
        from nodes.model_services import make_model_manager as factory
    except ImportError:
        return None
    return factory(config)


def serve(config: AppConfig) -> int:
    app = build_app(config)
    log.info("listening on http://%s:%d (Fooocus API under /v1 and /v2, ComfyUI API under / and /api)",
             config.host, config.port)
    web.run_app(app.make_web_app(), host=config.host, port=config.port, print=None)
    return 0
