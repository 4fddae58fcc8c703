"""End-to-end time of one Upscale (2x) request to 1024x1024 (a 512x512 input) with the demo models.

Builds the App in-process (tiny SDXL + tiny Fooocus-layout upscaler), sends the v2 request
synchronously and reports the wall time of each request.
Runs: `python bench/uov_request.py [--steps N] [--repeat K]`; the first request includes
loading the models, later ones reuse them from the cache (a new seed each time).
"""
from __future__ import annotations

import argparse
import asyncio
import base64
import io
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from aiohttp.test_utils import TestClient, TestServer  # noqa: E402
from PIL import Image  # noqa: E402

from server.app import App  # noqa: E402
from server.config import AppConfig  # noqa: E402
from server.demo import write_demo_models  # noqa: E402
from server.fooocus.setup import attach_fooocus_api  # noqa: E402
from server.serve import make_model_manager  # noqa: E402


async def run(steps: int | None, repeat: int, method: str) -> list[float]:
    root = Path(tempfile.mkdtemp(prefix="uov-bench-"))
    write_demo_models(root / "models")
    config = AppConfig(models_dir=root / "models", output_dir=root / "out", input_dir=root / "in",
                       temp_dir=root / "tmp", custom_nodes_dir=None, cpu=True)
    app = App(config, model_manager=make_model_manager(config))
    attach_fooocus_api(app)
    client = TestClient(TestServer(app.make_web_app()))
    await client.start_server()
    buffer = io.BytesIO()
    Image.effect_noise((512, 512), 64).convert("RGB").save(buffer, format="PNG")
    body = {"uov_method": method, "input_image": base64.b64encode(buffer.getvalue()).decode(),
            "base_model_name": "tiny-sdxl.safetensors"}
    if steps is not None:
        body["advanced_params"] = {"overwrite_step": steps}
    timings = []
    try:
        for index in range(repeat):
            body["image_seed"] = index
            start = time.perf_counter()
            response = await client.post("/v2/generation/image-upscale-vary", data=json.dumps(body))
            items = await response.json()
            elapsed = time.perf_counter() - start
            assert items and items[0]["finish_reason"] == "SUCCESS", items
            timings.append(elapsed)
    finally:
        await client.close()
    return timings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=None, help="overwrite_step (default: Speed's 18 upscale steps)")
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--method", default="Upscale (2x)")
    args = parser.parse_args()
    import torch

    torch.set_grad_enabled(False)
    timings = asyncio.run(run(args.steps, args.repeat, args.method))
    print("| request | method | steps | seconds |\n|---|---|---|---|")
    for index, seconds in enumerate(timings):
        label = "first (loads models)" if index == 0 else f"repeat {index}"
        print(f"| {label} | {args.method} | {args.steps or 'Speed (18)'} | {seconds:.2f} |")


if __name__ == "__main__":
    main()
