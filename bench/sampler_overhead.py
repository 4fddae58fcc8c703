"""Host time per sampler step spent outside the model call.

Runs every sampler for 30 karras steps on a tiny conv denoiser (1x4x64x64 latent), times the whole
run and the model calls separately, and prints (total - model) / steps. Target: < 1 ms per step.
SDE samplers include their Brownian-tree queries (torchsde), which dominate their overhead.

    python bench/sampler_overhead.py [--device cuda] [--steps 30] [--samplers euler,dpmpp_2m]
"""
from __future__ import annotations

import argparse
import math
import time

import torch

from models.sampling.model_sampling import DiscreteModelSampling, model_sampling_for_scheduler
from models.sampling.registry import EXTRA_SAMPLER_NAMES, SAMPLER_NAMES, get_sampler, make_sigmas


class TimedDenoiser:
    """A tiny conv denoiser that accumulates the time spent inside its calls."""

    def __init__(self, device):
        torch.manual_seed(0)
        self.net = torch.nn.Sequential(torch.nn.Conv2d(4, 8, 3, padding=1), torch.nn.SiLU(),
                                       torch.nn.Conv2d(8, 4, 3, padding=1)).to(device)
        self.device = device
        self.seconds = 0.0
        self.calls = 0

    @torch.no_grad()
    def __call__(self, x, sigma, **kwargs):
        self._sync()
        start = time.perf_counter()
        s = sigma.reshape(-1, 1, 1, 1)
        out = x - s * self.net(x / (s ** 2 + 1).sqrt())
        self._sync()
        self.seconds += time.perf_counter() - start
        self.calls += 1
        return out

    def _sync(self):
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)


def measure(name: str, steps: int, device: torch.device, repeats: int = 3):
    base = DiscreteModelSampling()
    scheduler = {"lcm": "lcm", "tcd": "tcd"}.get(name, "karras")
    ms = model_sampling_for_scheduler(scheduler, base)
    sigmas = make_sigmas(ms, scheduler, steps, sampler_name=name).to(device)
    x = torch.randn(1, 4, 64, 64, generator=torch.Generator().manual_seed(0)).to(device)
    x = x * math.sqrt(1 + float(sigmas[0]) ** 2)
    sampler = get_sampler(name)
    best = None
    for _ in range(repeats):
        model = TimedDenoiser(device)
        model._sync()
        start = time.perf_counter()
        sampler.sample(model, x, sigmas, seed=1, model_sampling=ms, callback=lambda info: None)
        model._sync()
        total = time.perf_counter() - start
        overhead = (total - model.seconds) / steps
        if best is None or overhead < best[0]:
            best = (overhead, model.seconds / model.calls, model.calls)
    return best


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--samplers", default=",".join(SAMPLER_NAMES + EXTRA_SAMPLER_NAMES))
    args = parser.parse_args()
    device = torch.device(args.device)
    print(f"device {device}, {args.steps} steps, latent 1x4x64x64")
    print(f"{'sampler':24s} {'overhead ms/step':>17s} {'model ms/call':>14s} {'calls':>6s}")
    for name in args.samplers.split(","):
        overhead, per_call, calls = measure(name, args.steps, device)
        print(f"{name:24s} {overhead * 1e3:17.3f} {per_call * 1e3:14.3f} {calls:6d}")


if __name__ == "__main__":
    main()
