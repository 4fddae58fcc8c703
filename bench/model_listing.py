"""GET /v1/engines/all-models with 5,000 model files across two roots (our --models-dir and an
extra_model_paths.yaml root): cold (the first scan, and POST refresh-models, which always
rescans) and cached (the listing kept while no folder's mtime changes), p50 and p99 over N calls.

Run: .venv/bin/python bench/model_listing.py [N] [FILES]
"""
from __future__ import annotations

import asyncio
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

SUBFOLDERS = 50  # files spread over sub-folders, as real collections are


def make_files(root: Path, count: int, tag: str) -> None:
    """`count` empty files, half checkpoints and half LoRAs, in SUBFOLDERS sub-folders each."""
    for index in range(count):
        folder = "checkpoints" if index % 2 == 0 else "loras"
        path = root / folder / f"set{index % SUBFOLDERS:02d}" / f"{tag}-{index:05d}.safetensors"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch()


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def measure(calls: int, files: int) -> dict:
    from aiohttp.test_utils import TestClient, TestServer

    from server.app import App
    from server.config import AppConfig
    from server.fooocus.setup import attach_fooocus_api

    root = Path(tempfile.mkdtemp())
    make_files(root / "ours", files // 2, "ours")
    make_files(root / "comfy" / "models", files - files // 2, "comfy")
    (root / "extra_model_paths.yaml").write_text(
        "comfyui:\n    base_path: comfy\n    checkpoints: models/checkpoints\n    loras: models/loras\n")
    app = App(AppConfig(models_dir=root / "ours", output_dir=root / "out", input_dir=root / "in",
                        temp_dir=root / "tmp", custom_nodes_dir=None, cpu=True,
                        extra_model_paths=(root / "extra_model_paths.yaml",)))
    attach_fooocus_api(app)
    client = TestClient(TestServer(app.make_web_app()))
    await client.start_server()

    async def timed(method: str, path: str) -> tuple[float, dict]:
        started = time.perf_counter()
        response = await client.request(method, path)
        body = await response.json()
        return (time.perf_counter() - started) * 1000, body

    try:
        app.folders.invalidate()
        first, body = await timed("GET", "/v1/engines/all-models")
        listed = len(body["model_filenames"]) + len(body["lora_filenames"])
        cold = [(await timed("POST", "/v1/engines/refresh-models"))[0] for _ in range(calls)]
        cached = [(await timed("GET", "/v1/engines/all-models"))[0] for _ in range(calls)]
        models = [(await timed("GET", "/models/checkpoints"))[0] for _ in range(calls)]
    finally:
        await client.close()
    return {"files listed": listed, "first GET (cold scan)": first,
            "refresh-models p50 (rescan)": statistics.median(cold), "refresh-models p99": percentile(cold, 0.99),
            "all-models cached p50": statistics.median(cached), "all-models cached p99": percentile(cached, 0.99),
            "/models/checkpoints cached p50": statistics.median(models)}


def main() -> None:
    calls = int(sys.argv[1]) if len(sys.argv) > 1 else 50
    files = int(sys.argv[2]) if len(sys.argv) > 2 else 5000
    results = asyncio.run(measure(calls, files))
    print(f"{platform.processor() or platform.machine()}, Python {platform.python_version()}, "
          f"{files} files in two roots, {calls} calls each")
    for name, value in results.items():
        print(f"  {name:32s} {value:8.2f}" + ("" if name == "files listed" else " ms"))


if __name__ == "__main__":
    main()
