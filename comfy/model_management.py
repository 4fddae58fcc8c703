"""ComfyUI's `comfy.model_management`: devices, interrupt and cache calls over the bound App."""
from __future__ import annotations

import torch

from comfy_compat import bound, missing_attribute
from graph import context as graph_context
from graph.errors import Interrupted

# ComfyUI's exception for a stopped prompt; ours is the same class, so `except` clauses of packs
# catch what our executor raises, and re-raising it ends the prompt as interrupted.
InterruptProcessingException = Interrupted
__getattr__ = missing_attribute("comfy.model_management")


def _manager():
    return bound("comfy.model_management").app.services.models


def get_torch_device() -> torch.device:
    """The device nodes compute on: the model manager's (the App's --cpu / CUDA choice)."""
    manager = _manager()
    if manager is not None:
        return manager.device
    if bound().config.cpu or not torch.cuda.is_available():
        return torch.device("cpu")
    return torch.device("cuda", torch.cuda.current_device())


def get_torch_device_name(device=None) -> str:
    device = device or get_torch_device()
    if device.type == "cuda":
        return f"{device} {torch.cuda.get_device_name(device)}"
    return str(device)


def intermediate_device() -> torch.device:
    """Where node outputs between nodes live: the CPU, as ComfyUI without --gpu-only."""
    return torch.device("cpu")


def unet_offload_device() -> torch.device:
    manager = _manager()
    return manager.offload_device if manager is not None else torch.device("cpu")


def text_encoder_offload_device() -> torch.device:
    return unet_offload_device()


def vae_offload_device() -> torch.device:
    return unet_offload_device()


def unet_dtype(*args, **kwargs) -> torch.dtype:
    manager = _manager()
    return manager.dtype if manager is not None else torch.float32


def is_device_cpu(device) -> bool:
    return torch.device(device).type == "cpu"


def is_device_cuda(device) -> bool:
    return torch.device(device).type == "cuda"


def is_device_mps(device) -> bool:
    return torch.device(device).type == "mps"


def get_free_memory(device=None, torch_free_too: bool = False):
    device = torch.device(device) if device is not None else get_torch_device()
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        reserved = torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
        return (free + reserved, reserved) if torch_free_too else free + reserved
    free = bound().app.ram_free()
    return (free, 0) if torch_free_too else free


def get_total_memory(device=None, torch_total_too: bool = False):
    device = torch.device(device) if device is not None else get_torch_device()
    if device.type == "cuda":
        total = torch.cuda.get_device_properties(device).total_memory
        return (total, torch.cuda.memory_reserved(device)) if torch_total_too else total
    total = bound().app.ram_total()
    return (total, 0) if torch_total_too else total


def soft_empty_cache(force: bool = False) -> None:
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.empty_cache()


def unload_all_models() -> None:
    manager = _manager()
    if manager is not None:
        manager.free_all()


def processing_interrupted() -> bool:
    """Whether the running prompt was asked to stop (/interrupt)."""
    try:
        context = graph_context.current()
    except RuntimeError:  # outside a node (a thread a node started): the worker's running prompt
        app = bound("comfy.model_management.processing_interrupted").app
        running = app.worker.current
        return running is not None and app.interrupt.is_set_for(running.prompt_id)
    return context.interrupt.is_set_for(context.prompt_id)


def throw_exception_if_processing_interrupted() -> None:
    if processing_interrupted():
        raise InterruptProcessingException()


def interrupt_current_processing(value: bool = True) -> None:
    flag = bound("comfy.model_management.interrupt_current_processing").app.interrupt
    flag.request() if value else flag.clear()
