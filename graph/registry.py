"""The node registry: one explicit object mapping class names to schemas.

Built-in packs and custom-node packs both hand their NODE_CLASS_MAPPINGS to `register_mappings`.
Custom packs are loaded from a folder as ComfyUI loads them: a `.py` file or a folder with an
`__init__.py`, imported as `custom_nodes.<pack>` under a real parent package `custom_nodes`
(whose path is the folder), so a pack's relative imports, its sub-folders without
`__init__.py` (namespace packages) and `import custom_nodes.<other pack>` all resolve. One that
fails to import is logged with its traceback and skipped so the server still starts;
`failed_packs` / `pack_errors` say why (served in /system_stats under `custom_nodes`).
"""
from __future__ import annotations

import importlib.machinery
import importlib.util
import logging
import sys
import time
import traceback
import types
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

from .errors import NodeRegistrationError
from .schema import NodeSchema

log = logging.getLogger(__name__)


PackReader = Callable[[str, types.ModuleType, Path], "tuple[Mapping[str, type], Mapping[str, str]]"]


def _module_mappings(pack: str, module: types.ModuleType, directory: Path):
    mappings = getattr(module, "NODE_CLASS_MAPPINGS", None)
    if not isinstance(mappings, Mapping):
        raise ImportError("the pack exports no NODE_CLASS_MAPPINGS dict")
    return mappings, getattr(module, "NODE_DISPLAY_NAME_MAPPINGS", None) or {}


def _install_parent_package(folder: Path) -> None:
    """A fresh `custom_nodes` package over `folder`; modules of an earlier load (another App in
    this process, maybe another folder) are dropped so every pack imports afresh."""
    for name in [n for n in sys.modules if n == "custom_nodes" or n.startswith("custom_nodes.")]:
        del sys.modules[name]
    parent = types.ModuleType("custom_nodes", "custom-node packs (sdxl-node-server loader)")
    parent.__path__ = [str(folder.resolve())]
    parent.__file__ = None
    parent.__spec__ = importlib.machinery.ModuleSpec("custom_nodes", None, is_package=True)
    parent.__spec__.submodule_search_locations = parent.__path__
    sys.modules["custom_nodes"] = parent


class NodeRegistry:
    def __init__(self, resolve_folder: Callable[[str], list[str]] | None = None) -> None:
        self._schemas: dict[str, NodeSchema] = {}
        self._builtin: set[str] = set()
        self.resolve_folder = resolve_folder
        self.failed_packs: dict[str, str] = {}
        self.pack_errors: dict[str, dict[str, str]] = {}  # pack -> {"error", "path", "traceback"}
        self.loaded_packs: dict[str, float] = {}

    # --- registration -------------------------------------------------------------------------
    def register(self, name: str, node_class: type, display_name: str | None = None,
                 python_module: str = "nodes", builtin: bool = False) -> NodeSchema:
        if name in self._builtin and not builtin:
            raise NodeRegistrationError(f"node {name}: a built-in node of that name exists and cannot be replaced")
        schema = NodeSchema.from_v1(name, node_class, display_name, python_module)
        self._schemas[name] = schema
        if builtin:
            self._builtin.add(name)
        return schema

    def register_mappings(self, mappings: Mapping[str, type], display_names: Mapping[str, str] | None = None,
                          python_module: str = "nodes", builtin: bool = False) -> list[str]:
        """Register a pack's NODE_CLASS_MAPPINGS; returns the names registered. A bad class is skipped."""
        registered = []
        for name, node_class in mappings.items():
            try:
                self.register(name, node_class, (display_names or {}).get(name), python_module, builtin)
                registered.append(name)
            except NodeRegistrationError as exc:
                log.error("node %s from %s skipped: %s", name, python_module, exc)
        return registered

    def load_custom_nodes(self, folder: str | Path, read_pack: PackReader | None = None) -> None:
        """Import every `.py` file and package of `folder`; `read_pack(pack, module, directory)`
        returns its (NODE_CLASS_MAPPINGS, display names); by default the module's own."""
        folder = Path(folder)
        if not folder.is_dir():
            return
        _install_parent_package(folder)
        for entry in sorted(folder.iterdir()):
            if entry.name.startswith((".", "__")) or entry.name.endswith(".disabled"):
                continue
            if entry.is_file() and entry.suffix == ".py":
                self._load_pack(entry.stem, entry, None, read_pack or _module_mappings)
            elif entry.is_dir() and (entry / "__init__.py").is_file():
                self._load_pack(entry.name, entry / "__init__.py", [str(entry)], read_pack or _module_mappings)

    def _load_pack(self, pack: str, init_file: Path, search_locations: list[str] | None,
                   read_pack: PackReader) -> None:
        module_name = f"custom_nodes.{pack}"
        started = time.perf_counter()
        try:
            spec = importlib.util.spec_from_file_location(module_name, init_file,
                                                          submodule_search_locations=search_locations)
            if spec is None or spec.loader is None:
                raise ImportError(f"cannot import {init_file}")
            module = importlib.util.module_from_spec(spec)
            sys.modules[module_name] = module  # so the pack's relative imports resolve
            try:
                spec.loader.exec_module(module)
            except BaseException:
                sys.modules.pop(module_name, None)
                raise
            setattr(sys.modules["custom_nodes"], pack, module)
            mappings, display = read_pack(pack, module, init_file.parent)
            self.register_mappings(mappings, display, python_module=module_name)
            self.loaded_packs[pack] = time.perf_counter() - started
        except Exception as exc:  # any failure of third-party code: log it, skip the pack, keep starting
            self.failed_packs[pack] = f"{type(exc).__name__}: {exc}"
            self.pack_errors[pack] = {"error": self.failed_packs[pack], "path": str(init_file),
                                      "traceback": traceback.format_exc()}
            log.error("IMPORT FAILED: custom node pack %s (%s)\n%s", pack, init_file, traceback.format_exc())

    # --- lookup -------------------------------------------------------------------------------
    def get(self, name: str) -> NodeSchema | None:
        return self._schemas.get(name)

    def __contains__(self, name: object) -> bool:
        return name in self._schemas

    def names(self) -> Iterable[str]:
        return self._schemas.keys()

    def combo_choices(self, schema: NodeSchema, input_name: str) -> list | None:
        spec = schema.input(input_name)
        return spec.combo_choices(self.resolve_folder) if spec else None

    # --- /object_info -------------------------------------------------------------------------
    def object_info(self, name: str) -> dict[str, Any]:
        schema = self._schemas[name]
        sections: dict[str, dict[str, Any]] = {"required": {}, "optional": {}}
        order: dict[str, list[str]] = {"required": [], "optional": []}
        for spec in schema.inputs:
            section = "required" if spec.required else "optional"
            sections[section][spec.name] = self._render_input(spec)
            order[section].append(spec.name)
        if not sections["optional"]:  # ComfyUI lists "optional" only for nodes that have such inputs
            del sections["optional"], order["optional"]
        if schema.hidden:
            sections["hidden"] = dict(schema.hidden)
        info: dict[str, Any] = {
            "input": sections,
            "input_order": order,
            "output": list(schema.outputs),
            "output_is_list": list(schema.output_is_list),
            "output_name": list(schema.output_names),
            "name": schema.name,
            "display_name": schema.display_name,
            "description": schema.description,
            "python_module": schema.python_module,
            "category": schema.category,
            "output_node": schema.output_node,
        }
        for key, value in schema.extra_info.items():
            info[key.lower()] = list(value) if isinstance(value, tuple) else value
        return info

    def _render_input(self, spec) -> list:
        options = {k: v for k, v in spec.options.items() if k != "folder"}
        if spec.folder is not None:
            return [spec.combo_choices(self.resolve_folder), options]
        if spec.choices is not None:
            return [list(spec.choices), options] if options else [list(spec.choices)]
        return [spec.type, options] if options else [spec.type]
