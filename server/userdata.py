"""ComfyUI's user routes for its frontend: users, settings and per-user data files.

Everything lives under `--user-dir` (ComfyUI's `user/` folder): `users.json` maps user ids to
names, and each user has a folder (`default` without multi-user) holding `comfy.settings.json`
and the frontend's files (`workflows/*.json`, `comfy.templates.json`, `user.css`, ...). Shapes and
status codes follow ComfyUI's app/user_manager.py and app/app_settings.py; every path a request
names is resolved inside the user's folder and refused (403) when it would leave it.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import threading
import uuid
from pathlib import Path
from urllib.parse import unquote

from aiohttp import web

DEFAULT_USER = "default"
USER_HEADER = "comfy-user"
SETTINGS_FILE = "comfy.settings.json"
NODE_TEMPLATES = "comfy.templates.json"  # the frontend's saved node groups ("templates"): none yet


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


def _flag(request: web.Request, name: str, default: bool) -> bool:
    value = request.query.get(name)
    if value is None:
        return default
    return value.lower() not in ("false", "0", "no")


def file_info(path: Path, root: Path) -> dict:
    stat = path.stat()
    return {"path": path.relative_to(root).as_posix(), "size": stat.st_size, "modified": stat.st_mtime,
            "created": stat.st_ctime}


class UserData:
    """The user folder and the routes over it (all also mounted under /api)."""

    def __init__(self, user_dir: Path) -> None:
        self.root = Path(user_dir).resolve()
        self._lock = threading.Lock()  # settings files are read-modify-written by concurrent requests

    def _prepare(self, root: Path) -> None:
        """A user's folder as the frontend expects it, made on first use (an App that never serves
        the UI writes nothing): `workflows/` and `subgraphs/`, which it lists, and the files it reads
        on every load (`user.css`, linked by index.html; `comfy.templates.json`), empty, instead of
        a 404 and a console error each time."""
        for folder in ("workflows", "subgraphs"):
            if not (root / folder).is_dir():
                (root / folder).mkdir(parents=True, exist_ok=True)
        for name, text in (("user.css", "/* your own styles for the web UI */\n"), (NODE_TEMPLATES, "[]")):
            if not (root / name).exists():
                (root / name).write_text(text, encoding="utf-8")

    def routes(self) -> list[tuple[str, str, object]]:
        return [
            ("GET", "/users", self.get_users),
            ("POST", "/users", self.post_users),
            ("GET", "/settings", self.get_settings),
            ("POST", "/settings", self.post_settings),
            ("GET", "/settings/{id}", self.get_setting),
            ("POST", "/settings/{id}", self.post_setting),
            ("GET", "/userdata", self.list_userdata),
            ("GET", "/v2/userdata", self.list_userdata_v2),
            ("GET", "/userdata/{file}", self.get_userdata),
            ("POST", "/userdata/{file}", self.post_userdata),
            ("DELETE", "/userdata/{file}", self.delete_userdata),
            ("POST", "/userdata/{file}/move/{dest}", self.move_userdata),
        ]

    # --- users --------------------------------------------------------------------------------
    def users(self) -> dict[str, str]:
        path = self.root / "users.json"
        if not path.is_file():
            return {}
        try:
            users = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            return {}
        return users if isinstance(users, dict) else {}

    def user_id(self, request: web.Request) -> str:
        """The `comfy-user` header names the user; without it, the default user (ComfyUI's
        single-user mode). An id that is neither is a 400 naming the header."""
        user = request.headers.get(USER_HEADER, "") or DEFAULT_USER
        if user != DEFAULT_USER and user not in self.users():
            raise web.HTTPBadRequest(text=json.dumps({"error": f"unknown user {user!r} in header {USER_HEADER}"}),
                                     content_type="application/json")
        return user

    def user_root(self, request: web.Request) -> Path:
        user = self.user_id(request)
        root = (self.root / user).resolve()
        if root.parent != self.root:  # an id from users.json that is a path
            raise web.HTTPForbidden(text=f"user id {user!r} is not a folder name")
        self._prepare(root)
        return root

    def resolve(self, request: web.Request, relative: str, field: str) -> Path:
        """relative (URL-decoded once more if it still holds %-escapes, as ComfyUI does) inside the
        user's folder, else 403 naming the field."""
        root = self.user_root(request)
        if "%" in relative:
            relative = unquote(relative)
        if "\x00" in relative:
            raise web.HTTPBadRequest(text=f"{field} holds a NUL character")
        path = Path(os.path.abspath(root / relative))
        if path != root and root not in path.parents:
            raise web.HTTPForbidden(text=f"{field} {relative!r} leaves the user folder")
        return path

    async def get_users(self, request: web.Request) -> web.Response:
        users = self.users()
        if users:
            return web.json_response({"storage": "server", "users": users})
        return web.json_response({"storage": "server", "migrated": True})

    async def post_users(self, request: web.Request) -> web.Response:
        try:
            body = await request.json()
        except (json.JSONDecodeError, UnicodeDecodeError):
            return _error(400, "the body must be JSON with a 'username' field")
        username = body.get("username") if isinstance(body, dict) else None
        if not isinstance(username, str) or not username.strip():
            return _error(400, "username must be a non-empty string")
        with self._lock:
            users = self.users()
            if username in users.values():
                return _error(400, "Duplicate username.")
            user_id = re.sub("[^a-zA-Z0-9-_]+", "-", username) + "_" + uuid.uuid4().hex
            users[user_id] = username
            self.root.mkdir(parents=True, exist_ok=True)
            (self.root / "users.json").write_text(json.dumps(users), encoding="utf-8")
        self._prepare(self.root / user_id)
        return web.json_response(user_id)

    # --- settings -----------------------------------------------------------------------------
    def _settings_path(self, request: web.Request) -> Path:
        return self.user_root(request) / SETTINGS_FILE

    @staticmethod
    def _read_settings(path: Path) -> dict:
        try:
            settings = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            return {}
        return settings if isinstance(settings, dict) else {}

    async def get_settings(self, request: web.Request) -> web.Response:
        return web.json_response(self._read_settings(self._settings_path(request)))

    async def get_setting(self, request: web.Request) -> web.Response:
        return web.json_response(self._read_settings(self._settings_path(request)).get(request.match_info["id"]))

    async def post_settings(self, request: web.Request) -> web.Response:
        try:
            body = await request.json()
        except (json.JSONDecodeError, UnicodeDecodeError):
            return _error(400, "the body must be a JSON object of settings")
        if not isinstance(body, dict):
            return _error(400, "the body must be a JSON object of settings")
        self._update_settings(self._settings_path(request), body)
        return web.Response(status=200)

    async def post_setting(self, request: web.Request) -> web.Response:
        try:
            value = await request.json()
        except (json.JSONDecodeError, UnicodeDecodeError):
            return _error(400, f"the body must be the JSON value of setting {request.match_info['id']!r}")
        self._update_settings(self._settings_path(request), {request.match_info["id"]: value})
        return web.Response(status=200)

    def _update_settings(self, path: Path, changes: dict) -> None:
        with self._lock:
            settings = self._read_settings(path)
            settings.update(changes)
            tmp = path.with_suffix(".tmp")
            tmp.write_text(json.dumps(settings, indent=4), encoding="utf-8")
            tmp.replace(path)  # a crash mid-write keeps the old file

    # --- files --------------------------------------------------------------------------------
    async def list_userdata(self, request: web.Request) -> web.Response:
        directory = request.query.get("dir", "")
        if not directory:
            return _error(400, "query parameter dir is required")
        path = self.resolve(request, directory, "dir")
        if not path.is_dir():
            return _error(404, f"dir {directory!r} not found")
        recurse = _flag(request, "recurse", False)
        full_info = _flag(request, "full_info", False)
        split = _flag(request, "split", False)
        files = sorted(p for p in (path.rglob("*") if recurse else path.iterdir()) if p.is_file())
        if full_info:
            return web.json_response([file_info(p, path) for p in files])
        names = [p.relative_to(path).as_posix() for p in files]
        if split:
            return web.json_response([[name, *name.split("/")] for name in names])
        return web.json_response(names)

    async def list_userdata_v2(self, request: web.Request) -> web.Response:
        relative = request.query.get("path", "")
        root = self.user_root(request)
        path = self.resolve(request, relative, "path") if relative else root
        if not path.exists():
            return _error(404, f"path {relative!r} not found")
        if not path.is_dir():
            return _error(400, f"path {relative!r} is not a directory")
        entries = []
        for child in sorted(path.iterdir(), key=lambda p: p.name):
            stat = child.stat()
            entry = {"name": child.name, "path": child.relative_to(root).as_posix(),
                     "type": "directory" if child.is_dir() else "file", "modified": stat.st_mtime}
            if child.is_file():
                entry["size"] = stat.st_size
            entries.append(entry)
        return web.json_response(entries)

    def _file(self, request: web.Request, param: str = "file") -> Path:
        name = request.match_info.get(param, "")
        if not name:
            raise web.HTTPBadRequest(text=f"{param} is required")
        path = self.resolve(request, name, param)
        if path == self.user_root(request):
            raise web.HTTPBadRequest(text=f"{param} must name a file inside the user folder")
        return path

    async def get_userdata(self, request: web.Request) -> web.StreamResponse:
        path = self._file(request)
        if not path.is_file():
            return _error(404, f"{request.match_info['file']} not found")
        return web.FileResponse(path)

    async def post_userdata(self, request: web.Request) -> web.Response:
        path = self._file(request)
        if path.exists() and not _flag(request, "overwrite", True):
            return _error(409, f"{request.match_info['file']} exists and overwrite is false")
        if path.is_dir():
            return _error(400, f"file {request.match_info['file']!r} is a directory")
        body = await request.read()  # bounded by the app's client_max_size: 413 beyond it
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(body)
        except OSError as exc:  # e.g. a folder of the path is a file
            return _error(400, f"file {request.match_info['file']!r} cannot be written: {exc.strerror}")
        return self._written(request, path)

    def _written(self, request: web.Request, path: Path) -> web.Response:
        root = self.user_root(request)
        if _flag(request, "full_info", False):
            return web.json_response(file_info(path, root))
        return web.json_response(path.relative_to(root).as_posix())

    async def delete_userdata(self, request: web.Request) -> web.Response:
        path = self._file(request)
        if not path.is_file():
            return _error(404, f"{request.match_info['file']} not found")
        path.unlink()
        return web.Response(status=204)

    async def move_userdata(self, request: web.Request) -> web.Response:
        source = self._file(request)
        dest = self._file(request, "dest")
        if not source.is_file():
            return _error(404, f"{request.match_info['file']} not found")
        if dest.exists() and not _flag(request, "overwrite", True):
            return _error(409, f"{request.match_info['dest']} exists and overwrite is false")
        try:
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.move(str(source), str(dest))
        except OSError as exc:
            return _error(400, f"dest {request.match_info['dest']!r} cannot be written: {exc.strerror}")
        return self._written(request, dest)
