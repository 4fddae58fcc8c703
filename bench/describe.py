"""Describe latency on the CPU: POST /v1/tools/describe-image with the demo models, and the same code
over full-size random networks.

* demo: the whole route (multipart upload, decode, workflow, nodes) with the tiny demo BLIP and
  WD14 models, a 1024x1024 noise PNG; the first call loads the models, the others reuse them.
* full size: BLIP at the real checkpoint's shapes (ViT-B/16 at 384 + 12-layer BERT decoder, 224 M
  weights, written as a Salesforce-layout .pth and loaded as the describe node loads it), captions
  as sampled and forced to the full 75 tokens; and a WD14 stand-in: the real tagger (MOAT, 448 px,
  9083 tags) cannot be rebuilt offline, so a ViT-B/16 at 448 px with 9083 sigmoid outputs (86 M
  weights, NHWC BGR input like the real file) is exported to ONNX and run by onnxruntime.

Run: .venv/bin/python bench/describe.py [--threads N] [--repeats N] [--skip-full]
"""
from __future__ import annotations

import argparse
import asyncio
import io
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402


def noise_png(side: int = 1024) -> bytes:
    pixels = np.random.default_rng(0).integers(0, 256, size=(side, side, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


async def demo_route(root: Path, repeats: int) -> dict:
    from aiohttp import FormData
    from aiohttp.test_utils import TestClient, TestServer

    from server.config import AppConfig
    from server.demo import write_demo_models
    from server.serve import build_app

    write_demo_models(root / "models")
    app = build_app(AppConfig(models_dir=root / "models", output_dir=root / "out", input_dir=root / "in",
                              temp_dir=root / "tmp", custom_nodes_dir=None, cpu=True))
    client = TestClient(TestServer(app.make_web_app()))
    await client.start_server()
    image = noise_png()
    results = {}
    try:
        for kind in ("Photo", "Anime"):
            times = []
            for _ in range(repeats + 1):
                form = FormData()
                form.add_field("image", image, filename="noise.png")
                started = time.perf_counter()
                response = await client.post("/v1/tools/describe-image", params={"image_type": kind}, data=form)
                body = await response.json()
                times.append((time.perf_counter() - started) * 1000)
                assert response.status == 200 and body["describe"], body
            results[kind] = {"first_ms": times[0], "p50_ms": statistics.median(times[1:])}
    finally:
        await client.close()
    return results


def fake_bert_vocab(directory: Path) -> Path:
    """30522 entries like bert-base-uncased (special tokens, then placeholder words)."""
    from models.interrogate.tiny import BERT_SPECIAL_TOKENS, TINY_WORDS, write_bert_vocab

    words = list(TINY_WORDS) + [f"w{n}" for n in range(30522 - len(BERT_SPECIAL_TOKENS) - len(TINY_WORDS))]
    return write_bert_vocab(directory, words)


def full_blip(root: Path, repeats: int) -> dict:
    import torch

    from models.interrogate.blip import CaptionSettings, caption, load_bert_tokenizer, load_blip
    from models.interrogate.blip_keys import BlipShape
    from models.interrogate.tiny import tiny_blip_state

    tokenizer = load_bert_tokenizer(fake_bert_vocab(root / "bert_tokenizer"))
    shape = BlipShape(vision_width=768, vision_layers=12, vision_mlp=3072, patch_size=16, image_size=384,
                      text_width=768, text_layers=12, text_intermediate=3072, vocab_size=len(tokenizer),
                      max_positions=512, encoder_width=768)
    path = root / "model_base_caption_capfilt_large.pth"
    torch.save({"model": tiny_blip_state(shape, tokenizer)}, path)
    started = time.perf_counter()
    model, tokenizer = load_blip(path, [root / "bert_tokenizer"])
    load_s = time.perf_counter() - started
    image = torch.from_numpy(np.asarray(Image.open(io.BytesIO(noise_png())), dtype=np.float32) / 255.0)
    results = {"weights_m": sum(p.numel() for p in model.parameters()) / 1e6, "load_s": load_s,
               "file_mb": path.stat().st_size / 1e6}
    for label, settings in (("sampled", CaptionSettings()), ("75 tokens", CaptionSettings(min_length=75))):
        times, words = [], []
        for seed in range(repeats):
            started = time.perf_counter()
            text = caption(model, tokenizer, image, seed=seed, settings=settings)
            times.append(time.perf_counter() - started)
            words.append(len(text.split()))
        results[label] = {"p50_s": statistics.median(times), "words": statistics.median(words)}
    return results


def full_wd14(root: Path, repeats: int) -> dict:
    import torch
    import torchvision

    from models.interrogate.tiny import write_tags_csv
    from models.interrogate.wd14 import CHARACTER, GENERAL, RATING, Tag, WD14Tagger

    class NHWCTagger(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.vit = torchvision.models.vit_b_16(image_size=448, num_classes=9083)

        def forward(self, x):  # [N, 448, 448, 3] BGR 0..255, as the real tagger takes it
            return torch.sigmoid(self.vit(x.permute(0, 3, 1, 2) / 255.0))

    path = root / "wd-v1-4-moat-tagger-v2.onnx"
    torch.onnx.export(NHWCTagger().eval(), (torch.rand(1, 448, 448, 3),), str(path), input_names=["input_1:0"],
                      output_names=["predictions_sigmoid"], dynamo=False, opset_version=17)
    tags = [Tag(f"rating_{n}", RATING) for n in range(4)] + [Tag(f"general_{n}", GENERAL) for n in range(6947)] \
        + [Tag(f"character_{n}", CHARACTER) for n in range(2132)]
    write_tags_csv(path.with_suffix(".csv"), tags)
    started = time.perf_counter()
    tagger = WD14Tagger.load(path)
    load_s = time.perf_counter() - started
    image = Image.open(io.BytesIO(noise_png()))
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        tagger.tag(image)
        times.append(time.perf_counter() - started)
    return {"load_s": load_s, "p50_s": statistics.median(times), "file_mb": path.stat().st_size / 1e6}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--skip-full", action="store_true")
    args = parser.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        demo = asyncio.run(demo_route(root / "demo", args.repeats))
        print("| type | models | first call (ms) | warm p50 (ms) |\n|---|---|---|---|")
        for kind, numbers in demo.items():
            print(f"| {kind} | demo | {numbers['first_ms']:.0f} | {numbers['p50_ms']:.0f} |")
        if args.skip_full:
            return
        (root / "full").mkdir()
        blip = full_blip(root / "full", max(1, args.repeats // 2))
        print(f"\nBLIP full size: {blip['weights_m']:.0f} M weights, {blip['file_mb']:.0f} MB file, "
              f"load {blip['load_s']:.1f} s")
        for label in ("sampled", "75 tokens"):
            print(f"| Photo | BLIP full size, {label} | {blip[label]['p50_s']:.2f} s | {blip[label]['words']:.0f} words |")
        wd14 = full_wd14(root / "full", args.repeats)
        print(f"| Anime | ViT-B/16 448 stand-in ({wd14['file_mb']:.0f} MB ONNX) | load {wd14['load_s']:.1f} s | "
              f"{wd14['p50_s']:.2f} s |")


if __name__ == "__main__":
    main()
