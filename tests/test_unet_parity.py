"""Our UNet, loaded from tiny single-file checkpoints, against diffusers' UNet2DConditionModel
built from the same file by diffusers' own single-file conversion."""
from __future__ import annotations

import pytest
import torch

from models.loading import load_checkpoint
from models.tiny import (
    tiny_clip_g,
    tiny_clip_l,
    tiny_sd15_spec,
    tiny_sdxl_refiner_spec,
    tiny_sdxl_spec,
    write_tiny_checkpoint,
)
from oracle_diffusers import diffusers_unet_from_single_file, relative_error, sdxl_adm_vector

G32, G96 = tiny_clip_g(32), tiny_clip_g(96)

# Three random configurations per family: widths, level counts, res blocks, depths, head splits
# (64-wide SDXL heads give 1 and 2 heads), context widths, inpaint input, odd latent sizes.
SPECS = {
    "sd15-a": (tiny_sd15_spec(), (13, 10)),
    "sd15-b-inpaint": (tiny_sd15_spec(channel_mult=(1, 2, 2), num_res_blocks=2, depth_per_level=(1, 1, 0),
                                      clip=tiny_clip_l(64), in_channels=9), (16, 16)),
    "sd15-c": (tiny_sd15_spec(model_channels=64, channel_mult=(1, 1), depth_per_level=(2, 2), middle_depth=2,
                              clip=tiny_clip_l(48)), (8, 12)),
    "sdxl-a": (tiny_sdxl_spec(), (16, 16)),
    "sdxl-b": (tiny_sdxl_spec(model_channels=64, num_res_blocks=2, depth_per_level=(0, 1), middle_depth=1,
                              clip_g=G32), (12, 8)),
    "sdxl-c": (tiny_sdxl_spec(channel_mult=(1, 2, 2), depth_per_level=(0, 1, 3), middle_depth=3,
                              clip_l=tiny_clip_l(64)), (16, 8)),
    "refiner-a": (tiny_sdxl_refiner_spec(), (16, 16)),
    "refiner-b": (tiny_sdxl_refiner_spec(model_channels=64, channel_mult=(1, 2), num_res_blocks=2,
                                         depth_per_level=(0, 1), middle_depth=1, clip_g=G32), (10, 14)),
    "refiner-c": (tiny_sdxl_refiner_spec(channel_mult=(1, 2, 2, 2), depth_per_level=(0, 1, 1, 0), middle_depth=1,
                                         clip_g=G96), (16, 24)),
}


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    return tmp_path_factory.mktemp("unet_parity")


def _inputs(spec, latent_hw, seed):
    generator = torch.Generator().manual_seed(seed)
    cfg = spec.unet
    x = torch.randn(2, cfg.in_channels, *latent_hw, generator=generator)
    timesteps = torch.tensor([17.0, 803.0])
    context = torch.randn(2, 11, cfg.context_dim, generator=generator)
    ours, theirs = {}, {}
    if cfg.adm_in_channels is not None:
        pooled = torch.randn(2, spec.clip_g.projection_dim, generator=generator)
        if spec.family == "sdxl":  # height, width, crop top, crop left, target height, target width
            time_ids = torch.tensor([[1024.0, 768.0, 0.0, 16.0, 1024.0, 768.0], [512.0, 512.0, 8.0, 0.0, 512.0, 512.0]])
        else:  # refiner: height, width, crop top, crop left, aesthetic score
            time_ids = torch.tensor([[1024.0, 1024.0, 0.0, 0.0, 6.0], [1024.0, 1024.0, 0.0, 0.0, 2.5]])
        ours["y"] = sdxl_adm_vector(pooled, time_ids)
        theirs["added_cond_kwargs"] = {"text_embeds": pooled, "time_ids": time_ids}
    return x, timesteps, context, ours, theirs


@pytest.mark.parametrize("name", list(SPECS))
def test_unet_matches_diffusers_single_file(name, workdir):
    spec, latent_hw = SPECS[name]
    path = write_tiny_checkpoint(workdir / f"{name}.safetensors", spec, seed=len(name))
    loaded = load_checkpoint(path)
    assert loaded.info.family == spec.family
    assert loaded.info.unet == spec.unet  # detected from shapes alone
    reference = diffusers_unet_from_single_file(path, spec.unet, workdir / name)

    x, timesteps, context, ours_kwargs, theirs_kwargs = _inputs(spec, latent_hw, seed=1)
    with torch.no_grad():
        ours = loaded.unet(x, timesteps, context, **ours_kwargs)
        theirs = reference(x, timesteps, context, **theirs_kwargs).sample
    assert ours.shape == (2, spec.unet.out_channels, *latent_hw)
    assert relative_error(ours, theirs) < 1e-4


def test_output_block_patch_sees_every_skip_in_order(workdir):
    spec, _ = SPECS["sdxl-a"]
    path = write_tiny_checkpoint(workdir / "patch.safetensors", spec, seed=5)
    unet = load_checkpoint(path).unet
    x, timesteps, context, kwargs, _ = _inputs(spec, (16, 16), seed=2)
    calls = []

    def record(h, skip, index):
        calls.append((index, tuple(h.shape), tuple(skip.shape)))
        return h, skip

    with torch.no_grad():
        plain = unet(x, timesteps, context, **kwargs)
        recorded = unet(x, timesteps, context, transformer_options={"output_block_patch": [record]}, **kwargs)
        scaled = unet(x, timesteps, context, **kwargs,
                      transformer_options={"output_block_patch": [lambda h, s, i: (h * 1.5 if i == 0 else h, s)]})
    torch.testing.assert_close(recorded, plain, rtol=0, atol=0)
    assert [index for index, _, _ in calls] == list(range(len(unet.output_blocks)))
    # the skip handed to block i is the matching input block's output, same size as h there
    assert all(h[2:] == s[2:] and h[0] == s[0] for _, h, s in calls)
    assert relative_error(scaled, plain) > 1e-3  # what the patch returns is what the block uses


def test_scalar_timestep_broadcasts_over_the_batch(workdir):
    spec, _ = SPECS["sd15-a"]
    path = write_tiny_checkpoint(workdir / "scalar.safetensors", spec, seed=6)
    unet = load_checkpoint(path).unet
    x, _, context, _, _ = _inputs(spec, (8, 8), seed=3)
    with torch.no_grad():
        torch.testing.assert_close(unet(x, torch.tensor(250.0), context),
                                   unet(x, torch.tensor([250.0, 250.0]), context))
