"""The model manager the App hands to nodes, built from the command-line flags."""
from __future__ import annotations

import logging

import torch

from models.manager import ModelManager

log = logging.getLogger(__name__)

PRECISIONS = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def make_model_manager(config) -> ModelManager:
    """CUDA when present (unless --cpu) in fp16/bf16 (--precision), else the CPU in float32.

    The budget keeps 80% of the card's memory for resident models; the rest is working memory."""
    if config.cpu or not torch.cuda.is_available():
        if config.precision not in ("auto", "fp32"):
            log.warning("--precision %s ignored on the CPU: computing in float32", config.precision)
        return ModelManager("cpu", torch.float32)
    dtype = PRECISIONS.get(config.precision, torch.float16)
    total = torch.cuda.get_device_properties(0).total_memory
    log.info("computing on %s in %s", torch.cuda.get_device_name(0), dtype)
    return ModelManager("cuda", dtype, offload_device="cpu", budget_bytes=int(total * 0.8))
