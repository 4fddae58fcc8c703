"""CLIP vision transformer (ViT-H/14, ViT-bigG/14, ViT-L/14) in the Hugging Face key layout.

`clip_vision_vit_h.safetensors` (Fooocus, ComfyUI) and ComfyUI's `clip_vision_g.safetensors` hold a
`CLIPVisionModelWithProjection` state dict: `vision_model.*` plus `visual_projection.weight`.
Attribute names equal those keys, so loading is a strict `load_state_dict`. The config is read back
from the tensor shapes; only the head count and activation are fixed per family (every real file
has 16 heads except 768-wide ViT-B with 12; OpenAI's ViT-L/14 uses quick-GELU).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
HEADS_BY_WIDTH = {768: 12, 1024: 16, 1280: 16, 1664: 16}


@dataclass(frozen=True)
class CLIPVisionConfig:
    hidden_size: int = 1280  # transformer width
    intermediate_size: int = 5120  # MLP width
    num_layers: int = 32
    num_heads: int = 16
    patch_size: int = 14
    image_size: int = 224
    projection_dim: int = 1024  # width of image_embeds
    quick_gelu: bool = False  # OpenAI ViT-L/14 uses x*sigmoid(1.702x); LAION ViT-H/G exact GELU
    layer_norm_eps: float = 1e-5

    @property
    def num_positions(self) -> int:
        return (self.image_size // self.patch_size) ** 2 + 1

    @classmethod
    def from_state_dict(cls, sd: dict[str, torch.Tensor]) -> "CLIPVisionConfig":
        prefix = "vision_model."
        patch = sd[prefix + "embeddings.patch_embedding.weight"]
        width, patch_size = patch.shape[0], patch.shape[-1]
        positions = sd[prefix + "embeddings.position_embedding.weight"].shape[0]
        grid = int(round((positions - 1) ** 0.5))
        layers = 1 + max(int(k.split(".")[3]) for k in sd if k.startswith(prefix + "encoder.layers."))
        mlp = sd[prefix + "encoder.layers.0.mlp.fc1.weight"].shape[0]
        proj = sd["visual_projection.weight"].shape[0]
        heads = HEADS_BY_WIDTH.get(width, max(1, width // 32))
        # OpenAI's ViT-L/14 (24 layers, width 1024) is the only quick-GELU family among them
        quick = width == 1024 and layers == 24
        return cls(width, mlp, layers, heads, patch_size, grid * patch_size, proj, quick)


class CLIPVisionEmbeddings(nn.Module):
    def __init__(self, c: CLIPVisionConfig):
        super().__init__()
        self.class_embedding = nn.Parameter(torch.empty(c.hidden_size))
        self.patch_embedding = nn.Conv2d(3, c.hidden_size, c.patch_size, stride=c.patch_size, bias=False)
        self.position_embedding = nn.Embedding(c.num_positions, c.hidden_size)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        patches = self.patch_embedding(pixels).flatten(2).transpose(1, 2)
        cls = self.class_embedding.to(patches.dtype).expand(patches.shape[0], 1, -1)
        return torch.cat([cls, patches], dim=1) + self.position_embedding.weight.to(patches.dtype)


class CLIPAttention(nn.Module):
    def __init__(self, c: CLIPVisionConfig):
        super().__init__()
        self.heads = c.num_heads
        self.q_proj = nn.Linear(c.hidden_size, c.hidden_size)
        self.k_proj = nn.Linear(c.hidden_size, c.hidden_size)
        self.v_proj = nn.Linear(c.hidden_size, c.hidden_size)
        self.out_proj = nn.Linear(c.hidden_size, c.hidden_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, _ = x.shape
        q, k, v = (proj(x).view(b, n, self.heads, -1).transpose(1, 2) for proj in (self.q_proj, self.k_proj,
                                                                                 self.v_proj))
        out = F.scaled_dot_product_attention(q, k, v)
        return self.out_proj(out.transpose(1, 2).reshape(b, n, -1))


class CLIPMLP(nn.Module):
    def __init__(self, c: CLIPVisionConfig):
        super().__init__()
        self.quick_gelu = c.quick_gelu
        self.fc1 = nn.Linear(c.hidden_size, c.intermediate_size)
        self.fc2 = nn.Linear(c.intermediate_size, c.hidden_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.fc1(x)
        h = h * torch.sigmoid(1.702 * h) if self.quick_gelu else F.gelu(h)
        return self.fc2(h)


class CLIPEncoderLayer(nn.Module):
    def __init__(self, c: CLIPVisionConfig):
        super().__init__()
        self.layer_norm1 = nn.LayerNorm(c.hidden_size, eps=c.layer_norm_eps)
        self.self_attn = CLIPAttention(c)
        self.layer_norm2 = nn.LayerNorm(c.hidden_size, eps=c.layer_norm_eps)
        self.mlp = CLIPMLP(c)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.self_attn(self.layer_norm1(x))
        return x + self.mlp(self.layer_norm2(x))


class CLIPEncoder(nn.Module):
    def __init__(self, c: CLIPVisionConfig):
        super().__init__()
        self.layers = nn.ModuleList(CLIPEncoderLayer(c) for _ in range(c.num_layers))


class CLIPVisionTransformer(nn.Module):
    def __init__(self, c: CLIPVisionConfig):
        super().__init__()
        self.embeddings = CLIPVisionEmbeddings(c)
        self.pre_layrnorm = nn.LayerNorm(c.hidden_size, eps=c.layer_norm_eps)  # sic: the checkpoint's key
        self.encoder = CLIPEncoder(c)
        self.post_layernorm = nn.LayerNorm(c.hidden_size, eps=c.layer_norm_eps)


@dataclass
class CLIPVisionOutput:
    """ComfyUI's CLIP_VISION_OUTPUT fields."""

    last_hidden_state: torch.Tensor  # (B, tokens, width)
    penultimate_hidden_states: torch.Tensor  # output of the second-to-last layer (IP-Adapter plus input)
    image_embeds: torch.Tensor  # (B, projection_dim): projected, post-LayerNormed class token

    def __getitem__(self, key):  # ComfyUI custom nodes index the output like a dict
        return getattr(self, key)


class CLIPVisionModelWithProjection(nn.Module):
    """forward(pixels normalised with CLIP mean/std, (B, 3, S, S)) -> CLIPVisionOutput."""

    def __init__(self, config: CLIPVisionConfig):
        super().__init__()
        self.config = config
        self.vision_model = CLIPVisionTransformer(config)
        self.visual_projection = nn.Linear(config.hidden_size, config.projection_dim, bias=False)

    @classmethod
    def from_state_dict(cls, sd: dict[str, torch.Tensor]) -> "CLIPVisionModelWithProjection":
        sd = normalise_keys(sd)
        with torch.device("meta"):
            model = cls(CLIPVisionConfig.from_state_dict(sd))
        model.load_state_dict(sd, strict=True, assign=True)
        return model.eval().requires_grad_(False)

    def forward(self, pixels: torch.Tensor) -> CLIPVisionOutput:
        vm = self.vision_model
        h = vm.pre_layrnorm(vm.embeddings(pixels.to(self.visual_projection.weight.dtype)))
        penultimate = h
        for index, layer in enumerate(vm.encoder.layers):
            h = layer(h)
            if index == len(vm.encoder.layers) - 2:
                penultimate = h
        embeds = self.visual_projection(vm.post_layernorm(h[:, 0]))
        return CLIPVisionOutput(h, penultimate, embeds)


def normalise_keys(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Drops the non-parameter `position_ids` buffer some exports carry, and transformers 5's
    unprefixed `CLIPVisionModel` layout gets its `vision_model.` prefix back."""
    out = {}
    for key, value in sd.items():
        if key.endswith("embeddings.position_ids"):
            continue
        if not key.startswith(("vision_model.", "visual_projection.")):
            key = "vision_model." + key
        out[key] = value
    if "visual_projection.weight" not in out:
        raise ValueError("not a CLIP vision file with projection: 'visual_projection.weight' is missing")
    return out


def _to_rgb_array(image) -> np.ndarray:
    """An HxWx3 uint8 array from a PIL image (alpha composited on white) or an HxWxC array (0..1 float or uint8)."""
    if isinstance(image, Image.Image):
        if image.mode in ("RGBA", "LA", "P"):
            image = image.convert("RGBA")
            white = Image.new("RGBA", image.size, (255, 255, 255, 255))
            image = Image.alpha_composite(white, image)
        return np.asarray(image.convert("RGB"))
    array = np.asarray(image)
    if array.dtype != np.uint8:
        array = np.clip(np.rint(array.astype(np.float64) * 255.0), 0, 255).astype(np.uint8)
    if array.shape[-1] == 4:  # alpha onto white
        alpha = array[..., 3:4].astype(np.float64) / 255.0
        array = np.rint(array[..., :3] * alpha + 255.0 * (1 - alpha)).astype(np.uint8)
    return array[..., :3]


def preprocess(image, size: int = 224, crop: str = "stretch") -> torch.Tensor:
    """(1, 3, size, size) CLIP-normalised pixels.

    crop "stretch": Fooocus (resize to size x size, Lanczos, no crop); "center": ComfyUI's
    CLIPVisionEncode (shortest side to `size`, bicubic, centre crop); "none": ComfyUI's stretch."""
    array = _to_rgb_array(image)
    pil = Image.fromarray(array)
    if crop == "stretch":
        pil = pil.resize((size, size), Image.LANCZOS)
    elif crop == "center":
        scale = size / min(pil.size)
        new = (max(size, round(pil.width * scale)), max(size, round(pil.height * scale)))
        pil = pil.resize(new, Image.BICUBIC)
        left, top = (pil.width - size) // 2, (pil.height - size) // 2
        pil = pil.crop((left, top, left + size, top + size))
    elif crop == "none":
        pil = pil.resize((size, size), Image.BICUBIC)
    else:
        raise ValueError(f"unknown crop {crop!r}: stretch, center or none")
    pixels = torch.from_numpy(np.asarray(pil).astype(np.float32) / 255.0).permute(2, 0, 1)
    mean = torch.tensor(CLIP_MEAN).view(3, 1, 1)
    std = torch.tensor(CLIP_STD).view(3, 1, 1)
    return ((pixels - mean) / std).unsqueeze(0)
