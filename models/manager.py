"""Which loaded networks live on the compute device: handles, an LRU, a byte budget.

The App creates one ModelManager (never a global). Nodes reach networks through handles:

    handle = manager.add(unet, name="sdxl unet")
    with handle.on_device() as unet:      # or: with manager.use(handle) as unet
        out = unet(x, t, context)

Handles are held weakly: when the executor's cache drops a handle, its network can be freed;
the manager never is the only reason a model stays in memory.
"""
from __future__ import annotations

import threading
import weakref
from collections import OrderedDict
from contextlib import contextmanager
from typing import Iterator

import torch
from torch import nn


def module_bytes(module: nn.Module) -> int:
    tensors = list(module.parameters()) + list(module.buffers())
    return sum(t.numel() * t.element_size() for t in tensors)


class ModelHandle:
    """One network under a manager's care. `module` is the network wherever it currently lives."""

    def __init__(self, manager: "ModelManager", module: nn.Module, name: str, dtype: torch.dtype):
        self._manager = manager
        self.module = module
        self.name = name
        self.dtype = dtype
        self.in_use = 0  # nesting count of active `use` blocks; in-use models are never offloaded
        self.on_compute_device = manager.device == manager.offload_device

    @property
    def size_bytes(self) -> int:
        return module_bytes(self.module)

    def on_device(self):
        return self._manager.use(self)

    def __repr__(self) -> str:
        where = "compute" if self.on_compute_device else "offload"
        return f"ModelHandle({self.name!r}, {self.size_bytes / 2**20:.1f} MiB, {where})"


class ModelManager:
    """Keeps recently used networks on `device` while their bytes fit `budget_bytes`, moving the
    least recently used ones (not in use) back to `offload_device` beyond it.

    device/dtype come from the App's flags: CPU float32 by default; e.g. `device="cuda",
    dtype=torch.float16`. budget_bytes=None means no limit (everything used stays resident).
    Nothing here touches a device until a model is used.
    """

    def __init__(self, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32,
                 offload_device: str | torch.device = "cpu", budget_bytes: int | None = None):
        self.device = torch.device(device)
        self.dtype = dtype
        self.offload_device = torch.device(offload_device)
        self.budget_bytes = budget_bytes
        self._lock = threading.RLock()
        # id(handle) -> weakref, least recently used first
        self._handles: OrderedDict[int, weakref.ref] = OrderedDict()

    def add(self, module: nn.Module, name: str = "", dtype: torch.dtype | None = None) -> ModelHandle:
        """Take a network under management; it is cast to `dtype` (default: the manager's) and
        stays where it is until used. Some networks want another dtype than the UNet (e.g. a VAE
        kept in float32/bfloat16 to avoid float16 overflow)."""
        dtype = dtype or self.dtype
        if any(p.dtype != dtype for p in module.parameters() if p.is_floating_point()):
            module = module.to(dtype=dtype)
        handle = ModelHandle(self, module, name or type(module).__name__, dtype)
        handle.on_compute_device = all(p.device == self.device for p in module.parameters())
        key = id(handle)
        with self._lock:
            self._handles[key] = weakref.ref(handle, lambda _, key=key: self._forget(key))
        return handle

    def _forget(self, key: int) -> None:
        with self._lock:
            self._handles.pop(key, None)

    @contextmanager
    def use(self, handle: ModelHandle) -> Iterator[nn.Module]:
        """The handle's network on the compute device for the duration of the block."""
        with self._lock:
            self._handles.move_to_end(id(handle))
            handle.in_use += 1
            try:
                if not handle.on_compute_device:
                    self._make_room(handle.size_bytes, keep=handle)
                    self._move(handle.module, self.device)
                    handle.on_compute_device = True
            except BaseException:
                handle.in_use -= 1
                raise
        try:
            yield handle.module
        finally:
            with self._lock:
                handle.in_use -= 1

    def _make_room(self, needed: int, keep: ModelHandle) -> None:
        if self.budget_bytes is None or self.device == self.offload_device:
            return
        resident = [h for h in self.handles() if h.on_compute_device and h is not keep]
        used = sum(h.size_bytes for h in resident)
        for victim in resident:  # least recently used first
            if used + needed <= self.budget_bytes:
                break
            if victim.in_use:
                continue
            used -= victim.size_bytes
            self._offload(victim)

    def _offload(self, handle: ModelHandle) -> None:
        if self.device == self.offload_device:
            return
        self._move(handle.module, self.offload_device)
        handle.on_compute_device = False

    def _move(self, module: nn.Module, device: torch.device) -> None:
        """The one place weights change device (a seam for tests without a GPU)."""
        module.to(device)

    def handles(self) -> list[ModelHandle]:
        """Live handles, least recently used first."""
        with self._lock:
            return [h for h in (ref() for ref in self._handles.values()) if h is not None]

    def resident_bytes(self) -> int:
        return sum(h.size_bytes for h in self.handles() if h.on_compute_device)

    def free_all(self) -> None:
        """Move every network not in use off the compute device (POST /free)."""
        with self._lock:
            for handle in self.handles():
                if not handle.in_use:
                    self._offload(handle)
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
