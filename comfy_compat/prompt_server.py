"""ComfyUI's `server.PromptServer` over our App: routes, websocket events, front-end extensions.

`PromptServer.instance` is set when an App binds (comfy_compat.bind). Routes a pack registers
with `PromptServer.instance.routes` are added to the App's aiohttp application (also under
`/api`, as ComfyUI does); a pack's `WEB_DIRECTORY` is served under `/extensions/<pack>/` and its
`.js` files are listed by `GET /extensions`.
"""
from __future__ import annotations

import asyncio
import struct

from aiohttp import web

from . import not_provided


class BinaryEventTypes:
    PREVIEW_IMAGE = 1
    UNENCODED_PREVIEW_IMAGE = 2
    TEXT = 3
    PREVIEW_IMAGE_WITH_METADATA = 4


class PromptServer:
    instance: "PromptServer | None" = None

    def __init__(self, app) -> None:
        self._app = app
        self.routes = web.RouteTableDef()
        self.supports = ["custom_nodes_from_web"]
        self.on_prompt_handlers = app.prompt_handlers

    # --- what packs read ----------------------------------------------------------------------
    @property
    def app(self) -> web.Application:
        """The aiohttp application the server runs (created early so packs may add to it at import)."""
        return self._app.web_application()

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        loop = self._app.hub._loop
        if loop is None:
            raise RuntimeError("PromptServer.instance.loop: the server's event loop has not started yet")
        return loop

    @property
    def client_id(self) -> str | None:
        """The websocket client id of the prompt running now (ComfyUI sets it per prompt)."""
        item = self._app.worker.current
        return item.client_id if item is not None else None

    @property
    def last_prompt_id(self) -> str | None:
        item = self._app.worker.current
        return item.prompt_id if item is not None else None

    @property
    def last_node_id(self) -> str | None:
        item = self._app.worker.current
        return self._app.worker.executing_node(item.prompt_id) if item is not None else None

    def __getattr__(self, name: str):
        if name.startswith("__"):
            raise AttributeError(name)
        raise not_provided(f"PromptServer.instance.{name}")

    # --- events -------------------------------------------------------------------------------
    def send_sync(self, event, data, sid: str | None = None) -> None:
        """A websocket message to client `sid` (everyone when None); callable from any thread."""
        hub = self._app.hub
        if isinstance(event, str):
            hub.publish(event, data, sid=sid)
        elif event in (BinaryEventTypes.PREVIEW_IMAGE, BinaryEventTypes.UNENCODED_PREVIEW_IMAGE,
                       BinaryEventTypes.PREVIEW_IMAGE_WITH_METADATA):
            image_tuple = data[0] if event == BinaryEventTypes.PREVIEW_IMAGE_WITH_METADATA else data
            image = image_tuple[1] if isinstance(image_tuple, (tuple, list)) else image_tuple
            hub.publish_image(image, sid=sid, prompt_id=self.last_prompt_id or "", node_id=self.last_node_id or "",
                              full_size=False)
        elif isinstance(event, int) and isinstance(data, (bytes, bytearray)):
            hub.publish_bytes(struct.pack(">I", event) + bytes(data), sid=sid)
        else:
            raise TypeError(f"PromptServer.send_sync: event {event!r} with data of type {type(data).__name__} "
                            "is neither a JSON event nor a binary one")

    async def send(self, event, data, sid: str | None = None) -> None:
        self.send_sync(event, data, sid)

    async def send_json(self, event, data, sid: str | None = None) -> None:
        self.send_sync(event, data, sid)

    def send_progress_text(self, text, node_id, sid: str | None = None) -> None:
        node = str(node_id).encode()
        text = text.encode() if isinstance(text, str) else bytes(text)
        self.send_sync(BinaryEventTypes.TEXT, struct.pack(">I", len(node)) + node + text, sid or self.client_id)

    def queue_updated(self) -> None:
        self._app._queue_changed()

    def add_on_prompt_handler(self, handler) -> None:
        """handler(json body) -> json body, run on each POST /prompt before validation (ComfyUI's hook)."""
        self.on_prompt_handlers.append(handler)


def install(app, web_app: web.Application) -> None:
    """Add the bound PromptServer's routes and the packs' web directories to `web_app`."""
    server = getattr(app, "prompt_server", None)
    if server is not None:
        api_routes = web.RouteTableDef()
        for route in server.routes:
            if isinstance(route, web.RouteDef):
                api_routes.route(route.method, "/api" + route.path)(route.handler, **route.kwargs)
        web_app.add_routes(api_routes)
        web_app.add_routes(server.routes)
    for pack, directory in app.web_directories.items():  # GET /extensions lists their .js files
        web_app.router.add_static(f"/extensions/{pack}", directory)
