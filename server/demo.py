"""Offline demo: tiny random-weight models so the server runs end to end without downloads."""
from __future__ import annotations

import logging
from pathlib import Path

from .config import AppConfig
from .folders import ModelFolders

log = logging.getLogger(__name__)

DEMO_PREFIX = "tiny-"
BANNER = """
==========================================================================================
 DEMO MODELS ONLY: {models_dir}/checkpoints holds no real checkpoint, so tiny random-weight
 demo models are served. Every image they make is NOISE.
 Put real SDXL checkpoints (.safetensors) into {models_dir}/checkpoints/ (e.g.
 juggernautXL_v8Rundiffusion.safetensors from Civitai/Hugging Face, or
 sd_xl_base_1.0.safetensors from stabilityai/stable-diffusion-xl-base-1.0) and LoRAs into
 {models_dir}/loras/. See README.md, "Model folders".
==========================================================================================
"""


def write_demo_models(directory: Path) -> list[str]:
    """Writes the demo files missing under `directory` (an existing file, perhaps a real model
    under the same name, is never replaced); returns the names of the writers that ran."""
    directory = Path(directory)
    written = []
    for name, present, write in _demo_writers():
        if not present(directory):
            if write(directory) is not False:
                written.append(name)
    return written


def _demo_writers():
    """(name, present(directory), write(directory)) per kind of demo file; a writer returns False
    when its optional dependency is missing."""
    from models.tiny import DEMO_CHECKPOINTS, DEMO_LORA
    from models.tiny import write_demo_models as write_models
    from models.tiny_text import write_tiny_tokenizer
    from models.tiny_upscaler import FOOOCUS_UPSCALER_NAME, write_tiny_fooocus_upscaler
    from nodes.loaders import TINY_TOKENIZER_DIR

    upscaler = f"upscale_models/{FOOOCUS_UPSCALER_NAME}"
    return [
        ("checkpoints", lambda d: all((d / name).exists() for name in (*DEMO_CHECKPOINTS, DEMO_LORA)), write_models),
        ("tokenizer", lambda d: (d / TINY_TOKENIZER_DIR / "vocab.json").exists(),
         lambda d: write_tiny_tokenizer(d / TINY_TOKENIZER_DIR)),
        ("prompt expansion", _expansion_present, _write_expansion),
        ("upscaler", lambda d: (d / upscaler).exists(), lambda d: write_tiny_fooocus_upscaler(d / upscaler)),
        ("inpaint engine", _inpaint_engine_present, _write_inpaint_engine),
        ("describe models", _describe_models_present, _write_describe_models),
        ("control models", _control_models_present, _write_control_models),
        ("image prompt models", _image_prompt_present, _write_image_prompt),
        ("face detector", _face_detector_present, _write_face_detector),
    ]


def _image_prompt_present(directory: Path) -> bool:
    from models.tiny_ip_adapter import DEMO_FILES

    return all((directory / name).exists() for name in DEMO_FILES)


def _write_image_prompt(directory: Path):
    """Tiny CLIP vision, IP-Adapter plus (ImagePrompt and FaceSwap names) and negative tokens for tiny-sdxl."""
    from models.tiny_ip_adapter import write_demo_image_prompt_models

    return write_demo_image_prompt_models(directory)


def _face_detector_present(directory: Path) -> bool:
    from models.tiny_face_detector import DEMO_FILE

    return (directory / "controlnet" / DEMO_FILE).exists()


def _write_face_detector(directory: Path):
    """Tiny RetinaFace (FaceSwap's crop) under the real detection_Resnet50_Final.pth name."""
    from models.tiny_face_detector import write_demo_face_detector

    return write_demo_face_detector(directory)


def _control_models_present(directory: Path) -> bool:
    from models.tiny_controlnet import DEMO_CONTROL_FILES

    return all((directory / "controlnet" / name).exists() for name in DEMO_CONTROL_FILES)


def _write_control_models(directory: Path):
    """A tiny SD1.5 ControlNet for tiny-sd15 and Fooocus's PyraCanny / CPDS Control-LoRA names for tiny-sdxl."""
    from models.tiny_controlnet import write_demo_control_files

    return write_demo_control_files(directory)


def _describe_models_present(directory: Path) -> bool:
    from nodes.describe import FOLDER, TINY_BLIP_FILE, TINY_WD14_FILE

    return all((directory / FOLDER / name).exists() for name in (TINY_BLIP_FILE, TINY_WD14_FILE))


def _write_describe_models(directory: Path):
    """Tiny BLIP caption model (Salesforce layout, with its BERT vocabulary) and WD14 tagger (ONNX + tags)."""
    from nodes.describe import write_demo_describe_models

    return write_demo_describe_models(directory)


def _inpaint_engine_present(directory: Path) -> bool:
    from models.inpaint.engine import HEAD_FILE, PATCH_FILES

    return all((directory / "inpaint" / name).exists() for name in (HEAD_FILE, *PATCH_FILES.values()))


def _write_inpaint_engine(directory: Path):
    """Tiny head and patches matching the demo tiny-sdxl checkpoint (written before this)."""
    from models.inpaint.tiny import write_tiny_inpaint_engine

    return write_tiny_inpaint_engine(directory / "inpaint", directory / "checkpoints/tiny-sdxl.safetensors")


def _expansion_present(directory: Path) -> bool:
    from nodes.fooocus.expansion import EXPANSION_FOLDER

    folder = directory / EXPANSION_FOLDER
    return folder.is_dir() and any(folder.iterdir())


def _write_expansion(directory: Path):
    from nodes.fooocus.expansion import EXPANSION_FOLDER, write_tiny_expansion_model

    try:
        return write_tiny_expansion_model(directory / EXPANSION_FOLDER, words=DEMO_EXPANSION_WORDS)
    except ImportError:  # the expansion needs transformers; without it the job says so and goes on
        return False


DEMO_EXPANSION_WORDS = ("detailed", "sharp", "focus", "cinematic", "light", "beautiful", "intricate", "elegant",
                        "highly", "vivid", "color", "dramatic", "atmosphere", "epic", "fine", "art")


def ensure_models_or_demo(config: AppConfig) -> None:
    folders = ModelFolders.from_config(config)  # a real checkpoint in another install counts too
    folders.ensure()
    checkpoints = folders.list("checkpoints")
    real = [name for name in checkpoints if not Path(name).name.startswith(DEMO_PREFIX)]
    if real:
        return
    if config.demo_models:  # none or only demo checkpoints: write (or top up) the demo files
        written = write_demo_models(Path(config.models_dir))
        if written:
            log.warning("no real checkpoint in %s/checkpoints: wrote tiny demo files (%s)", config.models_dir,
                        ", ".join(written))
    if folders.list("checkpoints"):
        log.warning(BANNER.format(models_dir=config.models_dir))
