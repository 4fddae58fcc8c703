"""ComfyUI's `comfy.sd`: checkpoint loading through our loader, and the socket types."""
from __future__ import annotations

from pathlib import Path

from comfy_compat import bound, missing_attribute, not_provided
from nodes.sockets import ClipSocket, ModelSocket, VaeSocket

__getattr__ = missing_attribute("comfy.sd")
# The values our CLIP / VAE / MODEL sockets carry, for isinstance checks. They are not ComfyUI's
# objects: methods such as VAE.decode or CLIP.tokenize do not exist (run our nodes instead).
CLIP, VAE, MODEL = ClipSocket, VaeSocket, ModelSocket


def load_checkpoint_guess_config(ckpt_path, output_vae: bool = True, output_clip: bool = True,
                                 output_clipvision: bool = False, embedding_directory=None, output_model: bool = True,
                                 **options):
    """(model, clip, vae, None) of a checkpoint file in one of our checkpoints/ folders, loaded
    by CheckpointLoaderSimple (so the model manager, LoRA patching and caching all apply). Call
    it from a running node."""
    from nodes.loaders import CheckpointLoaderSimple

    folders = bound("comfy.sd.load_checkpoint_guess_config").app.folders
    path = Path(ckpt_path).resolve()
    for directory in folders.directories("checkpoints"):
        try:
            name = path.relative_to(Path(directory).resolve()).as_posix()
        except ValueError:
            continue
        model, clip, vae = CheckpointLoaderSimple().load_checkpoint(name)
        return (model if output_model else None, clip if output_clip else None, vae if output_vae else None, None)
    raise not_provided(f"comfy.sd.load_checkpoint_guess_config({str(ckpt_path)!r})",
                       "only files inside a checkpoints/ folder load (put the file there)")


def load_lora_for_models(*args, **kwargs):
    raise not_provided("comfy.sd.load_lora_for_models", "LoRAs apply by file through the LoraLoader node")
