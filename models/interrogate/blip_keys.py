"""Salesforce BLIP caption checkpoints in transformers' layout: key rename and network shape.

Fooocus' `model_base_caption_capfilt_large.pth` is Salesforce's original file: a pickle
`{"model": state_dict, ...}` of `BLIP_Decoder` (github.com/salesforce/BLIP, models/blip.py):

    visual_encoder.{cls_token, pos_embed, patch_embed.proj.*}
    visual_encoder.blocks.N.{norm1, attn.qkv, attn.proj, norm2, mlp.fc1, mlp.fc2}.*
    visual_encoder.norm.*                                    (ViT-B/16 at 384 px, LayerNorm eps 1e-6)
    text_decoder.bert.embeddings.{word_embeddings, position_embeddings, LayerNorm}.*, .position_ids
    text_decoder.bert.encoder.layer.N.{attention, crossattention}.{self.{query,key,value}, output.{dense,LayerNorm}}.*
    text_decoder.bert.encoder.layer.N.{intermediate.dense, output.dense, output.LayerNorm}.*
    text_decoder.cls.predictions.{bias, transform.dense, transform.LayerNorm, decoder}.*

`rename_key` applies, in the same order, the rules of `rename_key` in transformers' own conversion
script for this model, src/transformers/models/blip/convert_blip_original_pytorch_to_hf.py
(`convert_blip_checkpoint` loads `blip_decoder(...).state_dict()` renamed by it into
`BlipForConditionalGeneration`). The text decoder's names already match transformers'.

`BlipShape.of(state)` reads every width and depth from the tensors; only the attention head count is
not stored in any shape: BLIP's heads are 64 wide (ViT-B 768 = 12 x 64, the BERT decoder likewise),
the tiny test models use 16-wide heads below 256 channels.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Mapping

import torch

VISION_PREFIX = "visual_encoder."
TEXT_PREFIX = "text_decoder."
# A buffer of the original BertEmbeddings (arange(max positions)); transformers rebuilds it itself.
POSITION_IDS_KEY = "text_decoder.bert.embeddings.position_ids"
# BLIP's LayerNorm epsilons: timm-style ViT (1e-6) and BERT (1e-12, med_config.json).
VISION_LAYER_NORM_EPS = 1e-6
TEXT_LAYER_NORM_EPS = 1e-12

# (literal the key must contain, regex, replacement) in the order of the conversion script's
# `rename_key`: each rule runs only on keys that contain its literal, as the script's `if ... in key`.
RENAME_RULES: tuple[tuple[str, str, str], ...] = (
    ("visual_encoder", "visual_encoder*", "vision_model.encoder"),
    ("blocks", "blocks", "layers"),
    ("attn", "attn", "self_attn"),
    ("norm1", "norm1", "layer_norm1"),
    ("norm2", "norm2", "layer_norm2"),
    ("encoder.norm", "encoder.norm", "post_layernorm"),
    ("encoder.patch_embed.proj", "encoder.patch_embed.proj", "embeddings.patch_embedding"),
    ("encoder.pos_embed", "encoder.pos_embed", "embeddings.position_embedding"),
    ("encoder.cls_token", "encoder.cls_token", "embeddings.class_embedding"),
    ("self_attn", "self_attn.proj", "self_attn.projection"),
)


class BlipCheckpointError(ValueError):
    """A file that is not a BLIP caption checkpoint in Salesforce's layout."""


def rename_key(key: str) -> str:
    """A Salesforce BLIP_Decoder key in BlipForConditionalGeneration's naming."""
    for literal, pattern, replacement in RENAME_RULES:
        if literal in key:
            key = re.sub(pattern, replacement, key)
    return key


def convert_state_dict(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The tensors of BLIP_Decoder renamed for transformers. Keys of other networks some BLIP files
    carry (momentum encoders `visual_encoder_m.*`, text encoders) are left out, and so is the
    position-id buffer, which transformers keeps as a non-persistent buffer."""
    converted = {}
    for key, value in state.items():
        if key == POSITION_IDS_KEY or not key.startswith((VISION_PREFIX, TEXT_PREFIX)):
            continue
        converted[rename_key(key)] = value
    return converted


def heads_for_width(width: int) -> int:
    return width // 64 if width >= 256 and width % 64 == 0 else max(1, width // 16)


def _count_indexed(state: Mapping[str, torch.Tensor], prefix: str) -> int:
    pattern = re.compile(re.escape(prefix) + r"(\d+)\.")
    indices = {int(m.group(1)) for key in state if (m := pattern.match(key))}
    if indices != set(range(len(indices))):
        raise BlipCheckpointError(f"layers under {prefix!r} are not numbered 0..N-1: {sorted(indices)}")
    return len(indices)


@dataclass(frozen=True)
class BlipShape:
    """The hyperparameters of a BLIP caption network, as its tensors show them."""

    vision_width: int  # ViT embedding width (768 for ViT-B)
    vision_layers: int  # ViT blocks (12)
    vision_mlp: int  # ViT MLP hidden width (3072)
    patch_size: int  # ViT patch side in pixels (16)
    image_size: int  # input side in pixels, from the position table (384)
    text_width: int  # BERT decoder width (768)
    text_layers: int  # BERT decoder layers, each with cross-attention (12)
    text_intermediate: int  # BERT feed-forward width (3072)
    vocab_size: int  # token rows: BERT uncased 30522 + [DEC] + [ENC] = 30524
    max_positions: int  # text position table rows (512)
    encoder_width: int  # width of the image embeddings the cross-attention reads (768)

    @classmethod
    def of(cls, state: Mapping[str, torch.Tensor]) -> "BlipShape":
        try:
            cls_token = state["visual_encoder.cls_token"]
            patch = state["visual_encoder.patch_embed.proj.weight"]
            positions = state["visual_encoder.pos_embed"]
            words = state["text_decoder.bert.embeddings.word_embeddings.weight"]
            text_positions = state["text_decoder.bert.embeddings.position_embeddings.weight"]
            fc1 = state["visual_encoder.blocks.0.mlp.fc1.weight"]
            intermediate = state["text_decoder.bert.encoder.layer.0.intermediate.dense.weight"]
            cross_key = state["text_decoder.bert.encoder.layer.0.crossattention.self.key.weight"]
        except KeyError as missing:
            raise BlipCheckpointError(f"not a BLIP caption checkpoint (Salesforce layout): no tensor {missing}") from None
        grid = round((positions.shape[1] - 1) ** 0.5)
        if grid * grid != positions.shape[1] - 1:
            raise BlipCheckpointError(f"visual_encoder.pos_embed has {positions.shape[1]} rows: not 1 + a square grid")
        return cls(vision_width=int(cls_token.shape[-1]), vision_layers=_count_indexed(state, "visual_encoder.blocks."),
                   vision_mlp=int(fc1.shape[0]), patch_size=int(patch.shape[-1]), image_size=grid * int(patch.shape[-1]),
                   text_width=int(words.shape[1]), text_layers=_count_indexed(state, "text_decoder.bert.encoder.layer."),
                   text_intermediate=int(intermediate.shape[0]), vocab_size=int(words.shape[0]),
                   max_positions=int(text_positions.shape[0]), encoder_width=int(cross_key.shape[1]))

    def transformers_config(self, *, bos_token_id: int, sep_token_id: int, pad_token_id: int):
        """transformers' BlipConfig for this network; the token ids come from its tokenizer."""
        from transformers import BlipConfig

        text = dict(vocab_size=self.vocab_size, hidden_size=self.text_width, encoder_hidden_size=self.encoder_width,
                    intermediate_size=self.text_intermediate, num_hidden_layers=self.text_layers,
                    num_attention_heads=heads_for_width(self.text_width), max_position_embeddings=self.max_positions,
                    hidden_act="gelu", layer_norm_eps=TEXT_LAYER_NORM_EPS, hidden_dropout_prob=0.0,
                    attention_probs_dropout_prob=0.0, bos_token_id=bos_token_id, sep_token_id=sep_token_id,
                    eos_token_id=sep_token_id, pad_token_id=pad_token_id)
        vision = dict(hidden_size=self.vision_width, intermediate_size=self.vision_mlp,
                      num_hidden_layers=self.vision_layers, num_attention_heads=heads_for_width(self.vision_width),
                      image_size=self.image_size, patch_size=self.patch_size, hidden_act="gelu",
                      layer_norm_eps=VISION_LAYER_NORM_EPS, attention_dropout=0.0)
        return BlipConfig(text_config=text, vision_config=vision, projection_dim=self.text_width)
