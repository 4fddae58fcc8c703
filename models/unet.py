"""The one UNet for SD1.5, SDXL base and SDXL refiner, configured by a frozen UNetConfig.

Attribute names equal the LDM/SGM checkpoint keys (after `model.diffusion_model.`), so a split
checkpoint loads with a strict `load_state_dict`.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from models.embeddings import timestep_embedding
from models.unet_blocks import Downsample, ResBlock, SpatialTransformer, UNetStage, Upsample


@dataclass(frozen=True)
class UNetConfig:
    """Hyperparameters of an LDM/SGM UNet (all readable back from a checkpoint's shapes,
    except the attention head split, which the family fixes)."""

    in_channels: int = 4  # latent channels in; 9 for inpaint variants (latent + mask + masked latent)
    out_channels: int = 4
    model_channels: int = 320  # width of the first level
    channel_mult: tuple[int, ...] = (1, 2, 4, 4)  # width multiplier per level
    num_res_blocks: tuple[int, ...] = (2, 2, 2, 2)  # res blocks per level on the way down
    # transformer blocks after each down res block (sum(num_res_blocks) entries; 0 = no attention)
    transformer_depth: tuple[int, ...] = (1, 1, 1, 1, 1, 1, 0, 0)
    transformer_depth_middle: int = 1  # transformer blocks in the middle block
    # transformer blocks in each output block (sum(num_res_blocks) + levels entries)
    transformer_depth_output: tuple[int, ...] = (0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 1)
    context_dim: int = 768  # width of the text-encoder tokens (cross-attention keys/values)
    num_heads: int | None = 8  # fixed head count (SD1.x); None when num_head_channels is used
    num_head_channels: int | None = None  # fixed head width (SDXL: 64)
    adm_in_channels: int | None = None  # width of the SDXL size/pooled vector `y`; None for SD1.x
    use_linear_in_transformer: bool = False  # linear (SDXL) vs 1x1-conv (SD1.x) proj_in/proj_out

    def __post_init__(self):
        levels = len(self.channel_mult)
        if len(self.num_res_blocks) != levels:
            raise ValueError("num_res_blocks needs one entry per channel_mult level")
        if len(self.transformer_depth) != sum(self.num_res_blocks):
            raise ValueError("transformer_depth needs one entry per down res block")
        if len(self.transformer_depth_output) != sum(self.num_res_blocks) + levels:
            raise ValueError("transformer_depth_output needs one entry per output block")
        if (self.num_heads is None) == (self.num_head_channels is None):
            raise ValueError("set exactly one of num_heads and num_head_channels")

    @property
    def time_embed_dim(self) -> int:
        return self.model_channels * 4

    def heads_for(self, channels: int) -> tuple[int, int]:
        """(heads, dim_head) of attention at a width. With a fixed head width wider than the
        layer (tiny test models), one head spans the whole layer."""
        if self.num_heads is not None:
            return self.num_heads, channels // self.num_heads
        heads = max(1, channels // self.num_head_channels)
        return heads, channels // heads

    @staticmethod
    def per_level_depths(num_res_blocks: tuple[int, ...], depth_per_level: tuple[int, ...]) -> tuple[
            tuple[int, ...], tuple[int, ...]]:
        """(transformer_depth, transformer_depth_output) for a model whose depth is uniform per
        level: the output path has one block more per level than the input path."""
        down = tuple(d for n, d in zip(num_res_blocks, depth_per_level) for _ in range(n))
        up = tuple(d for n, d in reversed(list(zip(num_res_blocks, depth_per_level))) for _ in range(n + 1))
        return down, up

    @classmethod
    def sd15(cls, in_channels: int = 4) -> "UNetConfig":
        down, up = cls.per_level_depths((2, 2, 2, 2), (1, 1, 1, 0))
        return cls(in_channels=in_channels, transformer_depth=down, transformer_depth_output=up)

    @classmethod
    def sdxl(cls, in_channels: int = 4) -> "UNetConfig":
        down, up = cls.per_level_depths((2, 2, 2), (0, 2, 10))
        return cls(in_channels=in_channels, model_channels=320, channel_mult=(1, 2, 4),
                   num_res_blocks=(2, 2, 2), transformer_depth=down, transformer_depth_middle=10,
                   transformer_depth_output=up, context_dim=2048, num_heads=None,
                   num_head_channels=64, adm_in_channels=2816, use_linear_in_transformer=True)

    @classmethod
    def sdxl_refiner(cls) -> "UNetConfig":
        down, up = cls.per_level_depths((2, 2, 2, 2), (0, 4, 4, 0))
        return cls(model_channels=384, channel_mult=(1, 2, 4, 4), num_res_blocks=(2, 2, 2, 2),
                   transformer_depth=down, transformer_depth_middle=4, transformer_depth_output=up,
                   context_dim=1280, num_heads=None, num_head_channels=64, adm_in_channels=2560,
                   use_linear_in_transformer=True)


class UNetModel(nn.Module):
    """forward(x, timesteps, context, y=None, transformer_options=None) -> model output.

    x: (B, in_channels, H, W) latents; timesteps: (B,) or scalar, in 0..999 (float ok);
    context: (B, tokens, context_dim); y: (B, adm_in_channels) for SDXL.
    transformer_options["output_block_patch"]: callables (h, skip, block_index) -> (h, skip),
    applied in order before each output block concatenates its skip (FreeU).
    transformer_options["input_block_patch"]: callables (h, block_index) -> h, applied in order
    after each input block, before h is kept as a skip (the Fooocus inpaint head after block 0).
    transformer_options["attn2_kv_patch"]: callables (k, v, location, options) -> (k, v) run on
    every cross-attention's text K/V (B, tokens, C); location = ("input" | "middle" | "output",
    block index, transformer index); options is transformer_options itself (IP-Adapter).
    transformer_options["control"]: (input residuals, middle residual) from ControlNets: one
    tensor (or None) per input block, added to that block's skip where an output block takes
    it, and one added to the middle block's output.
    """

    def __init__(self, config: UNetConfig):
        super().__init__()
        self.config = config
        mc, ted = config.model_channels, config.time_embed_dim
        self.time_embed = nn.Sequential(nn.Linear(mc, ted), nn.SiLU(), nn.Linear(ted, ted))
        if config.adm_in_channels is not None:
            # SGM's "sequential" class embedding: label_emb.0.{0,2}
            self.label_emb = nn.Sequential(nn.Sequential(
                nn.Linear(config.adm_in_channels, ted), nn.SiLU(), nn.Linear(ted, ted)))

        self.input_blocks = nn.ModuleList([UNetStage([nn.Conv2d(config.in_channels, mc, 3, padding=1)])])
        skip_channels = [mc]
        channels = mc
        down_index = 0
        levels = len(config.channel_mult)
        for level, mult in enumerate(config.channel_mult):
            for _ in range(config.num_res_blocks[level]):
                layers = [ResBlock(channels, ted, mc * mult)]
                channels = mc * mult
                layers += self._attention(channels, config.transformer_depth[down_index])
                down_index += 1
                self.input_blocks.append(UNetStage(layers))
                skip_channels.append(channels)
            if level != levels - 1:
                self.input_blocks.append(UNetStage([Downsample(channels)]))
                skip_channels.append(channels)

        self.middle_block = UNetStage(
            [ResBlock(channels, ted, channels)]
            + self._attention(channels, config.transformer_depth_middle)
            + [ResBlock(channels, ted, channels)]
        )

        self.output_blocks = nn.ModuleList()
        up_index = 0
        for level, mult in reversed(list(enumerate(config.channel_mult))):
            for i in range(config.num_res_blocks[level] + 1):
                layers = [ResBlock(channels + skip_channels.pop(), ted, mc * mult)]
                channels = mc * mult
                layers += self._attention(channels, config.transformer_depth_output[up_index])
                up_index += 1
                if level and i == config.num_res_blocks[level]:
                    layers.append(Upsample(channels))
                self.output_blocks.append(UNetStage(layers))

        self.out = nn.Sequential(nn.GroupNorm(32, channels), nn.SiLU(),
                                 nn.Conv2d(channels, config.out_channels, 3, padding=1))
        self._name_cross_attention()

    def _name_cross_attention(self) -> None:
        """Tells each attn2 where it sits, so kv patches can hold per-layer weights."""
        stages = [("input", i, s) for i, s in enumerate(self.input_blocks)] + [("middle", 0, self.middle_block)] \
            + [("output", i, s) for i, s in enumerate(self.output_blocks)]
        for kind, index, stage in stages:
            for layer in stage:
                if isinstance(layer, SpatialTransformer):
                    for j, block in enumerate(layer.transformer_blocks):
                        block.attn2.location = (kind, index, j)

    def _attention(self, channels: int, depth: int) -> list[nn.Module]:
        if depth == 0:
            return []
        heads, dim_head = self.config.heads_for(channels)
        return [SpatialTransformer(channels, self.config.context_dim, heads, dim_head, depth,
                                   self.config.use_linear_in_transformer)]

    @classmethod
    def from_state_dict(cls, state_dict: dict[str, torch.Tensor], config: UNetConfig) -> "UNetModel":
        """Build on the meta device and adopt the given tensors (no copy: memory-mapped weights
        stay mapped). Strict: a missing or unexpected key raises."""
        with torch.device("meta"):
            model = cls(config)
        model.load_state_dict(state_dict, strict=True, assign=True)
        return model.eval().requires_grad_(False)

    def forward(self, x: torch.Tensor, timesteps: torch.Tensor, context: torch.Tensor,
                y: torch.Tensor | None = None, transformer_options: dict | None = None) -> torch.Tensor:
        patches = (transformer_options or {}).get("output_block_patch", ())
        timesteps = torch.as_tensor(timesteps, device=x.device).reshape(-1).expand(x.shape[0])
        emb = self.time_embed(timestep_embedding(timesteps, self.config.model_channels).to(x.dtype))
        if self.config.adm_in_channels is not None:
            emb = emb + self.label_emb(y.to(x.dtype))
        context = context.to(x.dtype)

        h = x
        skips = []
        input_patches = (transformer_options or {}).get("input_block_patch", ())
        for index, block in enumerate(self.input_blocks):
            h = block(h, emb, context, transformer_options=transformer_options)
            for patch in input_patches:
                h = patch(h, index)
            skips.append(h)
        h = self.middle_block(h, emb, context, transformer_options=transformer_options)
        control_inputs, control_middle = (transformer_options or {}).get("control") or ((), None)
        if control_middle is not None:
            h = h + control_middle
        for index, block in enumerate(self.output_blocks):
            skip = skips.pop()
            if len(skips) < len(control_inputs) and control_inputs[len(skips)] is not None:
                skip = skip + control_inputs[len(skips)]
            for patch in patches:
                h, skip = patch(h, skip, index)
            h = torch.cat([h, skip], dim=1)
            h = block(h, emb, context, skips[-1].shape[-2:] if skips else None, transformer_options)
        return self.out(h)
