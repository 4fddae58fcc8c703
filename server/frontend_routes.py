"""The official ComfyUI frontend (PyPI `comfyui-frontend-package`) served at `/`, and the routes it
calls beyond the core API, in ComfyUI's shapes (server.py, app/*.py, api_server/routes/internal).

Routes of optional features we do not have answer what ComfyUI answers with the feature off
(empty lists and maps), never a 500. Our prebuilt workflows are offered as the frontend's "default"
templates (`/templates/index.json`, converted to its graph format by server/ui_workflow.py).
"""
from __future__ import annotations

import collections
import datetime
import io
import json
import logging
import struct
from pathlib import Path
from typing import TYPE_CHECKING, Mapping
from xml.sax.saxutils import escape

from aiohttp import web

from .files import FOLDER_TYPES, BadFileRequest, ForbiddenPath, resolve_in
from .folders import FOLDERS, UnknownFolder
from .jobs_view import JobRoutes
from .ui_workflow import api_to_ui
from .userdata import UserData

if TYPE_CHECKING:
    from .app import App

log = logging.getLogger(__name__)
LOG_LINES_KEPT = 1000
SAFETENSORS_HEADER_MAX = 64 * 1024 * 1024  # a larger header is not a safetensors file we trust to parse
MEDIA_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".webp", ".gif", ".bmp", ".tiff", ".mp4", ".webm", ".mov",
                            ".avi", ".mkv", ".mp3", ".wav", ".ogg", ".flac", ".m4a"})
TEMPLATE_TITLES = {"image_prompt_debug": "Fooocus: image prompt preprocessors"}  # others: from the file name


def frontend_root() -> Path | None:
    """The package's static folder, or None when the package is not installed."""
    try:
        import comfyui_frontend_package
    except ImportError:
        return None
    root = Path(comfyui_frontend_package.__file__).parent / "static"
    return root if (root / "index.html").is_file() else None


def frontend_index() -> Path | None:
    root = frontend_root()
    return root / "index.html" if root is not None else None


def extension_scripts(web_directories: Mapping[str, Path]) -> list[str]:
    """ComfyUI's `/extensions` list: every .js file under each custom node pack's WEB_DIRECTORY,
    as `/extensions/<pack>/<path>` (the frontend imports each; its core extensions are bundled)."""
    scripts = []
    for pack, directory in sorted(web_directories.items()):
        directory = Path(directory)
        if directory.is_dir():
            scripts += [f"/extensions/{pack}/{p.relative_to(directory).as_posix()}"
                        for p in sorted(directory.rglob("*.js")) if p.is_file()]
    return scripts


class LogBuffer(logging.Handler):
    """The last log lines, for the frontend's log terminal (`/internal/logs`)."""

    def __init__(self, size: int = LOG_LINES_KEPT) -> None:
        super().__init__(logging.INFO)
        self.entries: collections.deque = collections.deque(maxlen=size)
        self.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        try:
            stamp = datetime.datetime.fromtimestamp(record.created, datetime.timezone.utc).isoformat()
            self.entries.append({"t": stamp, "m": self.format(record) + "\n"})
        except Exception:  # a log line that cannot be formatted must not break the code that logged
            self.handleError(record)


def read_safetensors_metadata(path: Path) -> dict | None:
    with open(path, "rb") as handle:
        head = handle.read(8)
        if len(head) < 8:
            return None
        size = struct.unpack("<Q", head)[0]
        if size > SAFETENSORS_HEADER_MAX:
            return None
        try:
            header = json.loads(handle.read(size))
        except (json.JSONDecodeError, UnicodeDecodeError):
            return None
    metadata = header.get("__metadata__") if isinstance(header, dict) else None
    return metadata if isinstance(metadata, dict) else None


class FrontendRoutes:
    def __init__(self, app: "App") -> None:
        self.app = app
        self.static = frontend_root()
        self.userdata = UserData(app.config.user_dir)
        self.jobs = JobRoutes(app)
        self.logs = LogBuffer()

    def routes(self) -> list[tuple[str, str, object]]:
        """API routes, mounted bare and under /api like the core ones."""
        return [
            *self.userdata.routes(),
            *self.jobs.routes(),
            ("GET", "/i18n", self.i18n),
            ("GET", "/workflow_templates", self.custom_templates),
            ("GET", "/experiment/models", self.experiment_folders),
            ("GET", "/experiment/models/{folder}", self.experiment_files),
            ("GET", "/view_metadata/{folder}", self.view_metadata),
            ("POST", "/upload/mask", self.upload_mask),
            ("GET", "/node_replacements", self.empty_map),
            ("GET", "/global_subgraphs", self.empty_map),
        ]

    def internal_routes(self) -> list[tuple[str, str, object]]:
        """ComfyUI's /internal routes (not under /api)."""
        return [
            ("GET", "/internal/logs", self.logs_text),
            ("GET", "/internal/logs/raw", self.logs_raw),
            ("PATCH", "/internal/logs/subscribe", self.logs_subscribe),
            ("GET", "/internal/folder_paths", self.folder_paths),
            ("GET", "/internal/files/{directory_type}", self.internal_files),
        ]

    def install(self, web_app: web.Application) -> None:
        """Called last: the static catch-all at `/` must come after every API route."""
        for method, path, handler in self.routes():
            web_app.router.add_route(method, path, handler)
            web_app.router.add_route(method, "/api" + path, handler)
        for method, path, handler in self.internal_routes() + self.page_routes():
            if path == "/" and any(r.canonical == "/" for r in web_app.router.resources()):
                continue  # the Fooocus API's index answers the page too
            web_app.router.add_route(method, path, handler)
        web_app.on_startup.append(self._attach_logs)
        web_app.on_cleanup.append(self._detach_logs)
        if self.static is None:
            log.warning("comfyui-frontend-package is not installed: no web UI at / (pip install the project)")
            return
        web_app.router.add_static("/", self.static, append_version=False)

    def page_routes(self) -> list[tuple[str, str, object]]:
        """Routes of the page itself (bare paths: the frontend asks them without /api)."""
        routes = [("GET", "/templates/index.json", self.template_index), ("GET", "/templates/{name}", self.template_file)]
        if self.static is not None:
            routes += [("GET", "/", self.index), ("GET", "/user.css", self.user_css),
                       ("GET", "/favicon.ico", self.favicon)]  # browsers ask the root; the page links assets/
        return routes

    async def _attach_logs(self, web_app) -> None:
        logging.getLogger().addHandler(self.logs)

    async def _detach_logs(self, web_app) -> None:
        logging.getLogger().removeHandler(self.logs)

    # --- the page -----------------------------------------------------------------------------
    async def index(self, request: web.Request) -> web.StreamResponse:
        # no-cache: a new package version must not meet an old cached index.html
        return web.FileResponse(self.static / "index.html", headers={"Cache-Control": "no-cache"})

    async def favicon(self, request: web.Request) -> web.StreamResponse:
        return web.FileResponse(self.static / "assets" / "favicon.ico")

    async def user_css(self, request: web.Request) -> web.Response:
        return web.Response(text="", content_type="text/css")

    # --- optional features that are off -------------------------------------------------------
    async def i18n(self, request: web.Request) -> web.Response:
        return web.json_response({})  # custom nodes' translations: none

    async def custom_templates(self, request: web.Request) -> web.Response:
        return web.json_response({})  # custom node packs' example workflows: none

    async def empty_map(self, request: web.Request) -> web.Response:
        return web.json_response({})

    # --- templates: our workflows -------------------------------------------------------------
    def _workflow_files(self) -> dict[str, Path]:
        import workflows
        folder = Path(workflows.__file__).parent
        return {p.stem: p for p in sorted(folder.glob("*.json")) if not p.name.endswith(".params.json")}

    @staticmethod
    def _title(name: str) -> str:
        return TEMPLATE_TITLES.get(name, "Fooocus: " + name.replace("_", " "))

    async def template_index(self, request: web.Request) -> web.Response:
        templates = [{"name": name, "title": self._title(name),
                      "description": f"The server's prebuilt Fooocus workflow workflows/{name}.json",
                      "mediaType": "image", "mediaSubtype": "svg"}
                     for name in self._workflow_files()]
        return web.json_response([{"moduleName": "default", "title": "Fooocus workflows", "type": "image",
                                   "category": "Fooocus", "templates": templates}])

    async def template_file(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        files = self._workflow_files()
        if name == "index_logo.json":  # provider logos of the template cards: none
            return web.json_response({})
        if name.startswith("index.") and name.endswith(".json"):  # a locale's index: ours has no translations
            return await self.template_index(request)
        if name.endswith(".json") and name[:-5] in files:
            prompt = json.loads(files[name[:-5]].read_text(encoding="utf-8"))
            missing = sorted({n["class_type"] for n in prompt.values() if n["class_type"] not in self.app.registry})
            if missing:
                return web.json_response({"error": f"nodes not installed: {', '.join(missing)}"}, status=404)
            return web.json_response(api_to_ui(prompt, self.app.registry.object_info))
        stem, _, suffix = name.rpartition("-1.")
        if suffix == "svg" and stem in files:  # the card thumbnail: the template's title on a plain tile
            title = escape(self._title(stem))
            svg = (f'<svg xmlns="http://www.w3.org/2000/svg" width="512" height="512"><rect width="512" '
                   f'height="512" fill="#26262a"/><text x="256" y="256" fill="#e8e8e8" font-size="34" '
                   f'font-family="sans-serif" text-anchor="middle">{title}</text></svg>')
            return web.Response(text=svg, content_type="image/svg+xml")
        return web.json_response({"error": f"no template {name!r}"}, status=404)

    # --- models -------------------------------------------------------------------------------
    async def experiment_folders(self, request: web.Request) -> web.Response:
        folders = self.app.folders
        return web.json_response([{"name": name, "folders": [str(d) for d in folders.directories(name)]}
                                  for name in folders.names()])

    async def experiment_files(self, request: web.Request) -> web.Response:
        folder = request.match_info["folder"]
        try:
            names = self.app.folders.list(folder)
        except (UnknownFolder, KeyError):
            return web.json_response({"error": f"unknown model folder {folder!r}"}, status=404)
        return web.json_response([{"name": name, "pathIndex": 0} for name in names])

    async def view_metadata(self, request: web.Request) -> web.Response:
        folder = request.match_info["folder"]
        filename = request.query.get("filename", "")
        if not filename:
            return web.json_response({"error": "query parameter filename is required"}, status=400)
        if folder not in FOLDERS:
            return web.json_response({"error": f"unknown model folder {folder!r}"}, status=404)
        if not filename.endswith(".safetensors"):
            return web.json_response({"error": "filename: only .safetensors files carry metadata"}, status=404)
        try:
            path = self.app.folders.path(folder, filename)
        except FileNotFoundError:
            return web.json_response({"error": f"{folder}/{filename} not found"}, status=404)
        metadata = read_safetensors_metadata(path)
        if metadata is None:
            return web.json_response({"error": f"{filename} has no metadata"}, status=404)
        return web.json_response(metadata)

    # --- mask upload --------------------------------------------------------------------------
    async def upload_mask(self, request: web.Request) -> web.Response:
        """ComfyUI's mask editor: the original image with the uploaded mask's alpha, saved as a new
        input file (the `image` form field holds the mask, `original_ref` names the original)."""
        from PIL import Image, UnidentifiedImageError

        try:
            form = await request.post()
        except web.HTTPException:
            raise
        except Exception as exc:
            return web.json_response({"error": f"expected a multipart form: {exc}"}, status=400)
        upload = form.get("image")
        if upload is None or not hasattr(upload, "file"):
            return web.json_response({"error": "the form field 'image' must be a file"}, status=400)
        try:
            ref = json.loads(str(form.get("original_ref") or ""))
            assert isinstance(ref, dict) and ref.get("filename")
        except (json.JSONDecodeError, AssertionError):
            return web.json_response({"error": "original_ref must be JSON naming the original's filename"},
                                     status=400)
        kind = str(ref.get("type") or "output")
        if kind not in FOLDER_TYPES:
            return web.json_response({"error": f"original_ref.type must be one of {list(FOLDER_TYPES)}"}, status=400)
        subfolder = str(form.get("subfolder") or "")
        try:
            original_path = resolve_in(self.app.folder_for(kind), str(ref.get("subfolder") or ""), ref["filename"])
            target = resolve_in(self.app.folder_for("input"), subfolder, upload.filename or "mask.png")
        except BadFileRequest as exc:
            return web.json_response({"error": str(exc)}, status=400)
        except ForbiddenPath as exc:
            return web.json_response({"error": str(exc)}, status=403)
        if not original_path.is_file():
            return web.json_response({"error": f"original_ref {ref['filename']!r} not found"}, status=404)
        try:
            mask = Image.open(io.BytesIO(upload.file.read()))
            original = Image.open(original_path)
            original.load()
        except (UnidentifiedImageError, OSError) as exc:
            return web.json_response({"error": f"image: not a readable image ({exc})"}, status=400)
        alpha = mask.convert("RGBA").getchannel("A").resize(original.size)
        result = original.convert("RGBA")
        result.putalpha(alpha)
        target.parent.mkdir(parents=True, exist_ok=True)
        result.save(target, format="PNG")
        return web.json_response({"name": target.name, "subfolder": subfolder, "type": "input"})

    # --- internal -----------------------------------------------------------------------------
    async def logs_text(self, request: web.Request) -> web.Response:
        return web.json_response("".join(entry["m"] for entry in self.logs.entries))

    async def logs_raw(self, request: web.Request) -> web.Response:
        return web.json_response({"entries": list(self.logs.entries), "size": {"cols": 120, "rows": 40}})

    async def logs_subscribe(self, request: web.Request) -> web.Response:
        try:
            body = await request.json()
        except (json.JSONDecodeError, UnicodeDecodeError):
            return web.json_response({"error": "the body must be JSON {clientId, enabled}"}, status=400)
        if not isinstance(body, dict) or not isinstance(body.get("clientId"), str):
            return web.json_response({"error": "clientId must be a string"}, status=400)
        # live log lines are not pushed over the websocket: the terminal shows /internal/logs/raw
        return web.Response(status=200)

    async def folder_paths(self, request: web.Request) -> web.Response:
        folders = self.app.folders
        return web.json_response({name: [str(d) for d in folders.directories(name)] for name in folders.names()})

    async def internal_files(self, request: web.Request) -> web.Response:
        kind = request.match_info["directory_type"]
        if kind not in FOLDER_TYPES:
            return web.json_response({"error": f"directory_type must be one of {list(FOLDER_TYPES)}"}, status=400)
        base = self.app.folder_for(kind)
        # ComfyUI's rule: the folder's own media files (not sub-folders), newest first
        files = [p for p in base.iterdir() if p.is_file() and p.suffix.lower() in MEDIA_SUFFIXES] \
            if base.is_dir() else []
        files.sort(key=lambda p: p.stat().st_mtime, reverse=True)
        return web.json_response([p.name for p in files])
