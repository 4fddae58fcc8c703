"""Tiny random CLIP text encoders and a tiny real BPE vocabulary, for tests and the offline demo.

Public API (used by models/tiny.py to write whole tiny checkpoints):

    TINY_VOCAB_SIZE: int                      # 512 byte symbols + TINY_MERGE_COUNT merges + 2 specials
    TINY_CLIP_L: CLIPTextConfig               # width 32, 2 layers, 2 heads, quick_gelu, no projection
    TINY_CLIP_G: CLIPTextConfig               # width 48, 2 layers, 3 heads, gelu, projection_dim 48
    random_clip_l_state_dict(cfg=TINY_CLIP_L, generator=None) -> dict[str, Tensor]
        Hugging Face layout with the `text_model.` prefix, as inside real SD checkpoints:
        prefix it with `cond_stage_model.transformer.` (SD1.5) or
        `conditioner.embedders.0.transformer.` (SDXL).
    random_clip_g_state_dict(cfg=TINY_CLIP_G, generator=None) -> dict[str, Tensor]
        OpenCLIP layout (`token_embedding.weight`, `positional_embedding`,
        `transformer.resblocks.N.{ln_1,attn.in_proj_weight,attn.in_proj_bias,attn.out_proj,ln_2,
        mlp.c_fc,mlp.c_proj}.*`, `ln_final.*`, `text_projection` [width, projection_dim],
        `logit_scale`), as inside real SDXL files: prefix it with `conditioner.embedders.1.model.`
        (SDXL base) or `conditioner.embedders.0.model.` (refiner).
    write_tiny_tokenizer(directory) -> Path
        Writes `vocab.json` + `merges.txt` (a real byte-level BPE learned from a built-in text)
        into `directory` (created if needed) and returns it; `models.tokenizer.CLIPTokenizer` and
        transformers' `CLIPTokenizer` both read it.

All tensors are float32 on the CPU. Keep projection_dim == width for CLIP-G (as bigG does):
diffusers' OpenCLIP conversion, our test oracle, assumes it. Heads follow
`models.clip_text.heads_for_width` (16-wide heads for tiny widths), so a loader that reads only the
tensors rebuilds these exact configs.
"""
from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import torch

from models.clip_text import GELU, QUICK_GELU, CLIPTextConfig
from models.tokenizer import END_OF_WORD, bytes_to_unicode, split_words, normalize_text, vocab_from_merges

TINY_MERGE_COUNT = 400
TINY_VOCAB_SIZE = 512 + TINY_MERGE_COUNT + 2

TINY_CLIP_L = CLIPTextConfig(
    width=32, layers=2, heads=2, vocab_size=TINY_VOCAB_SIZE, max_positions=77, intermediate=64,
    activation=QUICK_GELU, projection_dim=None,
)
TINY_CLIP_G = CLIPTextConfig(
    width=48, layers=2, heads=3, vocab_size=TINY_VOCAB_SIZE, max_positions=77, intermediate=96,
    activation=GELU, projection_dim=48,
)

# Prompt-flavoured English, so ordinary prompt words become one or a few tokens.
_TRAINING_TEXT = """
a photo of a cat sitting on a wooden table in the morning light, highly detailed, sharp focus
a beautiful landscape with mountains and a river at sunset, dramatic clouds, golden hour
portrait of a young woman with long hair, studio lighting, soft shadows, cinematic color grading
an old man reading a book in a cozy library, warm light, oil painting, masterpiece
a red sports car driving through the city at night, neon lights, rain on the street, reflections
a small house in the forest covered with snow, winter evening, smoke from the chimney
a dog running on the beach, waves, blue sky, summer, happy, photograph, best quality
futuristic city skyline with flying cars and tall buildings, science fiction concept art
a bowl of fresh fruit on the kitchen table, still life, natural light, realistic texture
the knight stands in front of the castle gate holding a sword and a shield, fantasy illustration
a cup of coffee with a flower drawn in the foam, close up, shallow depth of field
children playing in the park under the green trees, spring afternoon, bright and colorful
a dragon flying over the sea, epic scene, high resolution, intricate details, artstation
black and white photograph of a street in the old town, people walking, film grain
a girl wearing a white dress standing in a field of flowers, wind, dreamy atmosphere
low quality, blurry, worst quality, bad anatomy, extra fingers, watermark, text, signature
"""


def _learn_merges(text: str, count: int) -> list[tuple[str, str]]:
    """Classic BPE training over the words of `text`: repeatedly merge the most frequent
    adjacent symbol pair (ties broken by the pair itself, so the result is deterministic)."""
    byte_chars = bytes_to_unicode()
    word_counts = Counter(split_words(normalize_text(text)))
    words: dict[tuple[str, ...], int] = {}
    for word, n in word_counts.items():
        symbols = [byte_chars[b] for b in word.encode("utf-8")]
        symbols[-1] += END_OF_WORD
        words[tuple(symbols)] = words.get(tuple(symbols), 0) + n
    merges: list[tuple[str, str]] = []
    while len(merges) < count:
        pair_counts: Counter = Counter()
        for symbols, n in words.items():
            for pair in zip(symbols, symbols[1:]):
                pair_counts[pair] += n
        if not pair_counts:
            raise ValueError("training text too short for the requested number of merges")
        best = min(pair_counts, key=lambda p: (-pair_counts[p], p))
        merges.append(best)
        merged_words: dict[tuple[str, ...], int] = {}
        for symbols, n in words.items():
            out, i = [], 0
            while i < len(symbols):
                if i + 1 < len(symbols) and (symbols[i], symbols[i + 1]) == best:
                    out.append(symbols[i] + symbols[i + 1])
                    i += 2
                else:
                    out.append(symbols[i])
                    i += 1
            merged_words[tuple(out)] = merged_words.get(tuple(out), 0) + n
        words = merged_words
    return merges


def tiny_merges() -> list[tuple[str, str]]:
    return _learn_merges(_TRAINING_TEXT, TINY_MERGE_COUNT)


def write_tiny_tokenizer(directory: str | Path) -> Path:
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    merges = tiny_merges()
    vocab = vocab_from_merges(merges)
    assert len(vocab) == TINY_VOCAB_SIZE
    (directory / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    lines = ["#version: 0.2"] + [f"{a} {b}" for a, b in merges]
    (directory / "merges.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return directory


# ---------------------------------------------------------------------------------------------
# Random weights


def _normal(shape, std: float, generator: torch.Generator | None, mean: float = 0.0) -> torch.Tensor:
    return torch.randn(shape, generator=generator) * std + mean


def _layer_tensors(cfg: CLIPTextConfig, g: torch.Generator | None) -> dict[str, torch.Tensor]:
    """One block's weights by role, scaled by 1/sqrt(fan_in) so activations stay O(1); norms
    and biases are perturbed away from 1 and 0 so a parity test would notice them missing."""
    w, m = cfg.width, cfg.intermediate
    return {
        "ln_1.weight": _normal(w, 0.1, g, 1.0),
        "ln_1.bias": _normal(w, 0.1, g),
        "q.weight": _normal((w, w), w**-0.5, g),
        "k.weight": _normal((w, w), w**-0.5, g),
        "v.weight": _normal((w, w), w**-0.5, g),
        "q.bias": _normal(w, 0.1, g),
        "k.bias": _normal(w, 0.1, g),
        "v.bias": _normal(w, 0.1, g),
        "out.weight": _normal((w, w), w**-0.5, g),
        "out.bias": _normal(w, 0.1, g),
        "ln_2.weight": _normal(w, 0.1, g, 1.0),
        "ln_2.bias": _normal(w, 0.1, g),
        "fc1.weight": _normal((m, w), w**-0.5, g),
        "fc1.bias": _normal(m, 0.1, g),
        "fc2.weight": _normal((w, m), m**-0.5, g),
        "fc2.bias": _normal(w, 0.1, g),
    }


def random_clip_l_state_dict(
    cfg: CLIPTextConfig = TINY_CLIP_L, generator: torch.Generator | None = None
) -> dict[str, torch.Tensor]:
    """Random CLIP text weights in the Hugging Face layout (`text_model.` prefix included);
    adds `text_projection.weight` only if `cfg.projection_dim` is set."""
    g = generator
    sd = {
        "text_model.embeddings.token_embedding.weight": _normal((cfg.vocab_size, cfg.width), 1.0, g),
        "text_model.embeddings.position_embedding.weight": _normal((cfg.max_positions, cfg.width), 0.5, g),
    }
    for i in range(cfg.layers):
        t = _layer_tensors(cfg, g)
        p = f"text_model.encoder.layers.{i}."
        sd[p + "layer_norm1.weight"], sd[p + "layer_norm1.bias"] = t["ln_1.weight"], t["ln_1.bias"]
        for name, short in (("q_proj", "q"), ("k_proj", "k"), ("v_proj", "v"), ("out_proj", "out")):
            sd[p + f"self_attn.{name}.weight"] = t[f"{short}.weight"]
            sd[p + f"self_attn.{name}.bias"] = t[f"{short}.bias"]
        sd[p + "layer_norm2.weight"], sd[p + "layer_norm2.bias"] = t["ln_2.weight"], t["ln_2.bias"]
        for name in ("fc1", "fc2"):
            sd[p + f"mlp.{name}.weight"], sd[p + f"mlp.{name}.bias"] = t[f"{name}.weight"], t[f"{name}.bias"]
    sd["text_model.final_layer_norm.weight"] = _normal(cfg.width, 0.1, g, 1.0)
    sd["text_model.final_layer_norm.bias"] = _normal(cfg.width, 0.1, g)
    if cfg.projection_dim is not None:
        sd["text_projection.weight"] = _normal((cfg.projection_dim, cfg.width), cfg.width**-0.5, g)
    return sd


def random_clip_g_state_dict(
    cfg: CLIPTextConfig = TINY_CLIP_G, generator: torch.Generator | None = None
) -> dict[str, torch.Tensor]:
    """Random CLIP text weights in OpenCLIP's layout (fused q/k/v, transposed projection)."""
    if cfg.projection_dim is None:
        raise ValueError("an OpenCLIP text tower always has a text_projection; set projection_dim")
    g = generator
    sd = {
        "token_embedding.weight": _normal((cfg.vocab_size, cfg.width), 1.0, g),
        "positional_embedding": _normal((cfg.max_positions, cfg.width), 0.5, g),
    }
    for i in range(cfg.layers):
        t = _layer_tensors(cfg, g)
        p = f"transformer.resblocks.{i}."
        sd[p + "ln_1.weight"], sd[p + "ln_1.bias"] = t["ln_1.weight"], t["ln_1.bias"]
        sd[p + "attn.in_proj_weight"] = torch.cat([t["q.weight"], t["k.weight"], t["v.weight"]], dim=0)
        sd[p + "attn.in_proj_bias"] = torch.cat([t["q.bias"], t["k.bias"], t["v.bias"]], dim=0)
        sd[p + "attn.out_proj.weight"], sd[p + "attn.out_proj.bias"] = t["out.weight"], t["out.bias"]
        sd[p + "ln_2.weight"], sd[p + "ln_2.bias"] = t["ln_2.weight"], t["ln_2.bias"]
        sd[p + "mlp.c_fc.weight"], sd[p + "mlp.c_fc.bias"] = t["fc1.weight"], t["fc1.bias"]
        sd[p + "mlp.c_proj.weight"], sd[p + "mlp.c_proj.bias"] = t["fc2.weight"], t["fc2.bias"]
    sd["ln_final.weight"] = _normal(cfg.width, 0.1, g, 1.0)
    sd["ln_final.bias"] = _normal(cfg.width, 0.1, g)
    sd["text_projection"] = _normal((cfg.width, cfg.projection_dim), cfg.width**-0.5, g)
    sd["logit_scale"] = torch.tensor(4.6052)  # ln(100), the value real CLIP models end with
    return sd
