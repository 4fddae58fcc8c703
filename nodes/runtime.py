"""How nodes reach the App's services while they run: the model manager, folders, progress.

Networks loaded by a node are registered with the App's model manager (`manage`), and used
through `use(...)`, which puts them on the compute device for the duration of a block. Without a
manager (engine tests) networks simply stay where they are, on the CPU in float32.
"""
from __future__ import annotations

import contextlib
from typing import Iterator

import torch

from graph import context as graph_context


def services():
    return graph_context.current().services


class Unmanaged:
    """A network outside any manager (no App manager was configured)."""

    __slots__ = ("module",)

    def __init__(self, module) -> None:
        self.module = module


def manage(module, name: str, keep_float32: bool = False):
    """Register a freshly loaded network with the manager; returns the handle to keep on a socket.

    keep_float32: networks that overflow in float16 (the SDXL VAE) use bfloat16 where the
    manager computes in float16, and float32 otherwise."""
    manager = services().models
    if manager is None:
        return Unmanaged(module)
    dtype = None
    if keep_float32 and manager.dtype == torch.float16:
        dtype = torch.bfloat16 if manager.device.type == "cuda" and torch.cuda.is_bf16_supported() else torch.float32
    return manager.add(module, name=name, dtype=dtype)


def placement(managed) -> tuple[torch.device, torch.dtype]:
    """Where a managed network computes."""
    if isinstance(managed, Unmanaged):
        return torch.device("cpu"), next(managed.module.parameters()).dtype
    return managed._manager.device, managed.dtype


@contextlib.contextmanager
def use(*managed) -> Iterator[list]:
    """The networks of `managed` handles on the compute device for the duration of the block."""
    with contextlib.ExitStack() as stack:
        modules = []
        for handle in managed:
            if isinstance(handle, Unmanaged):
                modules.append(handle.module)
            else:
                modules.append(stack.enter_context(handle._manager.use(handle)))
        yield modules
