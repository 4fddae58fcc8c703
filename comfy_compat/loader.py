"""Loading custom-node packs the way ComfyUI does, over our registry.

The App calls `load_custom_nodes(app, folder)` once it is built: the ComfyUI modules are bound
to it first (packs call them at import), each pack's prestartup_script.py runs, then
graph.NodeRegistry imports each pack (see its
docstring for module names and the parent package) and hands its module to `read_pack` here:
V1 NODE_CLASS_MAPPINGS (V3 classes in it adapted too), else a V3 `comfy_entrypoint`, and the
pack's WEB_DIRECTORY, served under /extensions/<pack>/.
"""
from __future__ import annotations

import importlib.util
import inspect
import logging
import traceback
from pathlib import Path
from typing import Mapping

from . import bind
from .v3 import adapt, is_v3_node, run_coroutine

log = logging.getLogger(__name__)


def load_custom_nodes(app, folder) -> None:
    binding = bind(app)
    app.prompt_server = binding.prompt_server
    run_prestartup_scripts(Path(folder))
    app.registry.load_custom_nodes(folder, read_pack=lambda pack, module, directory:
                                   read_pack(app, pack, module, directory))


def run_prestartup_scripts(folder: Path) -> None:
    """ComfyUI runs each pack's prestartup_script.py before any pack imports (packs set
    environment variables or patch things there); a failing one is logged and the start goes on."""
    if not folder.is_dir():
        return
    for script in sorted(folder.glob("*/prestartup_script.py")):
        if script.parent.name.startswith(".") or script.parent.name.endswith(".disabled"):
            continue
        try:
            spec = importlib.util.spec_from_file_location(f"{script.parent.name}.prestartup_script", script)
            spec.loader.exec_module(importlib.util.module_from_spec(spec))
        except Exception:  # third-party code: log it, keep starting
            log.error("prestartup script of custom node pack %s failed\n%s", script.parent.name,
                      traceback.format_exc())


def read_pack(app, pack: str, module, directory: Path) -> tuple[dict, dict]:
    mappings = getattr(module, "NODE_CLASS_MAPPINGS", None)
    display = dict(getattr(module, "NODE_DISPLAY_NAME_MAPPINGS", None) or {})
    if mappings is not None:
        if not isinstance(mappings, Mapping):
            raise ImportError("NODE_CLASS_MAPPINGS is not a dict")
        classes = {}
        for name, node_class in mappings.items():
            if is_v3_node(node_class):
                _, node_class, shown = adapt(node_class)
                if shown and name not in display:
                    display[name] = shown
            classes[name] = node_class
    elif callable(getattr(module, "comfy_entrypoint", None)):
        classes = _v3_entrypoint(module, display)
    else:
        raise ImportError("the pack exports neither NODE_CLASS_MAPPINGS nor comfy_entrypoint")
    _web_directory(app, pack, module, directory)
    return classes, display


def _v3_entrypoint(module, display: dict) -> dict:
    extension = module.comfy_entrypoint()
    if inspect.isawaitable(extension):
        extension = run_coroutine(extension)
    if hasattr(extension, "on_load"):
        loaded = extension.on_load()
        if inspect.isawaitable(loaded):
            run_coroutine(loaded)
    node_list = extension.get_node_list()
    if inspect.isawaitable(node_list):
        node_list = run_coroutine(node_list)
    classes = {}
    for node_cls in node_list:
        if not is_v3_node(node_cls):
            raise TypeError(f"get_node_list() returned {node_cls!r}, which is not an io.ComfyNode subclass")
        node_id, adapted, shown = adapt(node_cls)
        classes[node_id] = adapted
        if shown:
            display[node_id] = shown
    return classes


def _web_directory(app, pack: str, module, directory: Path) -> None:
    """ComfyUI's WEB_DIRECTORY: a folder (relative to the pack's folder) of front-end files."""
    web_dir = getattr(module, "WEB_DIRECTORY", None)
    if web_dir is None:
        return
    path = (directory / web_dir).resolve()
    if path.is_dir():
        app.web_directories[pack] = path
    else:
        log.warning("custom node pack %s: WEB_DIRECTORY %s is not a folder; no front-end files served", pack, path)
