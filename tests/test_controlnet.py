"""ControlNet networks against diffusers' ControlNetModel (built by diffusers' own single-file
conversion of the same tiny file); Control-LoRA reconstruction against the format's formula;
the UNet's use of residuals; hint resizing, softness and the stop range."""
from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

from models.checkpoint import CheckpointError
from models.control_lora import build_control_lora, is_control_lora
from models.controlnet import (ControlNet, controlnet_config_for_unet, detect_controlnet_config, resize_hint,
                               scaled_residuals, softness_scales)
from models.tiny import tiny_sd15_spec, tiny_sdxl_spec
from models.tiny_controlnet import tiny_control_lora_state_dict, write_tiny_controlnet
from models.unet import UNetModel
from oracle_diffusers import diffusers_unet_config, relative_error, sdxl_adm_vector

SPECS = {
    "sd15": (tiny_sd15_spec(), (8, 12)),
    "sd15-deep": (tiny_sd15_spec(channel_mult=(1, 2, 2), num_res_blocks=2, depth_per_level=(1, 1, 0)), (16, 16)),
    "sdxl": (tiny_sdxl_spec(), (16, 8)),
    "sdxl-3": (tiny_sdxl_spec(channel_mult=(1, 2, 2), depth_per_level=(0, 1, 2), middle_depth=2), (16, 16)),
}


def diffusers_controlnet(path, unet_config):
    from diffusers import ControlNetModel
    from diffusers.loaders.single_file_utils import DIFFUSERS_TO_LDM_MAPPING, convert_controlnet_checkpoint

    config = diffusers_unet_config(unet_config)
    for key in ("_class_name", "sample_size", "out_channels", "up_block_types"):
        config.pop(key)
    model = ControlNetModel(**config, conditioning_embedding_out_channels=(16, 32, 96, 256))
    checkpoint = load_file(str(path))
    converted = convert_controlnet_checkpoint(checkpoint, dict(model.config))
    if unet_config.adm_in_channels is not None:  # the converter leaves SDXL's ADM to diffusers' table
        for theirs, ours in DIFFUSERS_TO_LDM_MAPPING["controlnet"]["addition_embed_type"].items():
            converted[theirs] = checkpoint[f"control_model.{ours}"]
    model.load_state_dict(converted, strict=True)
    return model.eval().requires_grad_(False)


def _inputs(spec, latent_hw, seed=0):
    generator = torch.Generator().manual_seed(seed)
    cfg = spec.unet
    x = torch.randn(2, 4, *latent_hw, generator=generator)
    hint = torch.rand(2, 3, latent_hw[0] * 8, latent_hw[1] * 8, generator=generator)
    timesteps = torch.tensor([17.0, 803.0])
    context = torch.randn(2, 7, cfg.context_dim, generator=generator)
    ours, theirs = {}, {}
    if cfg.adm_in_channels is not None:
        pooled = torch.randn(2, spec.clip_g.projection_dim, generator=generator)
        time_ids = torch.tensor([[1024.0, 768.0, 0.0, 16.0, 1024.0, 768.0], [512.0, 512.0, 8.0, 0.0, 512.0, 512.0]])
        ours["y"] = sdxl_adm_vector(pooled, time_ids)
        theirs["added_cond_kwargs"] = {"text_embeds": pooled, "time_ids": time_ids}
    return x, hint, timesteps, context, ours, theirs


@pytest.mark.parametrize("name", SPECS)
def test_residuals_equal_diffusers_controlnet(tmp_path, name):
    spec, latent_hw = SPECS[name]
    path = write_tiny_controlnet(tmp_path / "cn.safetensors", controlnet_config_for_unet(spec.unet), seed=3)
    state = {k[len("control_model."):]: v for k, v in load_file(str(path)).items()}
    config = detect_controlnet_config(state, path.name)
    assert config.unet.channel_mult == spec.unet.channel_mult
    ours = ControlNet.from_state_dict(state, config)
    theirs = diffusers_controlnet(path, spec.unet)
    x, hint, timesteps, context, our_kwargs, their_kwargs = _inputs(spec, latent_hw)
    inputs, middle = ours(x, hint, timesteps, context, **our_kwargs)
    down, mid = theirs(x, timesteps, context, hint, return_dict=False, **their_kwargs)
    assert len(inputs) == len(down) == len(ours.input_blocks)
    for a, b in zip(inputs, down):
        assert relative_error(a, b) < 1e-4
    assert relative_error(middle, mid) < 1e-4
    assert middle.abs().mean() > 1e-3  # random zero convs: the comparison is not of zeros


def test_unet_adds_residuals_to_skips_and_middle():
    """Residuals change the UNet output; zero residuals do not; one per input block is consumed."""
    spec = tiny_sd15_spec()
    unet = UNetModel(spec.unet).eval()
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(1, 4, 8, 8, generator=generator)
    context = torch.randn(1, 5, spec.unet.context_dim, generator=generator)
    net = ControlNet(controlnet_config_for_unet(spec.unet)).eval()
    inputs, middle = net(x, torch.rand(1, 3, 64, 64), torch.tensor([500.0]), context)
    with torch.no_grad():
        plain = unet(x, torch.tensor([500.0]), context)
        zero = unet(x, torch.tensor([500.0]), context,
                    transformer_options={"control": ([torch.zeros_like(r) for r in inputs], torch.zeros_like(middle))})
        only_middle = unet(x, torch.tensor([500.0]), context, transformer_options={"control": ((), middle)})
        first = unet(x, torch.tensor([500.0]), context,
                     transformer_options={"control": ([inputs[0]] + [None] * (len(inputs) - 1), None)})
    assert torch.equal(plain, zero)
    assert not torch.allclose(plain, only_middle)
    assert not torch.allclose(plain, first)


def test_control_lora_equals_format_formula():
    spec = tiny_sdxl_spec()
    base = UNetModel(spec.unet).state_dict()
    lora = tiny_control_lora_state_dict(spec.unet, rank=3, seed=5)
    assert is_control_lora(lora)
    built = build_control_lora(lora, base, spec.unet, "canny.safetensors").state_dict()
    checked = {"low-rank": 0, "whole": 0, "base": 0}
    for key, value in built.items():
        if f"{key}.up" in lora:  # W = W_base + up @ down, computed here directly per element shape
            up, down = lora[f"{key}.up"].double(), lora[f"{key}.down"].double()
            expected = base[key].double() + torch.einsum("or,ri->oi", up.reshape(up.shape[0], -1),
                                                         down.reshape(down.shape[0], -1)).reshape(value.shape)
            checked["low-rank"] += 1
        elif key in lora:
            expected = lora[key].double()
            checked["whole"] += 1
        else:
            expected = base[key].double()
            checked["base"] += 1
        assert torch.allclose(value.double(), expected, atol=1e-6), key
    assert checked["low-rank"] > 10 and checked["whole"] > 10


def test_control_lora_for_another_base_is_an_error():
    lora = tiny_control_lora_state_dict(tiny_sdxl_spec().unet)
    other = tiny_sdxl_spec(model_channels=64).unet
    with pytest.raises(CheckpointError, match="pyra.safetensors"):
        build_control_lora(lora, UNetModel(other).state_dict(), other, "pyra.safetensors")


def test_resize_hint_centre_crops_then_nearest_exact():
    hint = torch.arange(2 * 3 * 40 * 80, dtype=torch.float32).reshape(2, 3, 40, 80)
    out = resize_hint(hint, 32, 32)  # 2:1 -> square: the middle 40x40, then 40 -> 32 nearest-exact
    expected = torch.nn.functional.interpolate(hint[..., 20:60], size=(32, 32), mode="nearest-exact")
    assert torch.equal(out, expected)
    tall = resize_hint(hint, 16, 64)  # 2:1 -> 1:4: crop width to 10 (35..45), then resize
    assert torch.equal(tall, torch.nn.functional.interpolate(hint[..., :, 35:45], size=(64, 16), mode="nearest-exact"))
    assert resize_hint(hint, 80, 40) is hint


def test_softness_scales_per_level():
    scales = softness_scales(10, 0.25)
    assert scales == pytest.approx([1 - 0.25 * (1 - i / 9) for i in range(10)])
    assert scales[0] == pytest.approx(0.75) and scales[-1] == pytest.approx(1.0)
    inputs = [torch.ones(1, 1, 2, 2) * (i + 1) for i in range(9)]
    scaled, middle = scaled_residuals(inputs, torch.ones(1, 1, 2, 2), strength=0.5, softness=0.25)
    for i, r in enumerate(scaled):
        assert torch.allclose(r, inputs[i] * 0.5 * (1 - 0.25 * (1 - i / 9)))
    assert torch.allclose(middle, torch.full_like(middle, 0.5))


@pytest.mark.parametrize("name", ["sd15", "sdxl-3"])
def test_diffusers_layout_file_loads_to_the_same_network(tmp_path, name):
    """diffusers' own ControlNetModel state dict (its save layout) -> our loader -> the same residuals."""
    from safetensors.torch import save_file

    from nodes.controlnet import read_control_file

    spec, latent_hw = SPECS[name]
    path = write_tiny_controlnet(tmp_path / "cn.safetensors", controlnet_config_for_unet(spec.unet), seed=9)
    theirs = diffusers_controlnet(path, spec.unet)
    diffusers_file = tmp_path / "diffusion_pytorch_model.safetensors"
    save_file({k: v.contiguous() for k, v in theirs.state_dict().items()}, str(diffusers_file))
    ours = read_control_file(diffusers_file, diffusers_file.name)
    x, hint, timesteps, context, our_kwargs, _ = _inputs(spec, latent_hw)
    reference = ControlNet.from_state_dict({k[len("control_model."):]: v for k, v in load_file(str(path)).items()},
                                           detect_controlnet_config({k[len("control_model."):]: v for k, v in
                                                                     load_file(str(path)).items()}, "cn"))
    got, expected = ours(x, hint, timesteps, context, **our_kwargs), reference(x, hint, timesteps, context, **our_kwargs)
    for a, b in zip(got[0], expected[0]):
        assert torch.equal(a, b)
    assert torch.equal(got[1], expected[1])


def test_a_file_that_is_no_controlnet_is_named(tmp_path):
    from safetensors.torch import save_file

    from nodes.controlnet import read_control_file

    path = tmp_path / "mystery.safetensors"
    save_file({"model.diffusion_model.input_blocks.0.0.weight": torch.zeros(4, 4, 3, 3)}, str(path))
    with pytest.raises(CheckpointError, match="mystery.safetensors"):
        read_control_file(path, path.name)
