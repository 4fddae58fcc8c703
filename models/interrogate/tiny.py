"""Tiny random interrogation models in the real file layouts, for tests and the offline demo.

    write_tiny_blip(path, tokenizer_dir, seed=0) -> BlipShape
        A BLIP caption checkpoint in Salesforce's layout (`{"model": state_dict}`, the keys of
        `model_base_caption_capfilt_large.pth`, tiny widths) and a matching BERT vocabulary
        (`vocab.txt`) in `tokenizer_dir`. Its captions are random words from TINY_WORDS.
    write_tiny_wd14(model_path, tags_path, seed=0, side=32) -> list[Tag]
        A WD14-style ONNX tagger (input `[batch, side, side, 3]` BGR 0..255, output
        `predictions_sigmoid` `[batch, tags]`) and its `selected_tags.csv` (ratings, general,
        character tags, as the real file orders them).

`salesforce_key` maps transformers' BLIP names back to Salesforce's, written module by module
from BLIP's sources (models/vit.py, models/med.py); the loader's rename (blip_keys.py) follows
transformers' conversion script instead, and the tests hold the two against each other.
"""
from __future__ import annotations

import csv
import re
from pathlib import Path

import numpy as np
import torch

from .blip import load_bert_tokenizer
from .blip_keys import POSITION_IDS_KEY, BlipShape
from .wd14 import CHARACTER, GENERAL, RATING, Tag

TINY_WORDS = ("a", "picture", "of", "the", "with", "on", "in", "and", "cat", "dog", "woman", "man", "tree", "house",
              "car", "sky", "water", "mountain", "street", "table", "flowers", "beach", "red", "blue", "green",
              "white", "small", "large", "old", "sitting", "standing", "next", "to", "near", "field", "city",
              "window", "road", "bird", "boat", "chair", "room", "wall", "grass", "snow", "river", "bridge",
              "light", "night", "sunset", "black", "yellow", "wooden", "girl", "boy", "people", "horse", "train",
              "plate", "food", "shirt", "hat", "holding", "looking", "front", "top")  # over 50: top_k matters
BERT_SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
TINY_BLIP_SIDE = 32


def tiny_blip_shape(vocab_size: int) -> BlipShape:
    return BlipShape(vision_width=32, vision_layers=2, vision_mlp=64, patch_size=8, image_size=TINY_BLIP_SIDE,
                     text_width=32, text_layers=2, text_intermediate=64, vocab_size=vocab_size, max_positions=80,
                     encoder_width=32)


# --- BLIP ---------------------------------------------------------------------------------------
_VISION_NAMES = {
    "vision_model.embeddings.class_embedding": "visual_encoder.cls_token",
    "vision_model.embeddings.position_embedding": "visual_encoder.pos_embed",
    "vision_model.embeddings.patch_embedding.weight": "visual_encoder.patch_embed.proj.weight",
    "vision_model.embeddings.patch_embedding.bias": "visual_encoder.patch_embed.proj.bias",
    "vision_model.post_layernorm.weight": "visual_encoder.norm.weight",
    "vision_model.post_layernorm.bias": "visual_encoder.norm.bias",
}
# transformers' BlipEncoderLayer module -> timm-style Block module of BLIP's ViT
_VISION_BLOCK_MODULES = {"layer_norm1": "norm1", "self_attn.qkv": "attn.qkv", "self_attn.projection": "attn.proj",
                         "layer_norm2": "norm2", "mlp.fc1": "mlp.fc1", "mlp.fc2": "mlp.fc2"}
_VISION_LAYER = re.compile(r"vision_model\.encoder\.layers\.(\d+)\.(.+)\.(weight|bias)$")


def salesforce_key(key: str) -> str:
    """A BlipForConditionalGeneration key as Salesforce's BLIP_Decoder names it."""
    if key.startswith("text_decoder."):
        return key  # transformers kept the names of BLIP's BERT decoder
    if key in _VISION_NAMES:
        return _VISION_NAMES[key]
    match = _VISION_LAYER.match(key)
    if match is None or match.group(2) not in _VISION_BLOCK_MODULES:
        raise KeyError(f"no Salesforce name for {key}")
    index, module, kind = match.groups()
    return f"visual_encoder.blocks.{index}.{_VISION_BLOCK_MODULES[module]}.{kind}"


def salesforce_layout(shape: BlipShape) -> dict[str, tuple[int, ...]]:
    """Key -> tensor shape of a Salesforce BLIP_Decoder file with this shape (position_ids included)."""
    from transformers import BlipForConditionalGeneration

    config = shape.transformers_config(bos_token_id=shape.vocab_size - 2, sep_token_id=0, pad_token_id=0)
    with torch.device("meta"):
        model = BlipForConditionalGeneration(config)
    layout = {salesforce_key(key): tuple(value.shape) for key, value in model.state_dict().items()}
    layout[POSITION_IDS_KEY] = (1, shape.max_positions)
    return layout


def write_bert_vocab(directory: str | Path, words=TINY_WORDS) -> Path:
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "vocab.txt").write_text("\n".join((*BERT_SPECIAL_TOKENS, *words)) + "\n", encoding="utf-8")
    return directory


def tiny_blip_state(shape: BlipShape, tokenizer, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random weights in Salesforce's layout. The output bias keeps special tokens from being sampled
    and favours [SEP] a little, so demo captions are a few visible words."""
    generator = torch.Generator().manual_seed(seed)
    state = {}
    for key, size in salesforce_layout(shape).items():
        if key == POSITION_IDS_KEY:
            state[key] = torch.arange(size[1]).expand(size).clone()
        elif "norm" in key.lower() and key.endswith("weight"):
            state[key] = 1.0 + 0.1 * torch.randn(size, generator=generator)
        elif key.endswith("bias"):
            state[key] = 0.05 * torch.randn(size, generator=generator)
        else:
            state[key] = 0.2 * torch.randn(size, generator=generator)
    head = "text_decoder.cls.predictions."
    bias = state[head + "bias"]
    for token_id in tokenizer.all_special_ids:
        bias[token_id] = -20.0
    bias[tokenizer.sep_token_id] = 3.0
    # Salesforce's BERT head ties its output projection to the word embeddings
    state[head + "decoder.weight"] = state["text_decoder.bert.embeddings.word_embeddings.weight"]
    state[head + "decoder.bias"] = bias
    return state


def write_tiny_blip(path: str | Path, tokenizer_dir: str | Path, seed: int = 0) -> BlipShape:
    tokenizer = load_bert_tokenizer(write_bert_vocab(tokenizer_dir))
    shape = tiny_blip_shape(len(tokenizer))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"model": tiny_blip_state(shape, tokenizer, seed)}, path)
    return shape


# --- WD14 ---------------------------------------------------------------------------------------
TINY_RATINGS = ("general", "sensitive", "questionable", "explicit")
TINY_GENERAL_TAGS = ("1girl", "solo", "long_hair", "short_hair", "smile", "open_mouth", "blue_eyes", "red_eyes",
                     "looking_at_viewer", "simple_background", "white_background", "outdoors", "sky", "cloud",
                     "tree", "flower", "hat", "dress", "school_uniform", "animal_ears", "holding", "upper_body",
                     "standing", ":d")
TINY_CHARACTER_TAGS = ("hatsune_miku", "hakurei_reimu", "kirisame_marisa", "saber_(fate)", "rem_(re:zero)",
                       "cirno")
ALWAYS_TAGGED = ("1girl", "solo")  # given a high bias, so every demo image gets some tags
POOL_GRID = 4  # the tiny tagger sees the image as a POOL_GRID x POOL_GRID grid of mean colours


def tiny_tags() -> list[Tag]:
    return ([Tag(name, RATING) for name in TINY_RATINGS] + [Tag(name, GENERAL) for name in TINY_GENERAL_TAGS]
            + [Tag(name, CHARACTER) for name in TINY_CHARACTER_TAGS])


def write_tags_csv(path: str | Path, tags) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["tag_id", "name", "category", "count"])
        for number, tag in enumerate(tags):
            writer.writerow([100000 + number, tag.name, tag.category, 1000 - number])
    return path


def tagger_onnx(weights: np.ndarray, bias: np.ndarray, side: int, grid: int = POOL_GRID):
    """An onnx ModelProto: sigmoid(flatten(avg_pool(NCHW(x / 255))) @ weights + bias), the real
    tagger's input and output names and layouts."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    if side % grid:
        raise ValueError(f"side {side} must be a multiple of {grid}")
    cell = side // grid
    count = weights.shape[1]
    nodes = [
        helper.make_node("Div", ["input_1:0", "scale"], ["unit"]),
        helper.make_node("Transpose", ["unit"], ["nchw"], perm=[0, 3, 1, 2]),
        helper.make_node("AveragePool", ["nchw"], ["pooled"], kernel_shape=[cell, cell], strides=[cell, cell]),
        helper.make_node("Flatten", ["pooled"], ["features"], axis=1),
        helper.make_node("MatMul", ["features", "weights"], ["mixed"]),
        helper.make_node("Add", ["mixed", "bias"], ["logits"]),
        helper.make_node("Sigmoid", ["logits"], ["predictions_sigmoid"]),
    ]
    initializers = [numpy_helper.from_array(np.array([255.0], dtype=np.float32), "scale"),
                    numpy_helper.from_array(weights.astype(np.float32), "weights"),
                    numpy_helper.from_array(bias.astype(np.float32), "bias")]
    graph = helper.make_graph(
        nodes, "tiny_wd14_tagger",
        [helper.make_tensor_value_info("input_1:0", TensorProto.FLOAT, ["batch", side, side, 3])],
        [helper.make_tensor_value_info("predictions_sigmoid", TensorProto.FLOAT, ["batch", count])],
        initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], producer_name="sdxl-node-server")
    model.ir_version = 7  # readable by every onnxruntime release that runs opset 13
    onnx.checker.check_model(model)
    return model


def write_onnx(model, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(model.SerializeToString())
    return path


def write_tiny_wd14(model_path: str | Path, tags_path: str | Path, seed: int = 0, side: int = 32) -> list[Tag]:
    tags = tiny_tags()
    rng = np.random.default_rng(seed)
    features = 3 * POOL_GRID * POOL_GRID
    weights = rng.normal(0.0, 0.5, size=(features, len(tags)))
    bias = rng.normal(-1.0, 0.5, size=len(tags))
    for number, tag in enumerate(tags):
        if tag.name in ALWAYS_TAGGED:
            bias[number] = 6.0
    write_onnx(tagger_onnx(weights, bias, side), model_path)
    write_tags_csv(tags_path, tags)
    return tags
