"""ComfyUI-compatible HTTP routes and the /ws websocket (every route also under /api)."""
from __future__ import annotations

import io
import json
import logging
import mimetypes
import platform
import sys
import uuid
from typing import TYPE_CHECKING

from aiohttp import WSMsgType, web

from graph import validate_prompt
from nodes.previews import DEFAULT_METHOD, PREVIEW_METHODS, PROMPT_METHOD_KEY

from .files import FOLDER_TYPES, BadFileRequest, ForbiddenPath, check_name, resolve_in, split_annotation, \
    unique_upload_path
from .folders import UnknownFolder
from .frontend_routes import extension_scripts
from .jobs_view import remove_items
from .queue import QueueItem, RunSpec

if TYPE_CHECKING:
    from .app import App

log = logging.getLogger(__name__)
APP_VERSION = "0.1.0"
UNSAFE_MIME_PREFIXES = ("text/html", "text/javascript", "application/javascript", "image/svg")
PREVIEW_CHOICES = (DEFAULT_METHOD, *PREVIEW_METHODS)  # a prompt's own preview method, as ComfyUI's frontend sends


class BadRequest(web.HTTPBadRequest):
    """400 with a JSON body that names the problem."""

    def __init__(self, message: str, kind: str = "invalid_request", **extra) -> None:
        body = {"error": {"type": kind, "message": message, "details": extra.pop("details", ""), "extra_info": extra},
                "node_errors": {}}
        super().__init__(text=json.dumps(body), content_type="application/json")


async def read_json(request: web.Request, required: bool = True):
    """The body as JSON whatever its Content-Type (ComfyUI's basic example posts form-typed JSON)."""
    raw = await request.read()
    if not raw.strip():
        if required:
            raise BadRequest("the request body is empty; expected a JSON object")
        return {}
    try:
        return json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BadRequest(f"the request body is not valid JSON: {exc}", details=str(exc)) from exc


def _int_query(request: web.Request, name: str, default=None):
    value = request.query.get(name)
    if value in (None, ""):
        return default
    try:
        return int(value)
    except ValueError:
        raise BadRequest(f"query parameter {name} must be an integer, got {value!r}")


class ComfyRoutes:
    def __init__(self, app: "App") -> None:
        self.app = app

    def routes(self) -> list[tuple[str, str, object]]:
        return [
            ("GET", "/ws", self.websocket),
            ("POST", "/prompt", self.post_prompt),
            ("GET", "/prompt", self.get_prompt),
            ("GET", "/queue", self.get_queue),
            ("POST", "/queue", self.post_queue),
            ("GET", "/history", self.get_history),
            ("GET", "/history/{prompt_id}", self.get_history_item),
            ("POST", "/history", self.post_history),
            ("POST", "/interrupt", self.interrupt),
            ("POST", "/free", self.free),
            ("GET", "/object_info", self.object_info),
            ("GET", "/object_info/{node_class}", self.object_info_one),
            ("GET", "/view", self.view),
            ("POST", "/upload/image", self.upload_image),
            ("GET", "/system_stats", self.system_stats),
            ("GET", "/features", self.features),
            ("GET", "/embeddings", self.embeddings),
            ("GET", "/extensions", self.extensions),
            ("GET", "/models", self.model_folders),
            ("GET", "/models/{folder}", self.model_files),
        ]

    # --- prompts ------------------------------------------------------------------------------
    async def post_prompt(self, request: web.Request) -> web.Response:
        body = await read_json(request)
        if not isinstance(body, dict):
            raise BadRequest("the body must be a JSON object with a 'prompt' field")
        for handler in self.app.prompt_handlers:  # ComfyUI packs' PromptServer.add_on_prompt_handler
            try:
                body = handler(body)
            except Exception:  # a pack's hook failing must not refuse the prompt (ComfyUI logs it too)
                log.exception("on-prompt handler %r failed", handler)
        if "prompt" not in body:
            raise BadRequest("no prompt provided", kind="no_prompt")
        prompt = body["prompt"]
        partial = body.get("partial_execution_targets")
        result = validate_prompt(prompt, self.app.registry, partial)
        if not result.ok:
            log.warning("invalid prompt: %s", result.error)
            return web.json_response(result.response_error(), status=400)
        prompt_id = body.get("prompt_id") or str(uuid.uuid4())
        if not isinstance(prompt_id, str):
            raise BadRequest("prompt_id must be a string")
        extra_data = body.get("extra_data") or {}
        if not isinstance(extra_data, dict):
            raise BadRequest("extra_data must be a JSON object")
        extra_data = dict(extra_data)
        method = extra_data.get(PROMPT_METHOD_KEY)
        if method is not None and (not isinstance(method, str) or method.lower() not in PREVIEW_CHOICES):
            raise BadRequest(f"extra_data.{PROMPT_METHOD_KEY} must be one of {list(PREVIEW_CHOICES)}, got {method!r}")
        if body.get("client_id"):
            extra_data["client_id"] = str(body["client_id"])
        number = body.get("number")
        if number is None:
            number = self.app.queue.next_number()
        else:
            try:
                number = float(number)
            except (TypeError, ValueError):
                raise BadRequest("number must be a number")
        if body.get("front"):
            number = -abs(number) if number else -self.app.queue.next_number()
        item = QueueItem(number, prompt_id, [RunSpec.of(prompt, result)], extra_data)
        self.app.queue.put(item)
        return web.json_response({"prompt_id": prompt_id, "number": number, "node_errors": result.node_errors})

    async def get_prompt(self, request: web.Request) -> web.Response:
        return web.json_response(self.app.status_payload()["status"])

    async def get_queue(self, request: web.Request) -> web.Response:
        return web.json_response({"queue_running": [i.as_list() for i in self.app.queue.running()],
                                  "queue_pending": [i.as_list() for i in self.app.queue.pending()]})

    async def post_queue(self, request: web.Request) -> web.Response:
        body = await read_json(request)
        if not isinstance(body, dict):
            raise BadRequest("the body must be a JSON object")
        if body.get("clear"):
            remove_items(self.app, self.app.queue.clear())
        if "delete" in body:
            if not isinstance(body["delete"], list):
                raise BadRequest("delete must be a list of prompt ids")
            remove_items(self.app, self.app.queue.delete(str(i) for i in body["delete"]))
        return web.Response(status=200)

    async def get_history(self, request: web.Request) -> web.Response:
        max_items = _int_query(request, "max_items")
        offset = _int_query(request, "offset", 0)
        return web.Response(body=self.app.queue.history_json(max_items, offset), content_type="application/json")

    async def get_history_item(self, request: web.Request) -> web.Response:
        prompt_id = request.match_info["prompt_id"]
        entry = self.app.queue.history_item_json(prompt_id)
        body = b"{" + json.dumps(prompt_id).encode() + b":" + entry + b"}" if entry is not None else b"{}"
        return web.Response(body=body, content_type="application/json")

    async def post_history(self, request: web.Request) -> web.Response:
        body = await read_json(request)
        if not isinstance(body, dict):
            raise BadRequest("the body must be a JSON object")
        if body.get("clear"):
            self.app.queue.clear_history()
        if "delete" in body:
            if not isinstance(body["delete"], list):
                raise BadRequest("delete must be a list of prompt ids")
            self.app.queue.delete_history(str(i) for i in body["delete"])
        return web.Response(status=200)

    async def interrupt(self, request: web.Request) -> web.Response:
        body = await read_json(request, required=False)
        prompt_id = body.get("prompt_id") if isinstance(body, dict) else None
        if prompt_id:
            if self.app.queue.is_running(str(prompt_id)):
                self.app.interrupt.request(str(prompt_id))
        else:
            self.app.interrupt.request()
        return web.Response(status=200)

    async def free(self, request: web.Request) -> web.Response:
        body = await read_json(request, required=False)
        if not isinstance(body, dict):
            raise BadRequest("the body must be a JSON object")
        self.app.worker.request_free(bool(body.get("unload_models")), bool(body.get("free_memory")))
        return web.Response(status=200)

    # --- node info ----------------------------------------------------------------------------
    async def object_info(self, request: web.Request) -> web.Response:
        registry = self.app.registry
        return web.json_response({name: registry.object_info(name) for name in registry.names()})

    async def object_info_one(self, request: web.Request) -> web.Response:
        name = request.match_info["node_class"]
        if name not in self.app.registry:
            return web.json_response({})
        return web.json_response({name: self.app.registry.object_info(name)})

    # --- files --------------------------------------------------------------------------------
    async def view(self, request: web.Request) -> web.StreamResponse:
        filename = request.query.get("filename")
        if not filename:
            raise BadRequest("query parameter filename is required")
        filename, kind = split_annotation(filename, request.query.get("type") or "output")
        if kind not in FOLDER_TYPES:
            raise BadRequest(f"type must be one of {list(FOLDER_TYPES)}, got {kind!r}")
        try:
            path = resolve_in(self.app.folder_for(kind), request.query.get("subfolder", ""), filename)
            found = path.is_file()
        except BadFileRequest as exc:
            raise BadRequest(str(exc))
        except ForbiddenPath as exc:
            raise web.HTTPForbidden(text=str(exc))
        except OSError:  # e.g. a name longer than the file system allows
            found = False
        if not found:
            raise web.HTTPNotFound(text=f"{filename} not found")
        preview = request.query.get("preview")
        channel = request.query.get("channel")
        if preview or channel:
            return self._converted(path, preview, channel)
        content_type = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
        if content_type.startswith(UNSAFE_MIME_PREFIXES):
            content_type = "application/octet-stream"
        return web.FileResponse(path, headers={"Content-Disposition": f'filename="{path.name}"',
                                               "Content-Type": content_type})

    def _converted(self, path, preview, channel) -> web.Response:
        from PIL import Image  # images are only decoded for conversions
        try:
            image = Image.open(path)
            image.load()
        except Exception:
            raise BadRequest(f"{path.name} is not an image that can be converted")
        if channel == "a":
            image = image.getchannel("A") if "A" in image.getbands() else Image.new("L", image.size, 255)
        elif channel == "rgb":
            image = image.convert("RGB")
        elif channel not in (None, "rgba"):
            raise BadRequest("channel must be rgb, a or rgba")
        fmt, quality = "PNG", 90
        if preview:
            kind, _, q = preview.partition(";")
            fmt = {"webp": "WEBP", "jpeg": "JPEG", "jpg": "JPEG", "png": "PNG"}.get(kind.lower())
            if fmt is None:
                raise BadRequest("preview must be webp;Q, jpeg;Q or png")
            if q:
                try:
                    quality = int(q)
                except ValueError:
                    raise BadRequest("preview quality must be an integer")
        if fmt == "JPEG" and image.mode not in ("RGB", "L"):
            image = image.convert("RGB")
        buffer = io.BytesIO()
        image.save(buffer, format=fmt, quality=quality)
        stem = path.stem + "." + fmt.lower()
        return web.Response(body=buffer.getvalue(), content_type=f"image/{fmt.lower()}",
                            headers={"Content-Disposition": f'filename="{stem}"'})

    async def upload_image(self, request: web.Request) -> web.Response:
        try:
            form = await request.post()
        except Exception as exc:
            raise BadRequest(f"expected a multipart form with an 'image' file: {exc}")
        upload = form.get("image")
        if upload is None or not hasattr(upload, "file"):
            raise BadRequest("the form field 'image' must be a file")
        kind = str(form.get("type") or "input")
        if kind not in FOLDER_TYPES:
            raise BadRequest(f"type must be one of {list(FOLDER_TYPES)}")
        subfolder = str(form.get("subfolder") or "")
        overwrite = str(form.get("overwrite") or "").lower() in ("true", "1")
        try:
            check_name(upload.filename or "")
            base = self.app.folder_for(kind)
            target = resolve_in(base, subfolder, upload.filename)
        except BadFileRequest as exc:
            raise BadRequest(str(exc))
        except ForbiddenPath as exc:
            raise web.HTTPForbidden(text=str(exc))
        content = upload.file.read()
        target.parent.mkdir(parents=True, exist_ok=True)
        target = unique_upload_path(target.parent, target.name, content, overwrite)
        if not target.exists() or overwrite:
            target.write_bytes(content)
        return web.json_response({"name": target.name, "subfolder": subfolder, "type": kind})

    # --- system -------------------------------------------------------------------------------
    async def system_stats(self, request: web.Request) -> web.Response:
        return web.json_response({
            "system": {"os": platform.system().lower(), "ram_total": self.app.ram_total(),
                       "ram_free": self.app.ram_free(), "comfyui_version": APP_VERSION,
                       "python_version": sys.version, "pytorch_version": self.app.torch_version(),
                       "embedded_python": False, "argv": sys.argv,
                       "required_frontend_version": None, "installed_templates_version": None,
                       "required_templates_version": None},
            "devices": self.app.devices(),
            # ours: custom node packs loaded (import seconds) and failed (error, file; traceback in the log)
            "custom_nodes": {"loaded": dict(self.app.registry.loaded_packs),
                             "failed": {pack: {"error": e["error"], "path": e["path"]}
                                        for pack, e in self.app.registry.pack_errors.items()}},
        })

    async def features(self, request: web.Request) -> web.Response:
        return web.json_response(self.app.features())

    async def embeddings(self, request: web.Request) -> web.Response:
        names = [name.rsplit(".", 1)[0] for name in self.app.folders.list("embeddings")]
        return web.json_response(names)

    async def extensions(self, request: web.Request) -> web.Response:
        return web.json_response(extension_scripts(self.app.web_directories))

    async def model_folders(self, request: web.Request) -> web.Response:
        return web.json_response(self.app.folders.names())

    async def model_files(self, request: web.Request) -> web.Response:
        try:
            return web.json_response(self.app.folders.list(request.match_info["folder"]))
        except UnknownFolder:
            raise web.HTTPNotFound(text=f"unknown model folder {request.match_info['folder']!r}")

    # --- websocket ----------------------------------------------------------------------------
    async def websocket(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(heartbeat=30)
        await ws.prepare(request)
        sid = request.query.get("clientId") or uuid.uuid4().hex
        hub = self.app.hub
        old = hub.sockets.get(sid)
        hub.sockets[sid] = ws
        try:
            await ws.send_json({"type": "status", "data": {**self.app.status_payload(), "sid": sid}})
            for item in self.app.queue.running():
                node = self.app.worker_node_for(item.prompt_id) if item.client_id == sid else None
                if node is not None:
                    await ws.send_json({"type": "executing", "data": {"node": node, "display_node": node,
                                                                      "prompt_id": item.prompt_id}})
            async for message in ws:
                if message.type == WSMsgType.TEXT:
                    self._client_message(sid, message.data, ws)
                elif message.type == WSMsgType.ERROR:
                    break
        finally:
            if hub.sockets.get(sid) is ws:
                hub.sockets.pop(sid, None)
                hub.features.pop(sid, None)
            if old is not None and not old.closed and old is not ws:
                await old.close()
        return ws

    def _client_message(self, sid: str, text: str, ws) -> None:
        try:
            message = json.loads(text)
        except json.JSONDecodeError:
            return
        if isinstance(message, dict) and message.get("type") == "feature_flags" and isinstance(message.get("data"), dict):
            self.app.hub.features[sid] = message["data"]
            self.app.hub.publish("feature_flags", self.app.features(), sid=sid)
