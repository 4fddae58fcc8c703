"""Soak: thousands of tiny jobs through both APIs against a server subprocess on the demo models;
the server's RSS is sampled every N jobs. Nothing per job may stay in memory beyond the bounded
stores (the --max-history ComfyUI history, the last 32 finished jobs' step previews).

Jobs alternate: a synchronous Fooocus text-to-image request (64x64, 1 step, default styles, so
"Fooocus V2" expansion runs) and a ComfyUI /prompt (KSampler 1 step 64x64 + SaveImage, watched
through /history); every job has its own prompt text and seed, so nothing is a cache hit.

Run: .venv/bin/python bench/soak.py [--jobs 2000] [--every 200] [--max-history N]
(target: RSS growth after the first 200 jobs under 5 MB)
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
WORDS = "lighthouse harbour dawn fog cliff meadow river forest castle lantern glacier desert orchard".split()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def call(base: str, path: str, body: dict | None = None, timeout: float = 120):
    data = json.dumps(body).encode() if body is not None else None
    with urllib.request.urlopen(urllib.request.Request(base + path, data=data), timeout=timeout) as response:
        return json.loads(response.read())


def process_status(pid: int) -> dict:
    """RSS (MB) and thread count of a process, from /proc (Linux)."""
    fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line)
    return {"rss_mb": int(fields["VmRSS"].split()[0]) / 1024, "threads": int(fields["Threads"])}


def start_server(root: Path, port: int, extra: list[str]) -> subprocess.Popen:
    command = [sys.executable, str(ROOT / "main.py"), "--port", str(port), "--cpu", "--log-level", "warning",
               "--models-dir", str(root / "models"), "--output-dir", str(root / "output"),
               "--input-dir", str(root / "input"), "--temp-dir", str(root / "temp"),
               "--custom-nodes-dir", str(root / "custom_nodes"), *extra]
    process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        try:
            call(f"http://127.0.0.1:{port}", "/ping", timeout=2)
            return process
        except OSError:
            if process.poll() is not None:
                raise RuntimeError(process.stderr.read().decode())
            time.sleep(0.2)
    process.kill()
    raise TimeoutError("the server did not start")


def fooocus_job(base: str, index: int) -> None:
    words = " ".join(WORDS[(index + k) % len(WORDS)] for k in range(4))
    body = {"prompt": f"{words} {index}", "base_model_name": "tiny-sdxl.safetensors",
            "aspect_ratios_selection": "64*64", "advanced_params": {"overwrite_step": 1}}
    items = call(base, "/v1/generation/text-to-image", body)
    assert items[0]["finish_reason"] == "SUCCESS", items


def comfy_workflow(index: int) -> dict:
    text = f"{WORDS[index % len(WORDS)]} at night, number {index}"
    return {
        "ckpt": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "tiny-sdxl.safetensors"}},
        "pos": {"class_type": "CLIPTextEncode", "inputs": {"text": text, "clip": ["ckpt", 1]}},
        "neg": {"class_type": "CLIPTextEncode", "inputs": {"text": "blurry", "clip": ["ckpt", 1]}},
        "latent": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
        "sample": {"class_type": "KSampler", "inputs": {
            "model": ["ckpt", 0], "positive": ["pos", 0], "negative": ["neg", 0], "latent_image": ["latent", 0],
            "seed": index, "steps": 1, "cfg": 5.0, "sampler_name": "euler", "scheduler": "karras", "denoise": 1.0}},
        "decode": {"class_type": "VAEDecode", "inputs": {"samples": ["sample", 0], "vae": ["ckpt", 2]}},
        "save": {"class_type": "SaveImage", "inputs": {"images": ["decode", 0], "filename_prefix": "soak"}},
    }


def comfy_job(base: str, index: int) -> None:
    prompt_id = call(base, "/prompt", {"prompt": comfy_workflow(index), "client_id": "soak"})["prompt_id"]
    deadline = time.monotonic() + 120
    while not (entry := call(base, f"/history/{prompt_id}")):
        if time.monotonic() > deadline:
            raise TimeoutError(f"prompt {prompt_id} did not finish")
        time.sleep(0.005)
    assert entry[prompt_id]["status"]["status_str"] == "success", entry


def soak(jobs: int, every: int, server_flags: list[str]) -> list[dict]:
    root = Path(tempfile.mkdtemp(prefix="soak-"))
    port = free_port()
    server = start_server(root, port, server_flags)
    base = f"http://127.0.0.1:{port}"
    rows = []
    started = time.monotonic()
    try:
        for index in range(1, jobs + 1):
            (fooocus_job if index % 2 else comfy_job)(base, index)
            if index % every == 0:
                rows.append({"jobs": index, **process_status(server.pid), "seconds": time.monotonic() - started})
                print(f"  {index} jobs: RSS {rows[-1]['rss_mb']:.1f} MB", file=sys.stderr, flush=True)
        # read once at the end: building a big /history answer moves glibc's mmap threshold and
        # would show up in the RSS samples that follow
        rows[-1]["history"] = len(call(base, "/history"))
    finally:
        server.terminate()
        try:
            server.wait(30)
        except subprocess.TimeoutExpired:
            server.kill()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=2000)
    parser.add_argument("--every", type=int, default=200)
    parser.add_argument("--max-history", type=int, default=None, help="passed to the server (default: its own)")
    args = parser.parse_args()
    flags = ["--max-history", str(args.max_history)] if args.max_history else []
    rows = soak(args.jobs, args.every, flags)
    import aiohttp
    import torch

    print(f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
          f"torch {torch.__version__}, aiohttp {aiohttp.__version__}; server flags: {' '.join(flags) or 'defaults'}")
    print("| jobs | server RSS (MB) | growth since the first row (MB) | threads | elapsed (s) |")
    print("|---|---|---|---|---|")
    first = rows[0]["rss_mb"]
    for row in rows:
        print(f"| {row['jobs']} | {row['rss_mb']:.1f} | {row['rss_mb'] - first:+.1f} | {row['threads']} | "
              f"{row['seconds']:.0f} |")
    print(f"/history entries at the end: {rows[-1]['history']}")


if __name__ == "__main__":
    main()
