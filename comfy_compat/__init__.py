"""The ComfyUI compatibility surface: what real custom-node packs import, mapped onto our App.

ComfyUI's extension API is module-level by design: a pack does `import folder_paths` or
`from server import PromptServer` at import time and calls plain functions. This package is the
one sanctioned exception to the project's "no module-level state" rule, and it keeps that state
to a single slot: the App bound now (`bind`/`unbind`, done by the App when it loads custom
nodes and when it shuts down). Every ComfyUI-named module reads it on each call, so an App built
later in the same process (tests start several) rebinds cleanly and no module keeps a stale App.

The ComfyUI-named modules (top-level, as ComfyUI lays them out; listed in README "ComfyUI
custom nodes"):
  folder_paths, node_helpers, latent_preview, execution,
  comfy.{utils, model_management, samplers, sample, sd, cli_args, comfy_types},
  comfy_execution.{graph, graph_utils}, comfy_api.latest (V3: io, ComfyNode, ComfyExtension),
  comfy_extras.nodes_* (the core nodes we have), and the ComfyUI names of our own `nodes` and
  `server` packages (nodes.MAX_RESOLUTION, nodes.<BuiltinClass>, nodes.common_ksampler,
  server.PromptServer, server.BinaryEventTypes).
Where a call cannot be honoured it raises `NotProvided` naming the call.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


class NotProvided(NotImplementedError, AttributeError):
    """A ComfyUI API this server does not provide. An AttributeError too, so `hasattr` and
    `getattr(module, name, default)` probes of optional features keep working."""


def not_provided(name: str, why: str = "") -> NotProvided:
    detail = f": {why}" if why else ""
    return NotProvided(f"{name} is not provided by sdxl-node-server's ComfyUI compatibility layer{detail} "
                       "(see README, 'ComfyUI custom nodes')")


def missing_attribute(module: str):
    """A module `__getattr__` that names the missing ComfyUI attribute instead of a bare AttributeError."""
    def __getattr__(name: str):
        if name.startswith("__"):
            raise AttributeError(name)
        raise not_provided(f"{module}.{name}")
    return __getattr__


@dataclass
class Binding:
    """What the ComfyUI modules see of the bound App."""

    app: Any  # server.app.App
    prompt_server: Any  # comfy_compat.prompt_server.PromptServer
    # folders of a pack's own (names ModelFolders does not have), from folder_paths.add_model_folder_path
    # or folder_names_and_paths[...] = ...: name -> ([directories], {extensions}). A directory added to
    # one of our folders becomes an extra root of the App's ModelFolders instead.
    pack_folders: dict[str, tuple[list[str], set[str] | None]] = field(default_factory=dict)

    @property
    def config(self):
        return self.app.config


_lock = threading.Lock()
_bound: Binding | None = None


def bind(app) -> Binding:
    """Make `app` the App the ComfyUI modules serve (replacing any App bound before)."""
    global _bound
    from .prompt_server import PromptServer

    with _lock:
        binding = Binding(app=app, prompt_server=PromptServer(app))
        _bound = binding
        PromptServer.instance = binding.prompt_server
    from .install_guard import install_hook
    install_hook()
    return binding


def unbind(app) -> None:
    """Forget `app` if it is the bound one (an older App shutting down leaves a newer binding alone)."""
    global _bound
    from .prompt_server import PromptServer

    with _lock:
        if _bound is not None and _bound.app is app:
            _bound = None
            PromptServer.instance = None


def bound(call: str = "this call") -> Binding:
    """The binding, or an error naming the ComfyUI call that needs a running server."""
    binding = _bound
    if binding is None:
        raise RuntimeError(f"{call} needs a running sdxl-node-server: the ComfyUI modules are bound when the "
                           "server loads custom nodes")
    return binding


def is_bound() -> bool:
    return _bound is not None


def base_path(binding: Binding) -> Path:
    """ComfyUI's root (folder_paths.base_path): the folder holding custom_nodes/."""
    folder = binding.config.custom_nodes_dir
    return Path(folder).resolve().parent if folder is not None else Path.cwd().resolve()
