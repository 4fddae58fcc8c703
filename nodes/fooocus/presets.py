"""Fooocus presets: JSON files of ``default_*`` keys that set the request defaults.

Our shipped presets live in ``data/presets``; a user presets folder may add or replace
presets (same file stem = later wins). Keys a preset leaves out come from our ``default``
preset, so a user preset can be as small as ``{"default_model": "x.safetensors"}``.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, replace
from pathlib import Path
from types import MappingProxyType
from typing import Any, Iterable, Mapping, Optional, Sequence

BUILTIN_PRESETS_DIR = Path(__file__).parent / "data" / "presets"
DEFAULT_PRESET = "default"
MAX_LORA_SLOTS = 5  # Fooocus default_max_lora_number


@dataclass(frozen=True)
class LoraSlot:
    enabled: bool
    name: str  # file name in the loras folder, or "None"
    weight: float

    def as_json(self) -> list:
        return [self.enabled, self.name, self.weight]


@dataclass(frozen=True)
class Preset:
    name: str
    base_model: str
    previous_base_models: tuple[str, ...]
    refiner_model: str
    refiner_switch: float
    loras: tuple[LoraSlot, ...]
    cfg_scale: float
    sharpness: float
    sampler: str
    scheduler: str
    performance: str
    prompt: str
    negative_prompt: str
    styles: tuple[str, ...]
    aspect_ratio: str  # "W*H"
    vae: str
    overwrite_step: int
    inpaint_engine: str
    raw: Mapping[str, Any]  # the merged JSON, read-only (download tables etc.)

    @property
    def width_height(self) -> tuple[int, int]:
        return parse_aspect_ratio(self.aspect_ratio)

    def enabled_loras(self) -> list[tuple[str, float]]:
        """(name, weight) of the enabled slots that name a file, in slot order."""
        return [(s.name, s.weight) for s in self.loras if s.enabled and s.name != "None"]

    def downloads(self, kind: str) -> Mapping[str, str]:
        """``checkpoint``, ``lora``, ``vae`` or ``embeddings`` download table (file -> URL)."""
        return dict(self.raw.get(f"{kind}_downloads") or {})


def parse_aspect_ratio(text: str) -> tuple[int, int]:
    """'1152*896', '1152×896' or '1152×896 ∣ 9:7' -> (1152, 896)."""
    match = re.match(r"\s*(\d+)\s*[*×xX]\s*(\d+)", str(text))
    if not match:
        raise ValueError(f"aspect ratio {text!r} is not 'WIDTH*HEIGHT'")
    return int(match.group(1)), int(match.group(2))


def _lora_slots(entries: Sequence[Any], slots: int) -> tuple[LoraSlot, ...]:
    out = []
    for entry in list(entries)[:slots]:
        if isinstance(entry, Mapping):  # {"enabled", "model_name", "weight"} (API shape)
            out.append(LoraSlot(bool(entry.get("enabled", True)), str(entry["model_name"]), float(entry.get("weight", 1.0))))
        elif len(entry) == 3:  # [enabled, name, weight] (Fooocus 2.5)
            out.append(LoraSlot(bool(entry[0]), str(entry[1]), float(entry[2])))
        else:  # [name, weight] (older presets)
            out.append(LoraSlot(True, str(entry[0]), float(entry[1])))
    while len(out) < slots:
        out.append(LoraSlot(True, "None", 1.0))
    return tuple(out)


def preset_from_json(name: str, data: Mapping[str, Any], *, lora_slots: int = MAX_LORA_SLOTS) -> Preset:
    """Build a Preset from a complete (already merged) preset dictionary."""
    aspect = str(data["default_aspect_ratio"])
    width, height = parse_aspect_ratio(aspect)
    return Preset(
        name=name,
        base_model=str(data["default_model"]),
        previous_base_models=tuple(data.get("previous_default_models") or ()),
        refiner_model=str(data.get("default_refiner") or "None"),
        refiner_switch=float(data["default_refiner_switch"]),
        loras=_lora_slots(data.get("default_loras") or (), lora_slots),
        cfg_scale=float(data["default_cfg_scale"]),
        sharpness=float(data["default_sample_sharpness"]),
        sampler=str(data["default_sampler"]),
        scheduler=str(data["default_scheduler"]),
        performance=str(data["default_performance"]),
        prompt=str(data.get("default_prompt") or ""),
        negative_prompt=str(data.get("default_prompt_negative") or ""),
        styles=tuple(data.get("default_styles") or ()),
        aspect_ratio=f"{width}*{height}",
        vae=str(data.get("default_vae") or "Default (model)"),
        overwrite_step=int(data.get("default_overwrite_step", -1)),
        inpaint_engine=str(data.get("default_inpaint_engine_version") or "v2.6"),
        raw=MappingProxyType(dict(data)),
    )


class PresetLibrary:
    """Preset JSON files by name: ours, then user folders (a later file with the same stem wins)."""

    def __init__(self, files: Mapping[str, Path]):
        self._files = dict(files)
        if DEFAULT_PRESET not in self._files:
            raise ValueError("a preset library needs a 'default' preset")

    @classmethod
    def load(cls, user_dirs: Iterable[str | Path] = ()) -> "PresetLibrary":
        files: dict[str, Path] = {}
        for folder in [BUILTIN_PRESETS_DIR, *map(Path, user_dirs)]:
            if folder.is_dir():
                for path in sorted(folder.glob("*.json")):
                    files[path.stem] = path
        return cls(files)

    def names(self) -> list[str]:
        return sorted(self._files)

    def raw(self, name: str) -> dict[str, Any]:
        """The preset's own JSON (not merged)."""
        if name not in self._files:
            raise KeyError(f"unknown preset {name!r}; known presets: {', '.join(self.names())}")
        data = json.loads(self._files[name].read_text(encoding="utf-8"))
        if not isinstance(data, dict):
            raise ValueError(f"preset file {self._files[name]} is not a JSON object")
        return data

    def get(self, name: str = DEFAULT_PRESET) -> Preset:
        """The named preset, with keys it leaves out taken from the default preset."""
        merged = dict(self.raw(DEFAULT_PRESET)) if name != DEFAULT_PRESET else {}
        if name != DEFAULT_PRESET:
            # Model fallbacks belong to one model; do not inherit the default's list.
            merged.pop("previous_default_models", None)
        merged.update(self.raw(name))
        return preset_from_json(name, merged)


def resolve_base_model(
    preset: Preset,
    available_checkpoints: Optional[Iterable[str]],
    *,
    always_download_new_model: bool = False,
) -> str:
    """The preset's model, or the first of its ``previous_default_models`` that is present.

    Fooocus keeps using an older default a user already has instead of downloading the new one
    (unless --always-download-new-model). With no listing the preset's model is returned.
    """
    if available_checkpoints is None or always_download_new_model:
        return preset.base_model
    available = set(available_checkpoints)
    if preset.base_model in available:
        return preset.base_model
    for previous in preset.previous_base_models:
        if previous in available:
            return previous
    return preset.base_model


def startup_preset(
    library: PresetLibrary,
    preset_name: Optional[str] = None,
    *,
    default_model: Optional[str] = None,
    available_checkpoints: Optional[Iterable[str]] = None,
    always_download_new_model: bool = False,
) -> Preset:
    """The preset a server starts with: ``--preset NAME`` (else default), then ``--default-model``.

    ``default_model`` wins over everything; otherwise the base model goes through
    ``resolve_base_model``. Raises KeyError naming the known presets for an unknown name.
    """
    preset = library.get(preset_name or DEFAULT_PRESET)
    if default_model:
        return replace(preset, base_model=default_model)
    model = resolve_base_model(preset, available_checkpoints, always_download_new_model=always_download_new_model)
    return replace(preset, base_model=model)
