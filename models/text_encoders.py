"""Prompt -> conditioning tensors for SD1.5 (CLIP-L), SDXL (CLIP-L + CLIP-G) and the SDXL refiner
(CLIP-G), with emphasis weights and long prompts (ComfyUI's and Fooocus's behaviour).

Weighting: the prompt's windows and the empty prompt's window are encoded; per token
`z = z_empty + (z - z_empty) * w` (tokens of weight 1 are left untouched). Fooocus then rescales
each window so its mean equals the mean before weighting (`rescale_mean=True`); ComfyUI does not.
Windows are concatenated along the token axis (77, 154, ...); the pooled vector comes from the
first window, unweighted.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Mapping, Sequence

import torch

from models.clip_text import GELU, QUICK_GELU, CLIPTextModel, load_clip_text_model
from models.prompt_weights import TokenEncoder, Window, chunk_tokens, empty_window, frame_windows, tokenize_weighted
from models.textual_inversion import EmbeddingLibrary, place_embeddings

SD15_CLIP_L_PREFIX = "cond_stage_model.transformer."
SDXL_CLIP_L_PREFIX = "conditioner.embedders.0.transformer."
SDXL_CLIP_G_PREFIX = "conditioner.embedders.1.model."
REFINER_CLIP_G_PREFIX = "conditioner.embedders.0.model."
# windows per forward pass: bounds the activations of a very long prompt, same result
WINDOWS_PER_PASS = 32


@dataclass
class TextEncoding:
    cond: torch.Tensor  # [1, 77 * windows, D]: 768 SD1.5, 2048 SDXL, 1280 refiner
    pooled: torch.Tensor  # [1, P]: CLIP-G projection (1280) for SDXL/refiner, CLIP-L pooled for SD1.5


@dataclass(frozen=True)
class ClipSlot:
    """One CLIP of an encoder and how its tokens are read out."""

    model: CLIPTextModel
    pad_with_end: bool  # CLIP-L pads windows with the end token, SDXL's CLIP-G with 0
    final_norm: bool  # apply the final LayerNorm to the chosen hidden layer (SD1.5 does)
    key: str = "clip_l"  # which vectors of an SDXL textual-inversion file this CLIP reads


def encode_windows(
    slot: ClipSlot,
    windows: Sequence[Window],
    empty: Window,
    hidden_layer: int,
    rescale_mean: bool = False,
    extra_embeddings: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Weighted hidden states [1, 77 * len(windows), width] and the first window's pooled
    vector (projected if the model has a projection) [1, P]. Runs on the model's device."""
    model = slot.model
    device = model.text_model.embeddings.token_embedding.weight.device
    weights = torch.tensor([[w for _, w in window] for window in windows], dtype=torch.float32)
    has_weights = bool((weights != 1.0).any())
    ids = [[t for t, _ in window] for window in windows]
    if has_weights:
        ids.append([t for t, _ in empty])
    hidden, pooled = [], None
    # every window is encoded (a 20,000-word prompt is hundreds), WINDOWS_PER_PASS at a time
    for part in torch.tensor(ids).split(WINDOWS_PER_PASS):
        out = model(part.to(device), hidden_layer=hidden_layer, extra_embeddings=extra_embeddings)
        hidden.append(out.hidden_state)
        if pooled is None:
            pooled = (out.text_embeds if out.text_embeds is not None else out.pooled)[:1]
    z = torch.cat(hidden)
    if slot.final_norm:
        z = model.text_model.final_layer_norm(z)
    z_windows = z[: len(windows)]
    if has_weights:
        z_empty = z[-1:]
        w = weights.to(device=z.device, dtype=z.dtype)[..., None]
        weighted = z_empty + (z_windows - z_empty) * w
        z_windows = torch.where(w != 1.0, weighted, z_windows)
        if rescale_mean:
            before = z[: len(windows)].mean(dim=(1, 2), keepdim=True)
            z_windows = z_windows * (before / z_windows.mean(dim=(1, 2), keepdim=True))
    return z_windows.reshape(1, -1, z_windows.shape[-1]), pooled


class _PromptEncoder:
    """Shared tokenize + encode logic; subclasses list their CLIP slots and default layer."""

    default_layer = -1

    def __init__(self, tokenizer: TokenEncoder, slots: Sequence[ClipSlot]):
        self.tokenizer = tokenizer
        self.slots = list(slots)

    @property
    def models(self) -> list[CLIPTextModel]:
        """The networks, for whoever moves them between devices."""
        return [slot.model for slot in self.slots]

    def to(self, device=None, dtype=None) -> "_PromptEncoder":
        for model in self.models:
            model.to(device=device, dtype=dtype)
        return self

    def tokenize(self, text: str, pad_with_end: bool = True) -> list[Window]:
        return tokenize_weighted(self.tokenizer, text, pad_with_end=pad_with_end)

    @torch.inference_mode()
    def encode(self, text: str, clip_skip: int | None = None, rescale_mean: bool = False,
               embeddings: EmbeddingLibrary | None = None) -> TextEncoding:
        """`clip_skip` is ComfyUI's CLIPSetLastLayer value: -1 = last layer, -2 = penultimate, ...
        (None = this model's default). Fooocus's clip_skip N is `clip_skip=-N`.
        `rescale_mean=True` applies Fooocus's mean-preserving rescale after weighting.
        `embeddings`: where `embedding:name` words find their vectors (None: read as plain text)."""
        layer = self.default_layer if clip_skip is None else clip_skip
        if layer >= 0:
            raise ValueError(f"clip_skip must be negative (-1 = last layer), got {layer}")
        outputs = []
        # once: the slots differ only in padding (and in their textual-inversion vectors)
        bodies = chunk_tokens(self.tokenizer, text, embedding_lookup=embeddings.lookup if embeddings else None)
        start, end = self.tokenizer.start_token_id, self.tokenizer.end_token_id
        for slot in self.slots:
            slot_layer = layer
            if -layer > slot.model.config.layers:
                # Deeper than the model: ComfyUI then uses its final output, normalised.
                slot, slot_layer = replace(slot, final_norm=True), -1
            pad = end if slot.pad_with_end else 0
            windows, extra = place_embeddings(frame_windows(bodies, start, end, pad), embeddings, slot.key,
                                              slot.model.config.width, slot.model.config.vocab_size, pad)
            empty = empty_window(self.tokenizer, pad_with_end=slot.pad_with_end)
            outputs.append(encode_windows(slot, windows, empty, slot_layer, rescale_mean, extra))
        cond = torch.cat([z for z, _ in outputs], dim=-1)
        return TextEncoding(cond=cond, pooled=outputs[-1][1])


class SD15TextEncoder(_PromptEncoder):
    """CLIP-L; last layer with the final LayerNorm (also applied after clip skip, like A1111)."""

    default_layer = -1

    def __init__(self, clip_l: CLIPTextModel, tokenizer: TokenEncoder):
        super().__init__(tokenizer, [ClipSlot(clip_l, pad_with_end=True, final_norm=True)])
        self.clip_l = clip_l


class SDXLTextEncoder(_PromptEncoder):
    """CLIP-L (768) + CLIP-G (1280) penultimate layers, no final norm -> 2048 per token;
    pooled = CLIP-G's projected end-token vector."""

    default_layer = -2

    def __init__(self, clip_l: CLIPTextModel, clip_g: CLIPTextModel, tokenizer: TokenEncoder):
        if clip_g.config.projection_dim is None:
            raise ValueError("SDXL's CLIP-G needs a text_projection")
        super().__init__(
            tokenizer,
            [ClipSlot(clip_l, pad_with_end=True, final_norm=False),
             ClipSlot(clip_g, pad_with_end=False, final_norm=False, key="clip_g")],
        )
        self.clip_l, self.clip_g = clip_l, clip_g


class SDXLRefinerTextEncoder(_PromptEncoder):
    """CLIP-G only: penultimate layer (1280 per token), pooled = projection."""

    default_layer = -2

    def __init__(self, clip_g: CLIPTextModel, tokenizer: TokenEncoder):
        if clip_g.config.projection_dim is None:
            raise ValueError("the refiner's CLIP-G needs a text_projection")
        super().__init__(tokenizer, [ClipSlot(clip_g, pad_with_end=False, final_norm=False, key="clip_g")])
        self.clip_g = clip_g


# ---------------------------------------------------------------------------------------------
# Loading from single-file checkpoints


def strip_prefix(state_dict: Mapping[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    """The entries under `prefix`, with the prefix removed."""
    n = len(prefix)
    return {k[n:]: v for k, v in state_dict.items() if k.startswith(prefix)}


def has_prefix(state_dict: Mapping[str, torch.Tensor], prefix: str) -> bool:
    return any(k.startswith(prefix) for k in state_dict)


def load_sd15_text_encoder(checkpoint: Mapping[str, torch.Tensor], tokenizer: TokenEncoder) -> SD15TextEncoder:
    """From a whole SD1.x checkpoint state dict (keys under `cond_stage_model.transformer.`)."""
    clip_l = load_clip_text_model(strip_prefix(checkpoint, SD15_CLIP_L_PREFIX), QUICK_GELU)
    return SD15TextEncoder(clip_l, tokenizer)


def load_sdxl_text_encoder(checkpoint: Mapping[str, torch.Tensor], tokenizer: TokenEncoder) -> SDXLTextEncoder:
    """From a whole SDXL checkpoint state dict: CLIP-L (Hugging Face layout) under
    `conditioner.embedders.0.transformer.`, CLIP-G (OpenCLIP layout) under `conditioner.embedders.1.model.`."""
    clip_l = load_clip_text_model(strip_prefix(checkpoint, SDXL_CLIP_L_PREFIX), QUICK_GELU)
    clip_g = load_clip_text_model(strip_prefix(checkpoint, SDXL_CLIP_G_PREFIX), GELU)
    return SDXLTextEncoder(clip_l, clip_g, tokenizer)


def load_sdxl_refiner_text_encoder(
    checkpoint: Mapping[str, torch.Tensor], tokenizer: TokenEncoder
) -> SDXLRefinerTextEncoder:
    """From a whole SDXL refiner checkpoint state dict (CLIP-G under `conditioner.embedders.0.model.`)."""
    clip_g = load_clip_text_model(strip_prefix(checkpoint, REFINER_CLIP_G_PREFIX), GELU)
    return SDXLRefinerTextEncoder(clip_g, tokenizer)


def load_text_encoder(
    checkpoint: Mapping[str, torch.Tensor], tokenizer: TokenEncoder
) -> SD15TextEncoder | SDXLTextEncoder | SDXLRefinerTextEncoder:
    """Picks the encoder by which text-encoder prefixes the checkpoint holds."""
    if has_prefix(checkpoint, SDXL_CLIP_G_PREFIX):
        return load_sdxl_text_encoder(checkpoint, tokenizer)
    if has_prefix(checkpoint, REFINER_CLIP_G_PREFIX):
        return load_sdxl_refiner_text_encoder(checkpoint, tokenizer)
    if has_prefix(checkpoint, SD15_CLIP_L_PREFIX):
        return load_sd15_text_encoder(checkpoint, tokenizer)
    raise ValueError("no CLIP text encoder found in this checkpoint (no known key prefix)")
