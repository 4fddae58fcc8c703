"""The known model files (known_files.json): where each comes from, which folder it goes to,
its size and sha256 where known, and the capability that needs it."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

KNOWN_FILES = Path(__file__).with_name("known_files.json")
# preset download tables -> the folder their files go to (Fooocus' launch.py)
PRESET_TABLES = {"checkpoint": "checkpoints", "lora": "loras", "embeddings": "embeddings", "vae": "vae"}


@dataclass(frozen=True)
class KnownFile:
    folder: str
    name: str  # relative to the folder, '/'-separated (prompt_expansion/fooocus_expansion/config.json)
    url: str
    size: int | None = None
    sha256: str | None = None
    capability: str = ""

    @property
    def key(self) -> tuple[str, str]:
        return self.folder, self.name


class Catalog:
    def __init__(self, files: list[KnownFile]) -> None:
        self.files = list(files)
        self._by_key = {f.key: f for f in self.files}

    @classmethod
    def load(cls, path: str | Path = KNOWN_FILES) -> "Catalog":
        data = json.loads(Path(path).read_text(encoding="utf-8"))
        return cls([KnownFile(e["folder"], e["name"], e["url"], e.get("size"), e.get("sha256"),
                              e.get("capability", "")) for e in data["files"]])

    def get(self, folder: str, name: str) -> KnownFile | None:
        return self._by_key.get((folder, name))

    def capabilities(self) -> list[str]:
        return sorted({f.capability for f in self.files if f.capability and f.capability != "preset"})

    def for_capabilities(self, capabilities=None) -> list[KnownFile]:
        """Every capability's files (all when `capabilities` is None), preset checkpoints excluded."""
        return [f for f in self.files if f.capability != "preset"
                and (capabilities is None or f.capability in capabilities)]

    def with_url(self, folder: str, name: str, url: str) -> KnownFile:
        """A file a preset names: its URL from the preset, size and hash from the table when known."""
        known = self.get(folder, name)
        if known is not None:
            return KnownFile(folder, name, url, known.size, known.sha256, "preset")
        return KnownFile(folder, name, url, capability="preset")


def preset_files(preset, catalog: Catalog, available_checkpoints: list[str],
                 default_model: str | None = None) -> list[KnownFile]:
    """What Fooocus fetches at launch for a preset: its checkpoint, LoRA, embedding and VAE tables;
    the checkpoint table is skipped when the preset's model or one of its previous defaults is
    already there (Fooocus keeps an older default a user has instead of downloading the new one),
    or when `--default-model` names a checkpoint that is there (the user chose theirs)."""
    available = set(available_checkpoints)
    wanted = (preset.base_model, *preset.previous_base_models, *([default_model] if default_model else []))
    skip_checkpoints = any(name in available for name in wanted)
    files = []
    for kind, folder in PRESET_TABLES.items():
        if kind == "checkpoint" and skip_checkpoints:
            continue
        for name, url in preset.downloads(kind).items():
            files.append(catalog.with_url(folder, name, url))
    return files
