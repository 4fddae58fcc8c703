"""Host time per sampler step outside the UNet call, through the KSampler NODE.

bench/sampler_overhead.py times the sampler maths alone around a toy conv denoiser. This one times
what a server step really costs besides the network: the KSampler node run by the App's executor
over a tiny SD1.5 checkpoint (random weights, real layout), i.e. CFG batching, the denoiser wrapper
(timestep lookup, input scaling), the sampler maths, the per-step progress event and latent preview.

For each sampler it runs the workflow (loader and prompt encodings cached, so only KSampler re-runs)
with 1 and with N steps and times the UNet forward calls (synchronised on CUDA) inside them:

    per-step host ms = ((wall_N - unet_N) - (wall_1 - unet_1)) / (N - 1)
    fixed ms         =  wall_1 - unet_1   (executor, noise, schedule, set-up; paid once per run)

Target: < 1 ms per step. SDE samplers include their Brownian-tree queries (torchsde).

    .venv/bin/python bench/sampler_step_host.py [--device cuda --dtype fp16] [--steps 30]
        [--size 128] [--samplers euler,dpmpp_2m | all] [--repeats 3] [--threads 1]
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

from graph import validate_prompt  # noqa: E402
from models.manager import ModelManager  # noqa: E402
from models.sampling.registry import EXTRA_SAMPLER_NAMES, SAMPLER_NAMES  # noqa: E402
from models.tiny import write_tiny_sd15  # noqa: E402
from models.tiny_text import write_tiny_tokenizer  # noqa: E402
from models.unet import UNetModel  # noqa: E402
from nodes import register_builtin_nodes  # noqa: E402
from nodes.loaders import TINY_TOKENIZER_DIR  # noqa: E402
from server.app import App  # noqa: E402
from server.config import AppConfig  # noqa: E402

DEFAULT_SAMPLERS = ("euler", "euler_ancestral", "heun", "dpm_2", "lms", "dpmpp_2s_ancestral", "dpmpp_2m",
                    "dpmpp_sde", "dpmpp_2m_sde", "dpmpp_3m_sde", "ddim", "lcm", "uni_pc", "ipndm")
DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


class UNetTimer:
    """Accumulates wall time spent inside the UNet's forward (hooks on the loaded UNet instance)."""

    def __init__(self, device: torch.device):
        self.device = device
        self.seconds = 0.0
        self.calls = 0
        self._start = None

    def _sync(self):
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def before(self, module, args):
        self._sync()
        self._start = time.perf_counter()

    def after(self, module, args, output):
        self._sync()
        self.seconds += time.perf_counter() - self._start
        self.calls += 1

    def reset(self):
        self.seconds, self.calls = 0.0, 0


def find_unets(run) -> list:
    """The UNetModel instances `run()` calls (a global hook only for this one run: per-module
    global hooks would slow every layer)."""
    seen = []

    def note(module, args):
        if isinstance(module, UNetModel) and all(module is not m for m in seen):
            seen.append(module)

    hook = torch.nn.modules.module.register_module_forward_pre_hook(note)
    try:
        run()
    finally:
        hook.remove()
    return seen


class CountingSink:
    """Receives progress events and preview images, as the server's event hub would (without encoding)."""

    def __init__(self):
        self.progress = 0

    def send(self, event, data):
        self.progress += event == "progress"

    def send_image(self, image, *, prompt_id, node_id, full_size):
        pass


class KeepLatent:
    CATEGORY = "bench"
    RETURN_TYPES = ()
    FUNCTION = "keep"
    OUTPUT_NODE = True

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"samples": ("LATENT",)}}

    def keep(self, samples):
        return ()


def workflow(sampler: str, steps: int, size: int, seed: int) -> dict:
    scheduler = {"lcm": "lcm", "tcd": "tcd"}.get(sampler, "karras")
    return {
        "1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "bench-sd15.safetensors"}},
        "2": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["1", 1], "text": "a photo of a cat"}},
        "3": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["1", 1], "text": "blurry"}},
        "4": {"class_type": "EmptyLatentImage", "inputs": {"width": size, "height": size, "batch_size": 1}},
        "5": {"class_type": "KSampler", "inputs": {
            "model": ["1", 0], "seed": seed, "steps": steps, "cfg": 7.0, "sampler_name": sampler,
            "scheduler": scheduler, "positive": ["2", 0], "negative": ["3", 0], "latent_image": ["4", 0],
            "denoise": 1.0}},
        "6": {"class_type": "KeepLatent", "inputs": {"samples": ["5", 0]}},
    }


def timed_run(app: App, timer: UNetTimer, prompt: dict, prompt_id: str) -> tuple[float, float, int]:
    """(wall seconds, UNet seconds, progress events) of one execution."""
    result = validate_prompt(prompt, app.registry)
    if not result.ok:
        raise SystemExit(result.response_error())
    sink = CountingSink()
    timer.reset()
    timer._sync()
    start = time.perf_counter()
    outcome = app.executor.execute(prompt, prompt_id, result.outputs, result.constants, links=result.links,
                                   sink=sink)
    timer._sync()
    wall = time.perf_counter() - start
    if outcome.status != "success":
        raise SystemExit(f"{prompt_id}: {outcome.error}")
    return wall, timer.seconds, sink.progress


def measure(app: App, timer: UNetTimer, sampler: str, steps: int, size: int, repeats: int) -> dict:
    best = {}
    for n in (1, steps):
        runs = []
        for r in range(repeats):
            # a new seed each time: the KSampler is never a cache hit
            wall, unet, progress = timed_run(app, timer, workflow(sampler, n, size, seed=1000 * n + r),
                                             f"{sampler}-{n}-{r}")
            runs.append((wall - unet, wall, unet, timer.calls, progress))
        best[n] = min(runs)
    host_1, host_n = best[1][0], best[steps][0]
    return {"per_step_ms": 1000 * (host_n - host_1) / (steps - 1), "fixed_ms": 1000 * host_1,
            "unet_ms_per_call": 1000 * best[steps][2] / max(best[steps][3], 1), "unet_calls": best[steps][3],
            "progress_events": best[steps][4]}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="fp32", choices=sorted(DTYPES))
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--size", type=int, default=128,
                        help="image side in pixels (latent = size / 8); the tiny UNet attends over every latent pixel")
    parser.add_argument("--samplers", default=",".join(DEFAULT_SAMPLERS), help="comma list, or 'all'")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (CPU runs)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    names = SAMPLER_NAMES + EXTRA_SAMPLER_NAMES if args.samplers == "all" else tuple(args.samplers.split(","))
    device = torch.device(args.device)

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        write_tiny_sd15(root / "models" / "checkpoints" / "bench-sd15.safetensors")
        write_tiny_tokenizer(root / "models" / TINY_TOKENIZER_DIR)

        def register(registry):
            register_builtin_nodes(registry)
            registry.register_mappings({"KeepLatent": KeepLatent})

        app = App(AppConfig(models_dir=root / "models", output_dir=root / "out", input_dir=root / "in",
                            temp_dir=root / "tmp", custom_nodes_dir=None, demo_models=False),
                  register_nodes=register, model_manager=ModelManager(device, DTYPES[args.dtype]))
        timer = UNetTimer(device)
        # load, encode, warm kernels; and find the loaded UNet to time
        unets = find_unets(lambda: timed_run(app, timer, workflow("euler", 2, args.size, 0), "warm-up"))
        hooks = [h for unet in unets for h in (unet.register_forward_pre_hook(timer.before),
                                               unet.register_forward_hook(timer.after))]
        try:
            print(f"KSampler node, tiny SD1.5, device {device} {args.dtype}, {args.steps} steps, "
                  f"latent 1x4x{args.size // 8}x{args.size // 8}, cfg 7 (batched cond/uncond), previews on, "
                  f"torch threads {torch.get_num_threads()}")
            print(f"{'sampler':22s} {'host ms/step':>12s} {'fixed ms':>9s} {'UNet ms/call':>13s} "
                  f"{'calls':>6s} {'progress':>9s}")
            for name in names:
                row = measure(app, timer, name, args.steps, args.size, args.repeats)
                print(f"{name:22s} {row['per_step_ms']:12.3f} {row['fixed_ms']:9.2f} {row['unet_ms_per_call']:13.3f} "
                      f"{row['unet_calls']:6d} {row['progress_events']:9d}", flush=True)
        finally:
            for hook in hooks:
                hook.remove()

if __name__ == "__main__":
    main()
