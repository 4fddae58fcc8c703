"""The Fooocus inpaint engine files: safe loading, the patch merge and the head feature against
direct computations of the spec's formulas (§9.2, §9.3), and the UNet's input-block hook."""
from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch

from models.checkpoint import CheckpointError
from models.inpaint.engine import (
    HEAD_FILE,
    PATCH_FILES,
    HeadFeaturePatch,
    head_feature,
    load_fooocus_patch,
    load_inpaint_head,
    patch_as_lora,
    patch_file_for,
)
from models.inpaint.tiny import write_tiny_inpaint_engine
from models.loading import load_checkpoint
from models.lora_keys import checkpoint_lora_key_map
from models.lora_patch import LoraPatcher
from models.tiny import tiny_sdxl_spec, write_tiny_checkpoint


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    root = tmp_path_factory.mktemp("inpaint_engine")
    checkpoint = write_tiny_checkpoint(root / "tiny-sdxl.safetensors", tiny_sdxl_spec(), seed=3)
    files = write_tiny_inpaint_engine(root / "inpaint", checkpoint, seed=4)
    return checkpoint, files


def test_engine_versions_name_their_files():
    assert patch_file_for("v2.6") == "inpaint_v26.fooocus.patch"
    assert patch_file_for("v2.5") == "inpaint_v25.fooocus.patch"
    assert patch_file_for("v1") == "inpaint.fooocus.patch"
    assert patch_file_for("None") is None
    with pytest.raises(ValueError, match="unknown inpaint engine 'v3'.*None, v1, v2.5, v2.6"):
        patch_file_for("v3")


def test_tiny_files_are_in_the_real_formats(engine):
    checkpoint, files = engine
    assert set(files) == {HEAD_FILE, *PATCH_FILES.values()}
    raw_head = torch.load(files[HEAD_FILE], weights_only=True)
    assert list(raw_head) == ["head"] and tuple(raw_head["head"].shape) == (32, 5, 3, 3)  # tiny width 32
    raw = torch.load(files["inpaint_v26.fooocus.patch"], weights_only=True)
    key, (q, low, high) = next(iter(raw.items()))
    assert key.startswith("diffusion_model.") and q.dtype == torch.uint8 and low.ndim == 0 and high.ndim == 0
    v25 = torch.load(files["inpaint_v25.fooocus.patch"], weights_only=True)
    assert len(raw) < len(v25)  # v2.6 patches a subset, as the real file (half the size of v2.5)
    assert any(k.endswith(".bias") for k in v25)


def test_head_feature_equals_the_direct_convolution(engine):
    _, files = engine
    head = load_inpaint_head(files[HEAD_FILE])
    generator = torch.Generator().manual_seed(0)
    mask = (torch.rand(1, 1, 5, 6, generator=generator) > 0.5).float()
    latent = torch.randn(1, 4, 5, 6, generator=generator)
    ours = head_feature(head, mask, latent)

    # replicate padding by clamped indices, then the 3x3 sum, in float64
    feed = np.concatenate([mask.numpy(), latent.numpy()], axis=1)[0].astype(np.float64)
    weight = torch.load(files[HEAD_FILE], weights_only=True)["head"].double().numpy()
    height, width = feed.shape[1:]
    direct = np.zeros((weight.shape[0], height, width))
    for y in range(height):
        for x in range(width):
            rows = np.clip(np.arange(y - 1, y + 2), 0, height - 1)
            cols = np.clip(np.arange(x - 1, x + 2), 0, width - 1)
            window = feed[:, rows][:, :, cols]  # [5, 3, 3]
            direct[:, y, x] = np.einsum("oihw,ihw->o", weight, window)
    np.testing.assert_allclose(ours[0].double().numpy(), direct, rtol=1e-5, atol=1e-5)


def test_patch_merge_equals_the_formula_and_is_undone_exactly(engine):
    checkpoint, files = engine
    loaded = load_checkpoint(checkpoint)
    unet = loaded.unet
    originals = {key: value.clone() for key, value in unet.state_dict().items()}
    patcher = LoraPatcher({"unet": unet}, checkpoint_lora_key_map("sdxl", unet=unet))
    path = files["inpaint_v25.fooocus.patch"]
    patch = load_fooocus_patch(path)
    reports = patcher.apply([(patch_as_lora(patch), 1.0, 0.0)], max_rejected=12)
    assert reports[0].unmatched == () and reports[0].mismatched == ()
    raw = torch.load(path, weights_only=True)
    assert reports[0].patched_keys == len(raw) == len(originals)  # every weight and bias
    merged = unet.state_dict()
    for key, (q, low, high) in raw.items():
        ours_key = key[len("diffusion_model."):]
        expected = originals[ours_key].double() + q.double() / 255.0 * (high.double() - low.double()) + low.double()
        torch.testing.assert_close(merged[ours_key].double(), expected, rtol=0, atol=1e-6)
    patcher.restore()
    for key, value in unet.state_dict().items():
        assert torch.equal(value, originals[key]), key


def test_unsafe_or_foreign_engine_files_are_refused(tmp_path):
    class Payload:
        def __reduce__(self):
            return (print, ("pwned",))

    evil = tmp_path / "evil.fooocus.patch"
    with open(evil, "wb") as handle:
        pickle.dump({"diffusion_model.x.weight": Payload()}, handle, protocol=2)
    with pytest.raises(CheckpointError, match="evil.fooocus.patch: refused"):
        load_fooocus_patch(evil)
    wrong = tmp_path / "wrong.fooocus.patch"
    torch.save({"diffusion_model.x.weight": torch.zeros(3)}, wrong)
    with pytest.raises(CheckpointError, match="not .uint8 tensor, min, max."):
        load_fooocus_patch(wrong)
    head = tmp_path / "head.pth"
    torch.save({"head": torch.zeros(320, 4, 3, 3)}, head)
    with pytest.raises(CheckpointError, match="not a Fooocus inpaint head"):
        load_inpaint_head(head)
    with pytest.raises(CheckpointError, match="no such inpaint head file"):
        load_inpaint_head(tmp_path / "missing.pth")


def test_input_block_patch_adds_the_feature_right_after_the_first_conv(engine):
    """A spatially constant feature added after input block 0 must equal adding it to the first
    conv's bias: the hook sits exactly there, and its h is also the first skip."""
    checkpoint, _ = engine
    unet = load_checkpoint(checkpoint).unet
    generator = torch.Generator().manual_seed(1)
    x = torch.randn(2, 4, 8, 8, generator=generator)
    context = torch.randn(2, 7, unet.config.context_dim, generator=generator)
    y = torch.randn(2, unet.config.adm_in_channels, generator=generator)
    feature = torch.randn(1, unet.config.model_channels, 1, 1, generator=generator)
    seen = []
    with torch.no_grad():
        plain = unet(x, torch.tensor([10.0, 500.0]), context, y=y)
        hooked = unet(x, torch.tensor([10.0, 500.0]), context, y=y, transformer_options={
            "input_block_patch": [lambda h, i: seen.append(i) or h, HeadFeaturePatch(feature.expand(1, -1, 8, 8))]})
        conv_in = unet.input_blocks[0][0]
        conv_in.bias.add_(feature.flatten())
        by_bias = unet(x, torch.tensor([10.0, 500.0]), context, y=y)
        conv_in.bias.sub_(feature.flatten())
    assert seen == list(range(len(unet.input_blocks)))
    torch.testing.assert_close(hooked, by_bias, rtol=1e-5, atol=1e-5)
    assert (hooked - plain).abs().max() > 1e-3
