"""How nodes reach the App's services while they run: the model manager, folders, progress."""
from __future__ import annotations

import contextlib
from typing import Iterator

import torch

from graph import context as graph_context


def services():
    return graph_context.current().services


def compute_placement() -> tuple[torch.device, torch.dtype]:
    """The device and dtype networks run in for this App (CPU fp32 when no manager is set)."""
    manager = services().models
    if manager is None:
        return torch.device("cpu"), torch.float32
    return manager.device, manager.dtype


@contextlib.contextmanager
def on_device(*modules) -> Iterator[tuple[torch.device, torch.dtype]]:
    """Run with `modules` on the compute device (the manager loads, keeps or offloads them)."""
    manager = services().models
    if manager is None:
        yield torch.device("cpu"), torch.float32
        return
    with contextlib.ExitStack() as stack:
        for module in modules:
            if module is not None:
                stack.enter_context(manager.use(module))
        yield manager.device, manager.dtype
