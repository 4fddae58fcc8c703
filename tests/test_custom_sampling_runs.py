"""Custom-sampling runs on a tiny SD1.5 UNet: the guiders reduce to CFG where their rules say so,
denoised_output is the last x0 prediction, DisableNoise starts from the latent, and the model
patches (RescaleCFG, FreeU, ModelSamplingDiscrete) change what the sampler computes."""
from __future__ import annotations

import pytest
import torch

from models.loading import load_checkpoint
from models.sampling.registry import get_sampler, make_sigmas
from models.tiny import tiny_sd15_spec, write_tiny_checkpoint
from nodes.custom_sampling import NoNoise, RandomNoiseSource, sample_with_guider
from nodes.guiders import CFGGuide, DualCFGGuide, PerpNegGuide
from nodes.model_patches import FreeU, FreeU_V2, ModelSamplingDiscrete, RescaleCFG
from nodes.runtime import Unmanaged
from nodes.sampler_core import Guidance, sample
from nodes.sockets import ModelSocket


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    path = write_tiny_checkpoint(tmp_path_factory.mktemp("custom_runs") / "sd15.safetensors", tiny_sd15_spec(),
                                 seed=3)
    loaded = load_checkpoint(path)
    model = ModelSocket(Unmanaged(loaded.unet), loaded.info, "tiny")
    g = torch.Generator().manual_seed(6)
    width = loaded.info.unet.context_dim
    conds = [[[torch.randn(1, 77, width, generator=g), {}]] for _ in range(3)]
    latent = {"samples": torch.randn(1, 4, 8, 8, generator=g) * 0.5}
    return model, conds, latent


def _same(a: torch.Tensor, b: torch.Tensor) -> None:
    """Equal up to float rounding of separate vs CFG-batched UNet calls (relative to the latents' scale)."""
    assert (a - b).abs().max() <= 1e-5 * b.abs().max()


def _run(guider, latent, seed=4, sampler="euler", steps=2, noise=None):
    sigmas = make_sigmas(guider.model.model_sampling(), "karras", steps)
    source = noise or RandomNoiseSource(seed)
    return sample_with_guider(guider, get_sampler(sampler), sigmas, source.generate(latent), source.seed, latent)


def test_guiders_reduce_to_cfg(setup):
    model, (pos, mid, neg), latent = setup
    cfg, _ = _run(CFGGuide(model, pos, neg, 5.0), latent)
    direct = sample(model, pos, neg, latent, seed=4, steps=2, guidance=Guidance(5.0), sampler_name="euler",
                    scheduler="karras", previews=False)
    torch.testing.assert_close(cfg["samples"], direct["samples"], rtol=0, atol=0)
    # DualCFG with cond2 = negative: negative + cfg_conds * (cond1 - negative), whatever cfg_cond2_negative
    dual, _ = _run(DualCFGGuide(model, pos, neg, neg, 5.0, 3.0, False), latent)
    _same(dual["samples"], cfg["samples"])
    # Perp-Neg without its negative (neg_scale 0) is CFG against the empty prompt
    perp, _ = _run(PerpNegGuide(model, pos, mid, neg, 5.0, 0.0), latent)
    _same(perp["samples"], cfg["samples"])
    calls = []
    hook = model.network.module.register_forward_hook(lambda module, args, output: calls.append(args[0].shape[0]))
    try:
        full_perp, _ = _run(PerpNegGuide(model, pos, mid, neg, 5.0, 1.0), latent)
    finally:
        hook.remove()
    assert (full_perp["samples"] - cfg["samples"]).abs().max() > 1e-3
    assert calls == [3, 3]  # the three prompts share one UNet call per step (ComfyUI's calc_cond_batch)
    basic, _ = _run(CFGGuide(model, pos, None, 1.0), latent)
    one = sample(model, pos, neg, latent, seed=4, steps=2, guidance=Guidance(1.0), sampler_name="euler",
                 scheduler="karras", previews=False)
    torch.testing.assert_close(basic["samples"], one["samples"], rtol=0, atol=0)


def test_denoised_output_and_disabled_noise(setup):
    model, (pos, _, neg), latent = setup
    out, denoised = _run(CFGGuide(model, pos, neg, 3.0), latent, steps=1)
    # one euler step to sigma 0 lands on the x0 prediction itself
    torch.testing.assert_close(denoised["samples"], out["samples"], rtol=1e-5, atol=1e-5)
    # stopped above sigma 0 (SplitSigmas' high part) the output is still noisy, unlike its x0
    sigmas = make_sigmas(model.model_sampling(), "karras", 3)[:3]
    noise = RandomNoiseSource(4).generate(latent)
    out2, denoised2 = sample_with_guider(CFGGuide(model, pos, neg, 3.0), get_sampler("euler"), sigmas, noise, 4,
                                         latent)
    assert (denoised2["samples"] - out2["samples"]).abs().max() > 1e-3
    quiet, _ = _run(CFGGuide(model, pos, neg, 3.0), latent, noise=NoNoise())
    noisy, _ = _run(CFGGuide(model, pos, neg, 3.0), latent)
    assert (quiet["samples"] - noisy["samples"]).abs().max() > 1e-3
    empty, empty_denoised = sample_with_guider(CFGGuide(model, pos, neg, 3.0), get_sampler("euler"), torch.zeros(0),
                                               torch.zeros(1, 4, 8, 8), 0, latent)
    assert torch.equal(empty["samples"], latent["samples"]) and empty_denoised["samples"] is latent["samples"]


def test_model_patches_change_the_sampling(setup):
    model, (pos, _, neg), latent = setup
    plain, _ = _run(CFGGuide(model, pos, neg, 6.0), latent)
    (rescaled_model,) = RescaleCFG().patch(model, 0.7)
    rescaled, _ = _run(CFGGuide(rescaled_model, pos, neg, 6.0), latent)
    assert (rescaled["samples"] - plain["samples"]).abs().max() > 1e-3
    (no_rescale,) = RescaleCFG().patch(model, 0.0)  # multiplier 0 is plain CFG
    _same(_run(CFGGuide(no_rescale, pos, neg, 6.0), latent)[0]["samples"], plain["samples"])
    for node in (FreeU(), FreeU_V2()):
        (freeu_model,) = node.patch(model, **{k: v[1]["default"] for k, v in node.INPUT_TYPES()["required"].items()
                                              if k != "model"})
        assert len(freeu_model.output_block_patches) == 1 and model.output_block_patches == ()
        freeu, _ = _run(CFGGuide(freeu_model, pos, neg, 6.0), latent)
        assert (freeu["samples"] - plain["samples"]).abs().max() > 1e-4
    (v_model,) = ModelSamplingDiscrete().patch(model, "v_prediction", False)
    v_run, _ = _run(CFGGuide(v_model, pos, neg, 6.0), latent)
    assert (v_run["samples"] - plain["samples"]).abs().max() > 1e-3
