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


def write_demo_models(directory: Path) -> None:
    """Tiny checkpoints, LoRA, CLIP tokenizer and prompt-expansion model under `directory`."""
    from models.tiny import write_demo_models as write_models
    from models.tiny_text import write_tiny_tokenizer
    from nodes.loaders import TINY_TOKENIZER_DIR

    directory = Path(directory)
    write_models(directory)
    write_tiny_tokenizer(directory / TINY_TOKENIZER_DIR)
    try:
        from nodes.fooocus.expansion import EXPANSION_FOLDER, write_tiny_expansion_model
    except ImportError:  # the expansion needs transformers; without it the job says so and goes on
        return
    write_tiny_expansion_model(directory / EXPANSION_FOLDER, words=DEMO_EXPANSION_WORDS)


DEMO_EXPANSION_WORDS = ("detailed", "sharp", "focus", "cinematic", "light", "beautiful", "intricate", "elegant",
                        "highly", "vivid", "color", "dramatic", "atmosphere", "epic", "fine", "art")


def ensure_models_or_demo(config: AppConfig) -> None:
    folders = ModelFolders(config.models_dir)
    folders.ensure()
    checkpoints = folders.list("checkpoints")
    real = [name for name in checkpoints if not Path(name).name.startswith(DEMO_PREFIX)]
    if real:
        return
    if not checkpoints and config.demo_models:
        log.warning("no checkpoint in %s/checkpoints: writing tiny demo models", config.models_dir)
        write_demo_models(Path(config.models_dir))
    if folders.list("checkpoints"):
        log.warning(BANNER.format(models_dir=config.models_dir))
