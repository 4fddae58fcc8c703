"""The services the App hands to nodes through their context (`graph.context.current().services`)."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class Services:
    folders: Any  # server.folders.ModelFolders: .list(folder), .path(folder, name)
    output_dir: Path
    input_dir: Path
    temp_dir: Path
    models: Any = None  # models.manager.ModelManager, made by the App
    options: Any = None  # server.config.AppConfig
    extras: dict = field(default_factory=dict)  # services added by node packs (style library, ...)
