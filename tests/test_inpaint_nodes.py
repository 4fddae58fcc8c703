"""ComfyUI's inpaint and mask nodes on small tensors with hand-checked values, and the sampler's
known-region blend (ComfyUI's LATENT noise_mask and Fooocus's seed+1 re-noising)."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from graph import validate_prompt
from models.inpaint.sampling import InpaintBlend, fooocus_latent_mask, inpaint_concat, resize_mask
from models.loading import load_checkpoint
from models.sampling.registry import get_sampler, make_sigmas
from models.sampling.model_sampling import DiscreteModelSampling
from models.tiny import tiny_sd15_spec, write_tiny_checkpoint
from nodes import register_builtin_nodes
from nodes.inpaint import (GrowMask, ImageCompositeMasked, ImagePadForOutpaint, ImageToMask, InvertMask, MaskToImage,
                           SetLatentNoiseMask, VAEEncodeForInpaint)
from nodes.runtime import Unmanaged
from nodes.sampler_core import Guidance, sample
from nodes.sockets import ModelSocket, VaeSocket
from server.app import App
from server.config import AppConfig


def test_image_pad_for_outpaint_pads_gray_and_feathers_the_inner_edge():
    image = torch.zeros(1, 20, 20, 3)
    padded, mask = ImagePadForOutpaint().expand_image(image, left=8, top=0, right=0, bottom=0, feathering=4)
    assert padded.shape == (1, 20, 28, 3) and mask.shape == (1, 20, 28)
    assert torch.all(padded[:, :, :8] == 0.5) and torch.all(padded[:, :, 8:] == 0)
    assert torch.all(mask[:, :, :8] == 1.0)
    # distance d from the padded left edge: ((4 - d) / 4)^2 for d < 4, then 0
    torch.testing.assert_close(mask[0, 10, 8:14], torch.tensor([1.0, 0.5625, 0.25, 0.0625, 0.0, 0.0]))
    assert torch.all(mask[0, :, 12:] == 0)  # top, right, bottom are not padded: no feather there
    _, plain = ImagePadForOutpaint().expand_image(image, 0, 8, 0, 0, feathering=0)
    assert plain.shape == (1, 28, 20) and torch.all(plain[0, 8:] == 0) and torch.all(plain[0, :8] == 1)


def test_image_composite_masked_pastes_with_the_mask_and_clips():
    destination = torch.zeros(1, 8, 8, 3)
    source = torch.ones(1, 4, 4, 3)
    (out,) = ImageCompositeMasked().composite(destination, source, x=2, y=3, resize_source=False,
                                              mask=torch.full((1, 4, 4), 0.5))
    assert torch.all(out[0, 3:7, 2:6] == 0.5)
    assert out.sum() == 0.5 * 16 * 3 and torch.all(destination == 0)  # the input is not modified
    (clipped,) = ImageCompositeMasked().composite(destination, source, x=6, y=6, resize_source=False)
    assert torch.all(clipped[0, 6:, 6:] == 1) and clipped.sum() == 4 * 3
    (resized,) = ImageCompositeMasked().composite(destination, source, 0, 0, resize_source=True)
    assert torch.all(resized == 1)


def test_grow_mask_invert_and_conversions():
    mask = torch.zeros(1, 5, 5)
    mask[0, 2, 2] = 1.0
    (cross,) = GrowMask().expand_mask(mask, 1, tapered_corners=True)
    assert cross[0].tolist() == [[0] * 5, [0, 0, 1, 0, 0], [0, 1, 1, 1, 0], [0, 0, 1, 0, 0], [0] * 5]
    (square,) = GrowMask().expand_mask(mask, 1, tapered_corners=False)
    assert square[0, 1:4, 1:4].min() == 1 and square.sum() == 9
    (back,) = GrowMask().expand_mask(square, -1, tapered_corners=False)
    assert torch.equal(back, mask)
    (inverted,) = InvertMask().invert(mask)
    assert inverted.sum() == 24
    (image,) = MaskToImage().mask_to_image(mask)
    assert image.shape == (1, 5, 5, 3) and torch.equal(image[..., 1], mask)
    (channel,) = ImageToMask().image_to_mask(torch.stack([image[..., 0] * 0, image[..., 1], image[..., 2]], -1),
                                             "green")
    assert torch.equal(channel, mask)
    with pytest.raises(ValueError, match="channel: the image has no alpha channel"):
        ImageToMask().image_to_mask(image, "alpha")
    (latent,) = SetLatentNoiseMask().set_mask({"samples": torch.zeros(1, 4, 2, 2)}, torch.ones(3, 16, 16))
    assert latent["noise_mask"].shape == (3, 1, 16, 16)


@pytest.fixture(scope="module")
def tiny_sd15(tmp_path_factory):
    path = write_tiny_checkpoint(tmp_path_factory.mktemp("inpaint_nodes") / "sd15.safetensors", tiny_sd15_spec(),
                                 seed=9)
    return load_checkpoint(path)


def test_vae_encode_for_inpaint_grays_the_hole_and_grows_the_noise_mask(tiny_sd15):
    vae = VaeSocket(Unmanaged(tiny_sd15.vae), "tiny")
    pixels = torch.rand(1, 32, 32, 3, generator=torch.Generator().manual_seed(0))
    mask = torch.zeros(1, 32, 32)
    mask[0, 10:14, 20:22] = 1.0
    (latent,) = VAEEncodeForInpaint().encode(vae, pixels, mask, grow_mask_by=6)
    grown = latent["noise_mask"][0, 0]
    # a 6x6 box with padding 3: output o sees inputs o-3 .. o+2, so rows 10-2 .. 13+3, columns 20-2 .. 21+3
    expected = torch.zeros(32, 32)
    expected[8:17, 18:25] = 1.0
    assert torch.equal(grown, expected)
    gray = pixels.clone()
    gray[0, 10:14, 20:22] = 0.5
    with torch.no_grad():
        direct = tiny_sd15.vae.encode(gray.movedim(-1, 1) * 2 - 1)
    torch.testing.assert_close(latent["samples"], direct)


def test_load_image_mask_reads_the_channel_and_inverts_alpha(tmp_path):
    inputs = tmp_path / "in"
    inputs.mkdir()
    rgba = np.zeros((4, 6, 4), np.uint8)
    rgba[..., 0] = 255
    rgba[..., 3] = 255
    rgba[1, 2, 3] = 0  # one transparent pixel
    Image.fromarray(rgba, "RGBA").save(inputs / "m.png")
    store = {}

    class CaptureMasks:
        CATEGORY, RETURN_TYPES, FUNCTION, OUTPUT_NODE = "testing", (), "capture", True

        @classmethod
        def INPUT_TYPES(cls):
            return {"required": {"alpha": ("MASK",), "red": ("MASK",)}}

        def capture(self, alpha, red):
            store.update(alpha=alpha, red=red)
            return ()

    def register(registry):
        register_builtin_nodes(registry)
        registry.register_mappings({"CaptureMasks": CaptureMasks})

    app = App(AppConfig(models_dir=tmp_path / "models", output_dir=tmp_path / "out", input_dir=inputs,
                        temp_dir=tmp_path / "tmp", custom_nodes_dir=None, demo_models=False), register_nodes=register)
    prompt = {"a": {"class_type": "LoadImageMask", "inputs": {"image": "m.png", "channel": "alpha"}},
              "r": {"class_type": "LoadImageMask", "inputs": {"image": "m.png", "channel": "red"}},
              "c": {"class_type": "CaptureMasks", "inputs": {"alpha": ["a", 0], "red": ["r", 0]}}}
    result = validate_prompt(prompt, app.registry)
    outcome = app.executor.execute(prompt, "m", result.outputs, result.constants, links=result.links)
    assert outcome.status == "success", outcome.error
    assert store["alpha"].shape == (1, 4, 6) and store["alpha"].sum() == 1 and store["alpha"][0, 1, 2] == 1
    assert torch.all(store["red"] == 1)


# --- the blend inside the sampler --------------------------------------------------------------

class RecordingDenoiser:
    """x0 = 0.3 * x, remembering every input it saw."""

    def __init__(self):
        self.inputs, self.sigmas = [], []

    def __call__(self, x, sigma, **extra):
        self.inputs.append(x.clone())
        self.sigmas.append(float(torch.as_tensor(sigma).reshape(-1)[0]))
        return 0.3 * x


def _known_and_mask():
    known = torch.randn(1, 4, 6, 6, generator=torch.Generator().manual_seed(1))
    mask = torch.zeros(1, 1, 6, 6)
    mask[..., 2:5, 1:4] = 1.0
    return known, mask


def test_comfyui_blend_holds_the_known_region_at_the_current_sigma():
    known, mask = _known_and_mask()
    noise = torch.randn(1, 4, 6, 6, generator=torch.Generator().manual_seed(2))
    inner = RecordingDenoiser()
    sigmas = make_sigmas(DiscreteModelSampling(), "karras", 4, sampler_name="euler")
    x = known + noise * float(sigmas[0])
    out = get_sampler("euler").sample(InpaintBlend(inner, known, mask, noise=noise), x, sigmas, seed=0)
    outside = mask.expand_as(known) == 0
    for seen, sigma in zip(inner.inputs, inner.sigmas):
        torch.testing.assert_close(seen[outside], (known + noise * sigma)[outside])
    torch.testing.assert_close(out[outside], known[outside], rtol=0, atol=1e-5)
    assert (out[~outside] - known[~outside]).abs().max() > 0.1


def test_fooocus_blend_draws_fresh_noise_from_seed_plus_one():
    known, mask = _known_and_mask()
    inner = RecordingDenoiser()
    blend = InpaintBlend.fooocus(inner, known, mask, seed=2 ** 63 - 2)  # (seed + 1) mod (2^63 - 1) = 0
    x = torch.randn(1, 4, 6, 6)
    for sigma in (7.0, 3.0):
        blend(x, torch.tensor([sigma]))
    generator = torch.Generator().manual_seed(0)
    outside = mask.expand_as(known) == 0
    for seen, sigma in zip(inner.inputs, (7.0, 3.0)):
        expected = known + torch.randn(x.shape, generator=generator) * sigma
        torch.testing.assert_close(seen[outside], expected[outside])
        torch.testing.assert_close(seen[~outside], x[~outside])


def test_fooocus_latent_mask_marks_a_cell_when_any_pixel_is_masked():
    pixels = torch.zeros(1, 16, 24)
    pixels[0, 3, 9] = 1.0  # one pixel in cell (0, 1)
    pixels[0, 8:16, 16:24] = 1.0  # a whole cell (1, 2)
    latent = fooocus_latent_mask(pixels, 2, 3)
    assert latent[0, 0].tolist() == [[0, 1, 0], [0, 0, 1]]
    assert resize_mask(torch.ones(16, 24), (2, 4, 2, 3)).shape == (2, 4, 2, 3)
    blank = inpaint_concat((1, 4, 2, 3))
    assert torch.all(blank[:, 0] == 1) and torch.allclose(blank[0, 1:, 0, 0], torch.tensor([0.8223, -0.6876, 0.6364,
                                                                                            0.1380]))


def test_ksampler_keeps_the_latent_outside_its_noise_mask(tiny_sd15):
    model = ModelSocket(Unmanaged(tiny_sd15.unet), tiny_sd15.info, "tiny")
    generator = torch.Generator().manual_seed(4)
    tokens = torch.randn(1, 77, tiny_sd15.info.unet.context_dim, generator=generator)
    samples = torch.randn(1, 4, 8, 8, generator=generator)
    noise_mask = torch.zeros(1, 1, 64, 64)
    noise_mask[..., 16:40, 8:32] = 1.0
    out = sample(model, [[tokens, {}]], [[tokens * 0, {}]], {"samples": samples, "noise_mask": noise_mask}, seed=5,
                 steps=4, guidance=Guidance(5.0), sampler_name="euler", scheduler="karras", previews=False)
    keep = resize_mask(noise_mask, samples.shape) == 0
    torch.testing.assert_close(out["samples"][keep], samples[keep], rtol=0, atol=1e-5)
    assert (out["samples"][~keep] - samples[~keep]).abs().max() > 0.1
    plain = sample(model, [[tokens, {}]], [[tokens * 0, {}]], {"samples": samples}, seed=5, steps=4,
                   guidance=Guidance(5.0), sampler_name="euler", scheduler="karras", previews=False)
    assert (plain["samples"][keep] - samples[keep]).abs().max() > 0.1


def test_fooocus_prepare_forces_full_strength_and_field_when_outpainting():
    from nodes.fooocus.inpaint import FooocusInpaintPrepare

    image = torch.rand(1, 40, 60, 3, generator=torch.Generator().manual_seed(3))
    mask_picture = torch.zeros(1, 40, 60, 3)
    mask_picture[:, 10:20, 10:20] = 1.0
    common = dict(outpaint_left=0, outpaint_right=0, outpaint_top=0, outpaint_bottom=0, erode_or_dilate=0,
                  invert_mask=False, shape_ceil=128)
    crop_image, crop_fill, crop_mask, job, denoise = FooocusInpaintPrepare().prepare(
        image, "", respective_field=0.3, strength=0.5, mask_image=mask_picture, **common)
    assert denoise == 0.5 and torch.equal(crop_fill, crop_image)  # no fill below full strength
    assert job.crop.box.width < 60 and crop_mask.shape[1:] == crop_image.shape[1:3]
    _, fill, _, job, denoise = FooocusInpaintPrepare().prepare(image, "Right", respective_field=0.3, strength=0.5,
                                                               **common)
    assert denoise == 1.0 and job.crop.box == type(job.crop.box)(0, 40, 0, 60 + 18)  # field 1: everything
    assert job.crop.image.shape == (40, 78, 3)
    with pytest.raises(ValueError, match="^mask: nothing to inpaint"):
        FooocusInpaintPrepare().prepare(image, "", respective_field=0.3, strength=1.0, **common)
