"""Generation metadata embedded in output images (specs/fooocus_pipeline.md §14, fooocus_api.md §7).

A `GenerationRecord` describes one generated image. It renders as
* the `fooocus` scheme: a JSON object with sorted keys, or
* the `a1111` scheme: AUTOMATIC1111's "parameters" text (prompt line, "Negative prompt: ..."
  line, "Steps: N, Sampler: ..., ..." line),
and is stored as PNG text chunks `parameters` + `fooocus_scheme`, or for JPEG/WebP as EXIF
UserComment (0x9286) = text, Software (0x0131), MakerNote (0x927C) = scheme.
`read_metadata` reads any of these back (tests, describe, clients re-using parameters).
"""

from __future__ import annotations

import io
import json
import re
from dataclasses import dataclass, field
from pathlib import Path, PurePath
from typing import Any, Optional, Sequence, Union

from PIL import Image, PngImagePlugin

from server.fooocus.requests import MetaScheme

FOOOCUS_VERSION = "Fooocus v2.5.5"
DEFAULT_ADAPTIVE_CFG = 7.0

EXIF_USER_COMMENT = 0x9286
EXIF_SOFTWARE = 0x0131
EXIF_MAKER_NOTE = 0x927C
PNG_PARAMETERS_KEY = "parameters"
PNG_SCHEME_KEY = "fooocus_scheme"
# EXIF UserComment charset prefixes (EXIF 2.3 §4.6.5).
_UNICODE_PREFIX = b"UNICODE\0"
_ASCII_PREFIX = b"ASCII\0\0\0"

# Fooocus sampler id -> A1111 / Civitai label; "" keeps the Fooocus id.
A1111_SAMPLER_LABELS = {
    "euler": "Euler", "euler_ancestral": "Euler a", "heun": "Heun", "heunpp2": "",
    "dpm_2": "DPM2", "dpm_2_ancestral": "DPM2 a", "lms": "LMS", "dpm_fast": "DPM fast",
    "dpm_adaptive": "DPM adaptive", "dpmpp_2s_ancestral": "DPM++ 2S a", "dpmpp_sde": "DPM++ SDE",
    "dpmpp_sde_gpu": "DPM++ SDE", "dpmpp_2m": "DPM++ 2M", "dpmpp_2m_sde": "DPM++ 2M SDE",
    "dpmpp_2m_sde_gpu": "DPM++ 2M SDE", "dpmpp_3m_sde": "", "dpmpp_3m_sde_gpu": "", "ddpm": "",
    "lcm": "LCM", "tcd": "TCD", "restart": "Restart", "ddim": "DDIM", "uni_pc": "UniPC",
    "uni_pc_bh2": "",
}  # fmt: skip


@dataclass(frozen=True)
class LoraRecord:
    file_name: str
    weight: float
    hash: str = ""


@dataclass(frozen=True)
class GenerationRecord:
    """What was used to make one image; model names are file names (stems are derived)."""

    prompt: str
    negative_prompt: str
    styles: Sequence[str]  # as applied: "Fooocus V2" first when the expansion was used
    performance: str
    steps: int
    width: int
    height: int
    guidance_scale: float
    sharpness: float
    adm_guidance: tuple[float, float, float]
    base_model: str
    sampler: str
    scheduler: str
    seed: Union[int, str]
    prompt_expansion: str = ""
    base_model_hash: str = ""
    refiner_model: str = "None"
    refiner_model_hash: str = ""
    refiner_switch: float = 0.5
    overwrite_switch: float = -1
    refiner_swap_method: str = "joint"
    adaptive_cfg: float = DEFAULT_ADAPTIVE_CFG
    clip_skip: int = 2
    vae: str = "Default (model)"
    freeu: Optional[tuple[float, float, float, float]] = None  # (b1, b2, s1, s2) when enabled
    loras: Sequence[LoraRecord] = ()
    full_prompt: Sequence[str] = ()  # positive prompt workloads (styles applied)
    full_negative_prompt: Sequence[str] = ()
    version: str = FOOOCUS_VERSION
    created_by: str = ""

    @property
    def has_refiner(self) -> bool:
        return self.refiner_model not in ("", "None")


def _stem(file_name: str) -> str:
    return PurePath(file_name).stem


def log_entries(record: GenerationRecord, scheme: MetaScheme) -> list[tuple[str, str, Any]]:
    """(label, key, value) rows in Fooocus' log order; optional rows only when they matter."""
    rows: list[tuple[str, str, Any]] = [
        ("Prompt", "prompt", record.prompt),
        ("Negative Prompt", "negative_prompt", record.negative_prompt),
        ("Fooocus V2 Expansion", "prompt_expansion", record.prompt_expansion),
        ("Styles", "styles", repr(list(record.styles))),
        ("Performance", "performance", record.performance),
        ("Steps", "steps", record.steps),
        ("Resolution", "resolution", str((record.width, record.height))),
        ("Guidance Scale", "guidance_scale", record.guidance_scale),
        ("Sharpness", "sharpness", record.sharpness),
        ("ADM Guidance", "adm_guidance", str(tuple(record.adm_guidance))),
        ("Base Model", "base_model", record.base_model),
        ("Refiner Model", "refiner_model", record.refiner_model),
        ("Refiner Switch", "refiner_switch", record.refiner_switch),
    ]
    # The switch override and swap method only change anything when a refiner runs.
    if record.has_refiner and record.overwrite_switch > 0:
        rows.append(("Overwrite Switch", "overwrite_switch", record.overwrite_switch))
    if record.has_refiner and record.refiner_swap_method != "joint":
        rows.append(("Refiner Swap Method", "refiner_swap_method", record.refiner_swap_method))
    if record.adaptive_cfg != DEFAULT_ADAPTIVE_CFG:
        rows.append(("CFG Mimicking from TSNR", "adaptive_cfg", record.adaptive_cfg))
    if record.clip_skip > 1:
        rows.append(("CLIP Skip", "clip_skip", record.clip_skip))
    rows += [
        ("Sampler", "sampler", record.sampler),
        ("Scheduler", "scheduler", record.scheduler),
        ("VAE", "vae", record.vae),
        ("Seed", "seed", str(record.seed)),
    ]
    if record.freeu is not None:
        rows.append(("FreeU", "freeu", str(tuple(record.freeu))))
    for index, lora in enumerate(record.loras, start=1):
        rows.append((f"LoRA {index}", f"lora_combined_{index}", f"{lora.file_name} : {lora.weight}"))
    rows += [
        ("Metadata Scheme", "metadata_scheme", scheme.value),
        ("Version", "version", record.version),
    ]
    return rows


def fooocus_metadata_text(record: GenerationRecord) -> str:
    """The `fooocus` scheme: sorted JSON of the log keys plus prompts, models, hashes, LoRAs."""
    data: dict[str, Any] = {}
    for _, key, value in log_entries(record, MetaScheme.FOOOCUS):
        if key.startswith("lora_combined_"):
            name, weight = value.rsplit(" : ", 1)
            value = f"{_stem(name)} : {weight}"
        data[key] = value
    data["full_prompt"] = list(record.full_prompt)
    data["full_negative_prompt"] = list(record.full_negative_prompt)
    data["steps"] = record.steps
    data["base_model"] = _stem(record.base_model)
    data["base_model_hash"] = record.base_model_hash
    if record.has_refiner:
        data["refiner_model"] = _stem(record.refiner_model)
        data["refiner_model_hash"] = record.refiner_model_hash
    data["vae"] = _stem(record.vae)
    data["loras"] = [[_stem(lora.file_name), lora.weight, lora.hash] for lora in record.loras]
    if record.created_by:
        data["created_by"] = record.created_by
    return json.dumps(data, sort_keys=True)


def _a1111_quote(value: Any) -> str:
    """A1111 keeps a value bare unless a comma, colon or newline would break the line."""
    text = str(value)
    if "," in text or ":" in text or "\n" in text:
        return json.dumps(text, ensure_ascii=False)
    return text


def a1111_sampler_label(sampler: str, scheduler: str) -> str:
    label = A1111_SAMPLER_LABELS.get(sampler, "")
    if not label:
        return sampler
    # Fooocus means to skip " Karras" for some samplers, but compares the wrong names, so in
    # practice it is always appended for the karras scheduler; files in the wild look like that.
    return f"{label} Karras" if scheduler == "karras" else label


def a1111_metadata_text(record: GenerationRecord) -> str:
    """The `a1111` scheme: '<prompt>\\nNegative prompt: <neg>\\n<Key: value, ...>'."""
    logged = {key: value for _, key, value in log_entries(record, MetaScheme.A1111)}
    params: dict[str, Any] = {
        "Steps": record.steps,
        "Sampler": a1111_sampler_label(record.sampler, record.scheduler),
        "Seed": logged["seed"],
        "Size": f"{record.width}x{record.height}",
        "CFG scale": record.guidance_scale,
        "Sharpness": record.sharpness,
        "ADM Guidance": logged["adm_guidance"],
        "Model": _stem(record.base_model),
        "Model hash": record.base_model_hash,
        "Performance": record.performance,
        "Scheduler": record.scheduler,
        "VAE": _stem(record.vae),
        "Raw prompt": record.prompt,
        "Raw negative prompt": record.negative_prompt,
    }
    if record.has_refiner:
        params["Refiner"] = _stem(record.refiner_model)
        params["Refiner hash"] = record.refiner_model_hash
    optional = (
        ("adaptive_cfg", "Adaptive CFG"),
        ("clip_skip", "Clip skip"),
        ("overwrite_switch", "Overwrite Switch"),
        ("refiner_swap_method", "Refiner Swap Method"),
        ("freeu", "FreeU"),
    )
    for key, label in optional:
        if key in logged:
            params[label] = logged[key]
    if record.loras:
        params["Lora hashes"] = ", ".join(f"{_stem(l.file_name)}: {l.hash}" for l in record.loras)
        params["Lora weights"] = ", ".join(f"{_stem(l.file_name)}: {l.weight}" for l in record.loras)
    params["Version"] = record.version
    if record.created_by:
        params["User"] = record.created_by

    line = ", ".join(
        key if key == value else f"{key}: {_a1111_quote(value)}"
        for key, value in params.items()
        if value is not None
    )
    positive = ", ".join(record.full_prompt) if record.full_prompt else record.prompt
    negative = (
        ", ".join(record.full_negative_prompt) if record.full_negative_prompt else record.negative_prompt
    )
    return f"{positive}\nNegative prompt: {negative}\n{line}".strip()


def metadata_text(record: GenerationRecord, scheme: MetaScheme) -> str:
    if scheme is MetaScheme.A1111:
        return a1111_metadata_text(record)
    return fooocus_metadata_text(record)


# ------------------------------------------------------------------ containers


@dataclass(frozen=True)
class EmbeddedMetadata:
    """What goes into the file: the rendered text and its scheme."""

    text: str
    scheme: MetaScheme
    software: str = FOOOCUS_VERSION

    @classmethod
    def of(cls, record: GenerationRecord, scheme: MetaScheme) -> "EmbeddedMetadata":
        return cls(metadata_text(record, scheme), scheme, record.version)


# save_extension -> Pillow format name ("jpg" has no Pillow format of its own).
PILLOW_FORMATS = {"png": "PNG", "jpeg": "JPEG", "jpg": "JPEG", "webp": "WEBP"}


def _user_comment_value(text: str) -> Union[str, bytes]:
    # Pillow writes str tags as ASCII ('?' for anything else), as Fooocus' files have it. Keep
    # ASCII text identical to that and store other text as EXIF "UNICODE" (UTF-16 big-endian).
    if text.isascii():
        return text
    return _UNICODE_PREFIX + text.encode("utf-16-be")


def pillow_save_options(extension: str, metadata: Optional[EmbeddedMetadata]) -> dict[str, Any]:
    """Keyword arguments for PIL.Image.save: format, quality and the metadata container."""
    fmt = PILLOW_FORMATS[extension.lower()]
    options: dict[str, Any] = {"format": fmt}
    if fmt == "JPEG":
        options.update(quality=95, optimize=True, progressive=True)
    elif fmt == "WEBP":
        options.update(quality=95, lossless=False)
    if metadata is None:
        return options
    if fmt == "PNG":
        info = PngImagePlugin.PngInfo()
        info.add_text(PNG_PARAMETERS_KEY, metadata.text)
        info.add_text(PNG_SCHEME_KEY, metadata.scheme.value)
        options["pnginfo"] = info
    else:
        exif = Image.Exif()
        exif[EXIF_USER_COMMENT] = _user_comment_value(metadata.text)
        exif[EXIF_SOFTWARE] = metadata.software
        exif[EXIF_MAKER_NOTE] = metadata.scheme.value
        options["exif"] = exif
    return options


def encode_image(
    image: Image.Image, extension: str, metadata: Optional[EmbeddedMetadata] = None
) -> bytes:
    """Encode `image` as png/jpeg/jpg/webp bytes with the metadata container of that format."""
    options = pillow_save_options(extension, metadata)
    if options["format"] == "JPEG" and image.mode not in ("RGB", "L"):
        image = image.convert("RGB")
    buffer = io.BytesIO()
    image.save(buffer, **options)
    return buffer.getvalue()


# ------------------------------------------------------------------ reading back


@dataclass(frozen=True)
class ReadMetadata:
    text: str
    scheme: MetaScheme
    software: Optional[str] = None
    parsed: dict[str, Any] = field(default_factory=dict)


def _decode_exif_text(value: Any) -> Optional[str]:
    if value is None:
        return None
    if isinstance(value, str):
        return value
    if isinstance(value, bytes):
        if value.startswith(_UNICODE_PREFIX):
            return value[len(_UNICODE_PREFIX):].decode("utf-16-be", "replace")
        if value.startswith(_ASCII_PREFIX):
            value = value[len(_ASCII_PREFIX):]
        return value.rstrip(b"\0").decode("utf-8", "replace")
    return str(value)


_A1111_PARAM = re.compile(r'\s*([^:,]+):\s*("(?:\\.|[^\\"])*"|[^,]*)(?:,|$)')


def parse_a1111_parameters(text: str) -> dict[str, Any]:
    """{'prompt', 'negative_prompt', 'parameters': {key: value}} from an A1111 text."""
    lines = text.split("\n")
    params: dict[str, str] = {}
    if lines and _A1111_PARAM.match(lines[-1]) and lines[-1].lstrip().startswith("Steps:"):
        for key, raw in _A1111_PARAM.findall(lines.pop()):
            params[key.strip()] = json.loads(raw) if raw.startswith('"') else raw.strip()
    negative_at = next(
        (i for i, line in enumerate(lines) if line.startswith("Negative prompt:")), len(lines)
    )
    negative = "\n".join(lines[negative_at:])[len("Negative prompt:"):].strip()
    return {"prompt": "\n".join(lines[:negative_at]), "negative_prompt": negative, "parameters": params}


def _parse(text: str, scheme: MetaScheme) -> dict[str, Any]:
    if scheme is MetaScheme.FOOOCUS:
        try:
            decoded = json.loads(text)
        except ValueError:
            return {}
        return decoded if isinstance(decoded, dict) else {}
    return parse_a1111_parameters(text)


def _guess_scheme(text: str) -> MetaScheme:
    # Files without a scheme marker: a JSON object means fooocus, anything else a1111.
    try:
        return MetaScheme.FOOOCUS if isinstance(json.loads(text), dict) else MetaScheme.A1111
    except ValueError:
        return MetaScheme.A1111


def read_metadata(source: Union[bytes, str, Path, Image.Image]) -> Optional[ReadMetadata]:
    """Metadata of an image file, its bytes or an opened image; None when there is none."""
    if isinstance(source, Image.Image):
        return _read_open_image(source)
    with Image.open(io.BytesIO(source) if isinstance(source, bytes) else source) as image:
        return _read_open_image(image)


def _read_open_image(image: Image.Image) -> Optional[ReadMetadata]:
    text = scheme_name = software = None
    if image.format == "PNG" or PNG_PARAMETERS_KEY in image.info:
        text = image.info.get(PNG_PARAMETERS_KEY)
        scheme_name = image.info.get(PNG_SCHEME_KEY)
    if text is None:
        exif = image.getexif()
        text = _decode_exif_text(exif.get(EXIF_USER_COMMENT))
        scheme_name = _decode_exif_text(exif.get(EXIF_MAKER_NOTE))
        software = _decode_exif_text(exif.get(EXIF_SOFTWARE))
    if not text:
        return None
    try:
        scheme = MetaScheme(scheme_name) if scheme_name else _guess_scheme(text)
    except ValueError:
        scheme = _guess_scheme(text)
    return ReadMetadata(text=text, scheme=scheme, software=software, parsed=_parse(text, scheme))
