"""ModelManager: LRU residency under a byte budget, in-use protection, weak handles, free_all."""
from __future__ import annotations

import gc

import pytest
import torch
from torch import nn

from models.manager import ModelManager


class RecordingManager(ModelManager):
    """A manager whose 'compute device' is simulated: moves are recorded, not performed, so the
    policy is testable on a CPU-only machine."""

    def __init__(self, **kwargs):
        super().__init__(device="cuda", offload_device="cpu", **kwargs)
        self.moves = []

    def _move(self, module, device):
        self.moves.append((module.tag, device.type))


def _net(tag: str, floats: int) -> nn.Module:
    module = nn.Linear(floats, 1, bias=False)  # floats * 4 bytes
    module.tag = tag
    return module


def test_least_recently_used_models_are_offloaded_beyond_the_budget():
    manager = RecordingManager(budget_bytes=4 * 250)
    a, b, c = (manager.add(_net(tag, 100), name=tag) for tag in "abc")
    for handle in (a, b):
        with manager.use(handle):
            pass
    assert manager.moves == [("a", "cuda"), ("b", "cuda")]
    with manager.use(a):  # a becomes most recent, already resident: no move
        pass
    with manager.use(c):  # 300 floats > 250: evict the LRU (b), keep a
        pass
    assert manager.moves[2:] == [("b", "cpu"), ("c", "cuda")]
    assert [h.name for h in manager.handles()] == ["b", "a", "c"]
    assert manager.resident_bytes() == 800


def test_models_in_use_are_never_offloaded():
    manager = RecordingManager(budget_bytes=4 * 150)
    a, b = manager.add(_net("a", 100)), manager.add(_net("b", 100))
    with manager.use(a):
        with manager.use(b):  # over budget, but a is in use
            assert a.on_compute_device and b.on_compute_device
    manager.free_all()
    assert not a.on_compute_device and not b.on_compute_device
    assert manager.moves[-2:] == [("a", "cpu"), ("b", "cpu")]


def test_dropped_handles_are_forgotten():
    manager = RecordingManager()
    handle = manager.add(_net("a", 10))
    assert manager.handles() == [handle]
    del handle
    gc.collect()
    assert manager.handles() == []


def test_cpu_default_casts_to_the_manager_dtype_and_runs():
    manager = ModelManager(dtype=torch.float64)
    handle = manager.add(nn.Linear(3, 2))
    with handle.on_device() as module:
        assert module.weight.dtype == torch.float64
        assert module(torch.ones(1, 3, dtype=torch.float64)).shape == (1, 2)
    vae_like = manager.add(nn.Linear(3, 2), dtype=torch.float32)
    assert vae_like.module.weight.dtype == torch.float32


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_real_cuda_moves():
    manager = ModelManager(device="cuda", dtype=torch.float16, budget_bytes=2 * 1024 * 1024)
    a, b = manager.add(nn.Linear(512, 1024)), manager.add(nn.Linear(512, 1024))  # 1 MiB each
    with a.on_device() as module:
        assert module.weight.is_cuda
    with b.on_device():
        pass
    assert not a.on_compute_device and a.module.weight.device.type == "cpu"
