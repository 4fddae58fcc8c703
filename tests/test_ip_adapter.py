"""IP-Adapter plus: Resampler and layer order against diffusers' own IP-Adapter conversion, and
Fooocus's concatenated-token attention against a direct computation of the spec's formula."""
import math

import pytest
import torch

from models.ip_adapter import (ImagePromptPatch, Resampler, concat_image_tokens, cross_attention_locations,
                               ip_adapter_from_state_dict, load_ip_adapter, load_ip_negative)
from models.tiny import tiny_unet_config
from models.tiny_ip_adapter import tiny_ip_adapter_state_dict, write_tiny_ip_adapter, write_tiny_ip_negative
from models.unet import UNetModel
from models.unet_blocks import Attention

CFG = tiny_unet_config(channel_mult=(1, 2), depth_per_level=(1, 2), middle_depth=2, context_dim=32,
                       sdxl_style=True)


def _unet(cfg=CFG, seed=0):
    torch.manual_seed(seed)
    unet = UNetModel(cfg).eval()
    for p in unet.parameters():  # visible outputs: LDM zero-inits nothing here, but keep weights lively
        p.data.normal_(0, 0.05)
    return unet


def test_resampler_equals_diffusers_ip_adapter_plus_projection():
    diffusers_unet = pytest.importorskip("diffusers.loaders.unet")
    sd = tiny_ip_adapter_state_dict(CFG, seed=3)
    ours = ip_adapter_from_state_dict(sd).image_proj
    assert (ours.config.heads, ours.config.dim_head, ours.config.queries) == (2, 64, 4)
    oracle = diffusers_unet.UNet2DConditionLoadersMixin._convert_ip_adapter_image_proj_to_diffusers(
        None, {k: v.clone() for k, v in sd["image_proj"].items()}, low_cpu_mem_usage=False).eval()
    hidden = torch.randn(2, 257, 64, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        torch.testing.assert_close(ours(hidden), oracle(hidden), atol=1e-4, rtol=0)


def _diffusers_location(name: str, layers_per_block: int):
    parts = name.split(".")
    j = int(parts[parts.index("transformer_blocks") + 1])
    if parts[0] == "mid_block":
        return ("middle", 0, j)
    b, a = int(parts[1]), int(parts[3])
    if parts[0] == "down_blocks":
        return ("input", 1 + b * (layers_per_block + 1) + a, j)
    return ("output", b * (layers_per_block + 1) + a, j)


def test_layer_order_equals_diffusers_attention_processor_order():
    diffusers = pytest.importorskip("diffusers")
    from oracle_diffusers import diffusers_unet_config

    config = {k: v for k, v in diffusers_unet_config(CFG).items() if not k.startswith("_")}
    unet = diffusers.UNet2DConditionModel(**config)
    sd = tiny_ip_adapter_state_dict(CFG, seed=5)
    processors = unet._convert_ip_adapter_attn_to_diffusers([sd], low_cpu_mem_usage=False)
    ours = ip_adapter_from_state_dict(sd)
    index = {loc: n for n, (loc, _) in enumerate(cross_attention_locations(CFG))}
    checked = 0
    for name, processor in processors.items():
        if ".attn2." not in name:
            continue
        n = index[_diffusers_location(name, CFG.num_res_blocks[0])]
        torch.testing.assert_close(processor.to_k_ip[0].weight, ours.to_k_ip[n], atol=0, rtol=0)
        torch.testing.assert_close(processor.to_v_ip[0].weight, ours.to_v_ip[n], atol=0, rtol=0)
        checked += 1
    assert checked == len(index) == 11


def test_locations_name_every_cross_attention_of_the_unet():
    unet = UNetModel(CFG)
    named = [m.location for m in unet.modules() if isinstance(m, Attention) and m.location is not None]
    assert sorted(named) == sorted(loc for loc, _ in cross_attention_locations(CFG))
    sdxl = cross_attention_locations(__import__("models.unet", fromlist=["UNetConfig"]).UNetConfig.sdxl())
    assert len(sdxl) == 70  # Fooocus's 70 SDXL layers: input 4,5,7,8, output 0..5, middle
    assert [c for _, c in sdxl] == [640] * 4 + [1280] * 20 + [1280] * 30 + [640] * 6 + [1280] * 10
    assert sdxl[0][0] == ("input", 4, 0) and sdxl[24][0] == ("output", 0, 0) and sdxl[60][0] == ("middle", 0, 0)


def test_concatenated_attention_equals_the_formula():
    torch.manual_seed(0)
    attn = Attention(query_dim=64, context_dim=32, heads=2, dim_head=32).eval()
    x, text = torch.randn(1, 10, 64), torch.randn(1, 7, 32)
    k_ip, v_ip = torch.randn(1, 4, 64), torch.randn(1, 4, 64)
    weight = 0.8

    def patch(k, v, location, options):
        return concat_image_tokens(k, v, k_ip, v_ip, weight)

    with torch.no_grad():
        out = attn(x, text, {"attn2_kv_patch": [patch]})
        w = weight * 64 / 1280
        mean = v_ip.mean(dim=1, keepdim=True)
        k = torch.cat([attn.to_k(text), w * k_ip], 1)
        v = torch.cat([attn.to_v(text), v_ip - mean + w * mean], 1)
        q = attn.to_q(x)
        heads = []
        for h in range(2):
            s = slice(32 * h, 32 * h + 32)
            scores = q[0, :, s] @ k[0, :, s].T / math.sqrt(32)
            heads.append(torch.softmax(scores, dim=-1) @ v[0, :, s])
        expected = attn.to_out(torch.cat(heads, dim=-1)[None])
        plain = attn(x, text)
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=0)
    assert not torch.allclose(out, plain, atol=1e-3)


def _patch(weight=1.0, stop=1.0, seed=0):
    adapter = ip_adapter_from_state_dict(tiny_ip_adapter_state_dict(CFG, seed=seed))
    g = torch.Generator().manual_seed(seed + 10)
    cond, uncond = torch.randn(1, 4, 32, generator=g), torch.randn(1, 4, 32, generator=g)
    return ImagePromptPatch(adapter, cond, uncond, CFG, weight, stop), adapter, cond, uncond


def test_patch_uses_image_tokens_for_cond_rows_and_negative_tokens_for_uncond_rows():
    patch, adapter, cond, uncond = _patch(weight=1.5)
    location, channels = cross_attention_locations(CFG)[3]
    k, v = torch.randn(2, 5, channels), torch.randn(2, 5, channels)
    new_k, new_v = patch(k, v, location, {"sides": torch.tensor([0.0, 1.0]), "timesteps": torch.tensor([999.0] * 2)})
    (kc, vc), (ku, vu) = adapter.layer_kv(cond)[3], adapter.layer_kv(uncond)[3]
    ref_k0, ref_v0 = concat_image_tokens(k[:1], v[:1], kc, vc, 1.5)
    ref_k1, ref_v1 = concat_image_tokens(k[1:], v[1:], ku, vu, 1.5)
    torch.testing.assert_close(new_k, torch.cat([ref_k0, ref_k1]), atol=1e-6, rtol=0)
    torch.testing.assert_close(new_v, torch.cat([ref_v0, ref_v1]), atol=1e-6, rtol=0)


def test_stop_bounds_the_active_steps():
    patch, *_ = _patch(stop=0.5)
    assert patch.active(torch.tensor([999.0]))  # p = 0
    assert patch.active(torch.tensor([600.0]))  # p = 0.399
    assert not patch.active(torch.tensor([499.0]))  # p = 0.5005
    never, *_ = _patch(stop=0.0)
    assert not never.active(torch.tensor([999.0]))


def test_unet_effect_weight_changes_output_and_stop_zero_is_the_plain_unet():
    unet = _unet()
    x = torch.randn(2, 4, 16, 16, generator=torch.Generator().manual_seed(1))
    ctx = torch.randn(2, 7, 32, generator=torch.Generator().manual_seed(2))
    t = torch.tensor([900.0, 900.0])
    sides = torch.tensor([0.0, 1.0])
    with torch.no_grad():
        plain = unet(x, t, ctx)
        on = unet(x, t, ctx, transformer_options={"attn2_kv_patch": [_patch(1.0, 1.0)[0]], "sides": sides,
                                                   "timesteps": t})
        off = unet(x, t, ctx, transformer_options={"attn2_kv_patch": [_patch(1.0, 0.0)[0]], "sides": sides,
                                                    "timesteps": t})
        two = unet(x, t, ctx, transformer_options={"attn2_kv_patch": [_patch(1.0, 1.0)[0], _patch(1.0, 1.0, 7)[0]],
                                                    "sides": sides, "timesteps": t})
    assert (on - plain).abs().max() > 1e-4
    assert (two - on).abs().max() > 1e-4  # a second image prompt appends its own tokens
    torch.testing.assert_close(off, plain, atol=0, rtol=0)


def test_files_round_trip_and_wrong_unet_is_refused(tmp_path):
    path = write_tiny_ip_adapter(tmp_path / "ip-adapter-plus_sdxl_vit-h.bin", CFG, seed=1)
    adapter = load_ip_adapter(path)
    assert adapter.layer_widths == [c for _, c in cross_attention_locations(CFG)]
    negative = load_ip_negative(write_tiny_ip_negative(tmp_path / "fooocus_ip_negative.safetensors", CFG))
    assert negative.shape == (1, 4, 32) and negative.dtype == torch.float16
    other = tiny_unet_config(channel_mult=(1, 2), depth_per_level=(1, 1), middle_depth=1, context_dim=32,
                             sdxl_style=True)
    with pytest.raises(ValueError, match="another UNet"):
        ImagePromptPatch(adapter, torch.zeros(1, 4, 32), negative, other, 1.0, 1.0)
