"""One CLIP text transformer (CLIP ViT-L/14's for SD1.5/SDXL, OpenCLIP bigG's for SDXL).

Attribute names follow the Hugging Face layout that real single-file checkpoints use for CLIP-L
(`text_model.embeddings.token_embedding.weight`, `text_model.encoder.layers.N.self_attn.q_proj.*`,
`text_model.final_layer_norm.*`, plus `text_projection.weight` when the model projects), so
loading is a strict `load_state_dict`. OpenCLIP's layout (CLIP-G in SDXL files) is converted to
it by `open_clip_to_hf`.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

import torch
import torch.nn.functional as F
from torch import nn

QUICK_GELU = "quick_gelu"
GELU = "gelu"


@dataclass(frozen=True)
class CLIPTextConfig:
    width: int = 768  # hidden size of every token vector
    layers: int = 12  # number of transformer blocks
    heads: int = 12  # attention heads (width // heads per head)
    vocab_size: int = 49408  # token embedding rows
    max_positions: int = 77  # position embedding rows = tokens per window
    intermediate: int = 3072  # MLP hidden size
    activation: str = QUICK_GELU  # "quick_gelu" (OpenAI CLIP-L) or "gelu" (OpenCLIP G/H)
    projection_dim: int | None = None  # output size of `text_projection`; None = no projection
    layer_norm_eps: float = 1e-5


CLIP_L_CONFIG = CLIPTextConfig()
CLIP_G_CONFIG = CLIPTextConfig(
    width=1280, layers=32, heads=20, intermediate=5120, activation=GELU, projection_dim=1280
)


def heads_for_width(width: int) -> int:
    """Heads are not stored in a checkpoint. Every real CLIP text model uses 64-wide heads;
    tiny test models (width not a multiple of 64) use 16-wide heads."""
    if width % 64 == 0:
        return width // 64
    if width % 16 == 0:
        return width // 16
    raise ValueError(f"cannot infer attention heads for width {width}; pass heads explicitly")


@dataclass
class CLIPTextOutput:
    last_hidden_state: torch.Tensor  # [B, T, width], after the final LayerNorm
    pooled: torch.Tensor  # [B, width], last_hidden_state at the end token
    text_embeds: torch.Tensor | None  # [B, projection_dim], pooled @ text_projection, if any
    hidden_state: torch.Tensor | None  # [B, T, width], the requested layer, without final norm
    hidden_states: tuple[torch.Tensor, ...] | None  # embeddings + each layer, if asked for


class CLIPAttention(nn.Module):
    def __init__(self, cfg: CLIPTextConfig):
        super().__init__()
        self.heads = cfg.heads
        self.q_proj = nn.Linear(cfg.width, cfg.width)
        self.k_proj = nn.Linear(cfg.width, cfg.width)
        self.v_proj = nn.Linear(cfg.width, cfg.width)
        self.out_proj = nn.Linear(cfg.width, cfg.width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, tokens, width = x.shape

        def split_heads(t: torch.Tensor) -> torch.Tensor:
            return t.view(batch, tokens, self.heads, width // self.heads).transpose(1, 2)

        q, k, v = split_heads(self.q_proj(x)), split_heads(self.k_proj(x)), split_heads(self.v_proj(x))
        # CLIP's text transformer is causal: a token only sees itself and earlier tokens.
        out = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.out_proj(out.transpose(1, 2).reshape(batch, tokens, width))


class CLIPMLP(nn.Module):
    def __init__(self, cfg: CLIPTextConfig):
        super().__init__()
        if cfg.activation not in (QUICK_GELU, GELU):
            raise ValueError(f"unknown CLIP activation {cfg.activation!r}")
        self.quick = cfg.activation == QUICK_GELU
        self.fc1 = nn.Linear(cfg.width, cfg.intermediate)
        self.fc2 = nn.Linear(cfg.intermediate, cfg.width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.fc1(x)
        x = x * torch.sigmoid(1.702 * x) if self.quick else F.gelu(x)
        return self.fc2(x)


class CLIPEncoderLayer(nn.Module):
    def __init__(self, cfg: CLIPTextConfig):
        super().__init__()
        self.layer_norm1 = nn.LayerNorm(cfg.width, eps=cfg.layer_norm_eps)
        self.self_attn = CLIPAttention(cfg)
        self.layer_norm2 = nn.LayerNorm(cfg.width, eps=cfg.layer_norm_eps)
        self.mlp = CLIPMLP(cfg)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.self_attn(self.layer_norm1(x))
        return x + self.mlp(self.layer_norm2(x))


class CLIPEncoder(nn.Module):
    def __init__(self, cfg: CLIPTextConfig):
        super().__init__()
        self.layers = nn.ModuleList(CLIPEncoderLayer(cfg) for _ in range(cfg.layers))


class CLIPTextEmbeddings(nn.Module):
    def __init__(self, cfg: CLIPTextConfig):
        super().__init__()
        self.token_embedding = nn.Embedding(cfg.vocab_size, cfg.width)
        self.position_embedding = nn.Embedding(cfg.max_positions, cfg.width)

    def forward(self, input_ids: torch.Tensor, extra: torch.Tensor | None = None) -> torch.Tensor:
        """extra: [K, width] vectors for ids vocab_size .. vocab_size + K - 1 (textual inversion)."""
        positions = self.position_embedding.weight[: input_ids.shape[-1]]
        if extra is None:
            return self.token_embedding(input_ids) + positions
        weight = self.token_embedding.weight
        table = torch.cat([weight, extra.to(device=weight.device, dtype=weight.dtype)])
        return nn.functional.embedding(input_ids, table) + positions


class CLIPTextTransformer(nn.Module):
    def __init__(self, cfg: CLIPTextConfig):
        super().__init__()
        self.embeddings = CLIPTextEmbeddings(cfg)
        self.encoder = CLIPEncoder(cfg)
        self.final_layer_norm = nn.LayerNorm(cfg.width, eps=cfg.layer_norm_eps)


class CLIPTextModel(nn.Module):
    """CLIP text encoder; `text_projection` exists only when `cfg.projection_dim` is set."""

    def __init__(self, cfg: CLIPTextConfig):
        super().__init__()
        self.config = cfg
        self.text_model = CLIPTextTransformer(cfg)
        if cfg.projection_dim is not None:
            self.text_projection = nn.Linear(cfg.width, cfg.projection_dim, bias=False)

    def forward(
        self,
        input_ids: torch.Tensor,
        hidden_layer: int | None = None,
        output_hidden_states: bool = False,
        extra_embeddings: torch.Tensor | None = None,
    ) -> CLIPTextOutput:
        """`hidden_layer` indexes (embeddings, layer 1, ..., layer N) like Hugging Face's
        `hidden_states`: -1 = last layer, -2 = penultimate (SDXL), before the final LayerNorm."""
        tm = self.text_model
        x = tm.embeddings(input_ids, extra_embeddings)
        # keep only the states asked for: a long prompt is hundreds of windows, and all of a
        # 32-layer CLIP-G's states for them would be gigabytes
        wanted = None if hidden_layer is None else range(len(tm.encoder.layers) + 1)[hidden_layer]
        states = [x] if output_hidden_states else None
        hidden_state = x if wanted == 0 else None
        for index, layer in enumerate(tm.encoder.layers, start=1):
            x = layer(x)
            if states is not None:
                states.append(x)
            if index == wanted:
                hidden_state = x
        last = tm.final_layer_norm(x)
        # The end token has the highest id in CLIP's vocabulary, so argmax finds the first one
        # (what transformers and the SD/SDXL code do).
        # Embedding ids past the vocabulary are not end tokens: they are masked out first.
        vocab = tm.embeddings.token_embedding.num_embeddings
        end_positions = torch.where(input_ids < vocab, input_ids, -1).to(torch.int32).argmax(dim=-1)
        pooled = last[torch.arange(last.shape[0], device=last.device), end_positions]
        text_embeds = self.text_projection(pooled) if hasattr(self, "text_projection") else None
        return CLIPTextOutput(
            last_hidden_state=last,
            pooled=pooled,
            text_embeds=text_embeds,
            hidden_state=hidden_state,
            hidden_states=tuple(states) if states is not None else None,
        )


# ---------------------------------------------------------------------------------------------
# State dict layouts

_IGNORED_KEYS = ("text_model.embeddings.position_ids", "logit_scale", "attn_mask")


def open_clip_to_hf(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """OpenCLIP text-tower keys (`token_embedding.weight`, `positional_embedding`,
    `transformer.resblocks.N.*`, `ln_final.*`, `text_projection`) -> our Hugging Face names.

    The fused attention input projection `in_proj_weight` [3w, w] is q, k, v stacked in that
    order; OpenCLIP's `text_projection` [w, p] is used as `x @ P`, a Linear weight is its transpose.
    `logit_scale` (the contrastive temperature) has no use in a text encoder and is dropped.
    """
    top = {
        "token_embedding.weight": "text_model.embeddings.token_embedding.weight",
        "positional_embedding": "text_model.embeddings.position_embedding.weight",
        "ln_final.weight": "text_model.final_layer_norm.weight",
        "ln_final.bias": "text_model.final_layer_norm.bias",
    }
    block = {
        "ln_1.": "layer_norm1.",
        "ln_2.": "layer_norm2.",
        "attn.out_proj.": "self_attn.out_proj.",
        "mlp.c_fc.": "mlp.fc1.",
        "mlp.c_proj.": "mlp.fc2.",
    }
    out: dict[str, torch.Tensor] = {}
    for key, value in state_dict.items():
        if key in top:
            out[top[key]] = value
        elif key == "text_projection":
            out["text_projection.weight"] = value.t().contiguous()
        elif key.startswith("transformer.resblocks."):
            index, rest = key[len("transformer.resblocks."):].split(".", 1)
            prefix = f"text_model.encoder.layers.{index}."
            if rest in ("attn.in_proj_weight", "attn.in_proj_bias"):
                kind = rest.rsplit("_", 1)[1]  # "weight" or "bias"
                q, k, v = value.chunk(3, dim=0)
                out[prefix + f"self_attn.q_proj.{kind}"] = q
                out[prefix + f"self_attn.k_proj.{kind}"] = k
                out[prefix + f"self_attn.v_proj.{kind}"] = v
            else:
                for old, new in block.items():
                    if rest.startswith(old):
                        out[prefix + new + rest[len(old):]] = value
                        break
                else:
                    out[key] = value  # unknown: left for the strict load to report
        elif key.rsplit(".", 1)[-1] not in _IGNORED_KEYS and key not in _IGNORED_KEYS:
            out[key] = value
    return out


def is_open_clip_layout(state_dict: Mapping[str, torch.Tensor]) -> bool:
    return "token_embedding.weight" in state_dict or "positional_embedding" in state_dict


def normalize_hf_keys(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Hugging Face layout with or without the `text_model.` prefix (old SD1.x files and
    transformers 5's CLIPTextModel lack it); drops the non-weight `position_ids` buffer."""
    out = {}
    for key, value in state_dict.items():
        if key.startswith(("embeddings.", "encoder.", "final_layer_norm.")):
            key = "text_model." + key
        if key not in _IGNORED_KEYS:
            out[key] = value
    return out


def config_from_state_dict(
    state_dict: Mapping[str, torch.Tensor], activation: str, heads: int | None = None
) -> CLIPTextConfig:
    """Widths and depth read from the tensors of a Hugging Face layout state dict. The
    activation is not stored in a file, so the caller says which model this is."""
    token = state_dict["text_model.embeddings.token_embedding.weight"]
    positions = state_dict["text_model.embeddings.position_embedding.weight"]
    layers = 1 + max(
        int(k.split(".")[3]) for k in state_dict if k.startswith("text_model.encoder.layers.")
    )
    projection = state_dict.get("text_projection.weight")
    width = token.shape[1]
    return CLIPTextConfig(
        width=width,
        layers=layers,
        heads=heads if heads is not None else heads_for_width(width),
        vocab_size=token.shape[0],
        max_positions=positions.shape[0],
        intermediate=state_dict["text_model.encoder.layers.0.mlp.fc1.weight"].shape[0],
        activation=activation,
        projection_dim=None if projection is None else projection.shape[0],
    )


def load_clip_text_model(
    state_dict: Mapping[str, torch.Tensor], activation: str, heads: int | None = None
) -> CLIPTextModel:
    """A CLIP text model from its own state dict (prefix already removed), in either the
    Hugging Face or the OpenCLIP layout. Loading is strict: a missing key is an error."""
    hf = open_clip_to_hf(state_dict) if is_open_clip_layout(state_dict) else normalize_hf_keys(state_dict)
    cfg = config_from_state_dict(hf, activation, heads)
    dtype = hf["text_model.embeddings.token_embedding.weight"].dtype
    with torch.device("meta"):
        model = CLIPTextModel(cfg)
    model.load_state_dict(hf, strict=True, assign=True)
    return model.to(dtype).eval().requires_grad_(False)
