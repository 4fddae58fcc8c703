"""Server overhead of a synchronous Fooocus text-to-image request: client latency minus the time
spent inside nodes, p50 and p99 over N requests, with the tiny demo SDXL model on the CPU.

Run: .venv/bin/python bench/request_overhead.py [N]   (target: p50 under 5 ms)
"""
from __future__ import annotations

import asyncio
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


async def measure(requests: int) -> dict:
    import torch
    from aiohttp.test_utils import TestClient, TestServer

    from server.config import AppConfig
    from server.demo import write_demo_models
    from server.serve import build_app

    torch.set_num_threads(1)
    root = Path(tempfile.mkdtemp())
    write_demo_models(root / "models")
    app = build_app(AppConfig(models_dir=root / "models", output_dir=root / "out", input_dir=root / "in",
                              temp_dir=root / "tmp", custom_nodes_dir=None, cpu=True))
    client = TestClient(TestServer(app.make_web_app()))
    await client.start_server()
    body = json.dumps({"prompt": "a lighthouse", "style_selections": [], "base_model_name": "tiny-sdxl.safetensors",
                       "aspect_ratios_selection": "64*64", "loras": [], "advanced_params": {"overwrite_step": 1}})
    overheads, totals = [], []
    try:
        for index in range(requests + 3):
            started = time.perf_counter()
            response = await client.post("/v1/generation/text-to-image", data=body)
            items = await response.json()
            total = time.perf_counter() - started
            assert items[0]["finish_reason"] == "SUCCESS", items
            job_id = items[0]["url"].rsplit("/", 1)[1].rsplit("-", 1)[0]
            while app.queue.history_item(job_id) is None:  # written by the worker just after the reply
                await asyncio.sleep(0.001)
            node_seconds = app.queue.history_item(job_id)["timing"]["node_seconds"]
            if index >= 3:  # the first requests load the model and warm caches
                overheads.append((total - node_seconds) * 1000)
                totals.append(total * 1000)
    finally:
        await client.close()
    overheads.sort()
    return {"requests": requests, "p50_ms": statistics.median(overheads),
            "p99_ms": overheads[max(0, int(len(overheads) * 0.99) - 1)], "total_p50_ms": statistics.median(totals)}


if __name__ == "__main__":
    stats = asyncio.run(measure(int(sys.argv[1]) if len(sys.argv) > 1 else 100))
    print("| requests | overhead p50 (ms) | overhead p99 (ms) | whole request p50 (ms) |")
    print("|---|---|---|---|")
    print(f"| {stats['requests']} | {stats['p50_ms']:.2f} | {stats['p99_ms']:.2f} | {stats['total_p50_ms']:.1f} |")
