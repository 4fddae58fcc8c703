"""CLIP vision against transformers' CLIPVisionModelWithProjection on the same tiny weights."""
import numpy as np
import pytest
import torch
from PIL import Image

from models.clip_vision import CLIP_MEAN, CLIP_STD, CLIPVisionConfig, CLIPVisionModelWithProjection, preprocess
from models.tiny_ip_adapter import TINY_CLIP_VISION, tiny_clip_vision_state_dict, write_tiny_clip_vision


def _oracle(config: CLIPVisionConfig, sd):
    transformers = pytest.importorskip("transformers")
    hf_config = transformers.CLIPVisionConfig(
        hidden_size=config.hidden_size, intermediate_size=config.intermediate_size,
        num_hidden_layers=config.num_layers, num_attention_heads=config.num_heads, patch_size=config.patch_size,
        image_size=config.image_size, projection_dim=config.projection_dim,
        hidden_act="quick_gelu" if config.quick_gelu else "gelu", layer_norm_eps=config.layer_norm_eps)
    oracle = transformers.CLIPVisionModelWithProjection(hf_config).eval()
    missing, unexpected = oracle.load_state_dict(sd, strict=False)
    assert not unexpected and all(k.endswith("position_ids") for k in missing)
    return oracle


def test_equals_transformers_hidden_states_and_embeddings(tmp_path):
    path = write_tiny_clip_vision(tmp_path / "clip_vision_tiny.safetensors")
    from safetensors.torch import load_file

    sd = load_file(str(path))
    ours = CLIPVisionModelWithProjection.from_state_dict(sd)
    assert ours.config == TINY_CLIP_VISION
    oracle = _oracle(ours.config, sd)
    pixels = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        out = ours(pixels)
        ref = oracle(pixel_values=pixels, output_hidden_states=True)
    torch.testing.assert_close(out.last_hidden_state, ref.last_hidden_state, atol=1e-4, rtol=0)
    torch.testing.assert_close(out.penultimate_hidden_states, ref.hidden_states[-2], atol=1e-4, rtol=0)
    torch.testing.assert_close(out.image_embeds, ref.image_embeds, atol=1e-4, rtol=0)
    assert not torch.allclose(out.penultimate_hidden_states, out.last_hidden_state)


def test_quick_gelu_family_and_heads_read_from_shapes():
    config = CLIPVisionConfig(hidden_size=1024, intermediate_size=32, num_layers=24, num_heads=16, patch_size=14,
                              image_size=28, projection_dim=8, quick_gelu=True)
    sd = tiny_clip_vision_state_dict(config)
    assert CLIPVisionConfig.from_state_dict(sd) == config  # OpenAI ViT-L/14 layout
    vit_h = CLIPVisionConfig(hidden_size=1280, intermediate_size=16, num_layers=2, num_heads=16, patch_size=14,
                             image_size=28, projection_dim=8)
    assert CLIPVisionConfig.from_state_dict(tiny_clip_vision_state_dict(vit_h)) == vit_h


def test_quick_gelu_equals_transformers():
    config = CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_layers=2, num_heads=2, patch_size=14,
                              image_size=28, projection_dim=16, quick_gelu=True)
    sd = tiny_clip_vision_state_dict(config)
    ours = CLIPVisionModelWithProjection(config)
    ours.load_state_dict(sd)
    oracle = _oracle(config, sd)
    pixels = torch.randn(1, 3, 28, 28, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        torch.testing.assert_close(ours(pixels).image_embeds, oracle(pixel_values=pixels).image_embeds,
                                   atol=1e-4, rtol=0)


def test_preprocess_stretches_with_lanczos_and_clip_normalisation():
    rng = np.random.default_rng(0)
    array = rng.integers(0, 256, (40, 90, 3), dtype=np.uint8)
    pixels = preprocess(array.astype(np.float32) / 255.0)
    expected = np.asarray(Image.fromarray(array).resize((224, 224), Image.LANCZOS)).astype(np.float32) / 255.0
    expected = (expected - np.array(CLIP_MEAN, np.float32)) / np.array(CLIP_STD, np.float32)
    assert pixels.shape == (1, 3, 224, 224)
    np.testing.assert_allclose(pixels[0].permute(1, 2, 0).numpy(), expected, atol=1e-5)


def test_preprocess_alpha_goes_to_white_and_center_crop_is_square():
    rgba = np.zeros((10, 20, 4), dtype=np.uint8)  # fully transparent black
    pixels = preprocess(rgba, size=8)
    white = (1.0 - np.array(CLIP_MEAN)) / np.array(CLIP_STD)
    np.testing.assert_allclose(pixels[0, :, 0, 0].numpy(), white, atol=1e-5)
    left_red = np.zeros((10, 30, 3), dtype=np.uint8)
    left_red[:, :10, 0] = 255
    centre = preprocess(left_red, size=10, crop="center")  # the red third is cropped away
    stretched = preprocess(left_red, size=10, crop="none")
    assert centre[0, 0].max() < stretched[0, 0].max()


def test_unclip_noise_schedule_equals_diffusers_squaredcos_cap_v2():
    diffusers = pytest.importorskip("diffusers")
    from models.unclip import cosine_alphas_cumprod

    oracle = diffusers.DDPMScheduler(num_train_timesteps=1000, beta_schedule="squaredcos_cap_v2").alphas_cumprod
    torch.testing.assert_close(cosine_alphas_cumprod().float(), oracle.float(), atol=1e-6, rtol=0)


def test_unclip_conditioning_puts_scaled_image_embeds_into_the_sdxl_pooled_vector():
    from types import SimpleNamespace

    from models.clip_vision import CLIPVisionOutput
    from models.unclip import cosine_alphas_cumprod
    from nodes.clip_vision import unCLIPConditioning
    from nodes.sampler_core import conditioning_kwargs

    embeds = torch.randn(1, 1280, generator=torch.Generator().manual_seed(0))
    output = CLIPVisionOutput(torch.zeros(1, 2, 8), torch.zeros(1, 2, 8), embeds)
    base = [[torch.zeros(1, 77, 2048), {"pooled_output": torch.ones(1, 1280)}]]
    (cond,) = unCLIPConditioning().apply_adm(base, output, 0.7, 0.5)
    assert "unclip_conditioning" not in base[0][1]  # the input conditioning is left alone
    model = SimpleNamespace(family="sdxl", info=SimpleNamespace(is_inpaint=False))
    pooled = conditioning_kwargs(model, cond, 64, 64)["y"][:, :1280]
    level = round(999 * 0.5)
    ac = cosine_alphas_cumprod()[level].item()
    noise = torch.randn(1, 1280, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(pooled, 0.7 * (embeds * ac ** 0.5 + noise * (1 - ac) ** 0.5), atol=1e-5, rtol=0)
    plain = conditioning_kwargs(model, base, 64, 64)["y"][:, :1280]
    torch.testing.assert_close(plain, torch.ones(1, 1280))
    (two,) = unCLIPConditioning().apply_adm(cond, output, 1.0, 0.0)
    assert len(two[0][1]["unclip_conditioning"]) == 2
