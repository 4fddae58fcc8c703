"""ControlNet application at sampling time (stop range, softness, chaining, one ControlNet call
per batched CFG call, Control-LoRA on the base, refiner without controls) and the nodes through
POST /prompt with the demo models (strength 0 equals no ControlNet, 0 -> 1 changes the image;
unknown file, other hint size, thresholds out of range)."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from graph import validate_prompt
from models.controlnet import ControlNet, controlnet_config_for_unet, softness_scales
from models.sampling.model_sampling import DiscreteModelSampling
from models.sampling.refiner import without_controls
from models.tiny import tiny_sd15_spec
from models.unet import UNetModel
from nodes.controlnet import ControlNetApplyAdvanced, ControlNetFile, image_to_hint
from nodes.fooocus.controlnet import FooocusControlNetApply
from nodes.runtime import Unmanaged
from nodes.sampler_core import Guidance, build_denoiser
from nodes.sockets import ModelSocket
from waiting import DEADLINE_S, until


class RecordingUNet(nn.Module):
    """The UNet, recording the control residuals each call receives."""

    def __init__(self, unet):
        super().__init__()
        self.unet, self.calls = unet, []

    def forward(self, x, timesteps, context, y=None, transformer_options=None):
        self.calls.append((float(timesteps.reshape(-1)[0]), x.shape[0], (transformer_options or {}).get("control")))
        return self.unet(x, timesteps, context, y=y, transformer_options=transformer_options)


class CountingControlNet(nn.Module):
    def __init__(self, network):
        super().__init__()
        self.network, self.batches = network, []

    def forward(self, x, hint, timesteps, context, y=None):
        self.batches.append((x.shape[0], hint.shape))
        return self.network(x, hint, timesteps, context, y)


@pytest.fixture
def tiny():
    torch.manual_seed(0)
    spec = tiny_sd15_spec()
    unet = UNetModel(spec.unet).eval()
    for p in unet.parameters():
        nn.init.normal_(p, std=0.05)
    control = ControlNet(controlnet_config_for_unet(spec.unet)).eval()
    for p in control.parameters():
        nn.init.normal_(p, std=0.05)
    info = _info(spec)
    model = ModelSocket(Unmanaged(unet), info, "tiny-sd15")
    return spec, unet, control, model


def _info(spec):
    from models.detection import detect_checkpoint
    from models.checkpoint import split_checkpoint
    from models.tiny import tiny_checkpoint_state_dict

    return detect_checkpoint(split_checkpoint(tiny_checkpoint_state_dict(spec)), "tiny-sd15")


def _conditioning(spec, seed):
    generator = torch.Generator().manual_seed(seed)
    return [[torch.randn(1, 5, spec.unet.context_dim, generator=generator), {}]]


def _denoiser(model, unet, positive, negative, cfg=5.0):
    return build_denoiser(model, unet, positive, negative, Guidance(cfg), 64, 64, DiscreteModelSampling(),
                          torch.device("cpu"), torch.float32)


def test_residuals_stop_after_the_stop_sigma_and_are_softened(tiny):
    spec, unet, control, model = tiny
    counting = CountingControlNet(control)
    handle = ControlNetFile("cn", network=Unmanaged(counting))
    hint = torch.rand(1, 64, 64, 3)
    positive, negative = FooocusControlNetApply().apply(_conditioning(spec, 1), _conditioning(spec, 2),
                                                         weight=0.7, stop=0.4, controlnet_softness=0.25,
                                                         control_net=handle, image=hint)
    recording = RecordingUNet(unet)
    denoiser = _denoiser(model, recording, positive, negative)
    sampling = DiscreteModelSampling()
    sigma_stop = sampling.percent_to_sigma(0.4)
    x = torch.randn(1, 4, 8, 8)
    sigmas = [14.0, 5.0, sigma_stop * 1.001, sigma_stop * 0.999, 0.5, 0.05]
    with torch.no_grad():
        for sigma in sigmas:
            denoiser(x, torch.tensor(sigma))
    active = [call[2] is not None for call in recording.calls]
    assert active == [sigma >= sigma_stop for sigma in sigmas] == [True, True, True, False, False, False]
    # one batched UNet call per step, and one ControlNet call on that batch of 2
    assert [call[1] for call in recording.calls] == [2] * len(sigmas)
    assert [b[0] for b in counting.batches] == [2, 2, 2]
    # the residuals are the raw ones x weight x (1 - softness (1 - i/9))-style per level
    t, _, (inputs, middle) = recording.calls[0]
    xin = sampling.calculate_input(torch.tensor([14.0, 14.0]), torch.cat([x, x]))
    context = torch.cat([positive[0][0], negative[0][0]])
    with torch.no_grad():
        raw_inputs, raw_middle = control(xin, image_to_hint(hint).expand(2, -1, -1, -1), torch.tensor([t, t]), context)
    scales = softness_scales(len(raw_inputs) + 1, 0.25)
    for i, (got, raw) in enumerate(zip(inputs, raw_inputs)):
        torch.testing.assert_close(got, raw * 0.7 * scales[i])
    torch.testing.assert_close(middle, raw_middle * 0.7)
    assert scales[0] == pytest.approx(0.75) and scales[-1] == 1.0


def test_start_percent_and_chained_controlnets_sum(tiny):
    spec, unet, control, model = tiny
    handle = ControlNetFile("cn", network=Unmanaged(control))
    hint_a, hint_b = torch.rand(1, 64, 64, 3), torch.rand(1, 32, 48, 3)  # b: another size, resized
    apply = ControlNetApplyAdvanced().apply_controlnet
    pos, neg = apply(_conditioning(spec, 1), _conditioning(spec, 2), handle, hint_a, 0.5, 0.0, 1.0)
    pos_ab, neg_ab = apply(pos, neg, handle, hint_b, 1.5, 0.5, 1.0)  # only in the second half
    pos_b, neg_b = apply(_conditioning(spec, 1), _conditioning(spec, 2), handle, hint_b, 1.5, 0.5, 1.0)
    x = torch.randn(1, 4, 8, 8)
    sampling = DiscreteModelSampling()
    early, late = sampling.percent_to_sigma(0.2), sampling.percent_to_sigma(0.8)
    results = {}
    for name, (p, n) in {"a": (pos, neg), "ab": (pos_ab, neg_ab), "b": (pos_b, neg_b)}.items():
        recording = RecordingUNet(unet)
        with torch.no_grad():
            for sigma in (early, late):
                _denoiser(model, recording, p, n)(x, torch.tensor(sigma))
        results[name] = [call[2] for call in recording.calls]
    assert results["b"][0] is None and results["b"][1] is not None  # start_percent 0.5
    for level in range(len(results["a"][1][0])):
        torch.testing.assert_close(results["ab"][1][0][level], results["a"][1][0][level] + results["b"][1][0][level])
    torch.testing.assert_close(results["ab"][0][1], results["a"][0][1])  # early: only a


def test_strength_zero_and_refiner_drop_leave_conditioning_alone(tiny):
    spec, _, control, _ = tiny
    handle = ControlNetFile("cn", network=Unmanaged(control))
    pos, neg = _conditioning(spec, 1), _conditioning(spec, 2)
    assert ControlNetApplyAdvanced().apply_controlnet(pos, neg, handle, torch.rand(1, 8, 8, 3), 0.0, 0.0, 1.0) == \
        (pos, neg)
    applied, _ = ControlNetApplyAdvanced().apply_controlnet(pos, neg, handle, torch.rand(1, 8, 8, 3), 1.0, 0.0, 1.0)
    assert "control" in applied[0][1] and "control" not in pos[0][1]
    stripped = without_controls(applied)
    assert "control" not in stripped[0][1] and torch.equal(stripped[0][0], pos[0][0])


# --- the demo models through the server -------------------------------------------------------

def controlnet_prompt(strength: float, control="tiny-sd15-controlnet.safetensors", hint="hint.png", prefix="cn"):
    return {
        "ckpt": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "tiny-sd15.safetensors"}},
        "latent": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
        "pos": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["ckpt", 1], "text": "a red apple"}},
        "neg": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["ckpt", 1], "text": "blurry"}},
        "hint": {"class_type": "LoadImage", "inputs": {"image": hint}},
        "cn": {"class_type": "ControlNetLoader", "inputs": {"control_net_name": control}},
        "apply": {"class_type": "ControlNetApplyAdvanced", "inputs": {
            "positive": ["pos", 0], "negative": ["neg", 0], "control_net": ["cn", 0], "image": ["hint", 0],
            "strength": strength, "start_percent": 0.0, "end_percent": 1.0}},
        "sample": {"class_type": "KSampler", "inputs": {
            "model": ["ckpt", 0], "seed": 5, "steps": 3, "cfg": 5.0, "sampler_name": "euler", "scheduler": "karras",
            "positive": ["apply", 0], "negative": ["apply", 1], "latent_image": ["latent", 0], "denoise": 1.0}},
        "decode": {"class_type": "VAEDecode", "inputs": {"samples": ["sample", 0], "vae": ["ckpt", 2]}},
        "save": {"class_type": "SaveImage", "inputs": {"images": ["decode", 0], "filename_prefix": prefix}},
    }


@pytest.fixture
def app(demo_app_factory):
    app = demo_app_factory(cache="lru:16")
    app.config.input_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(1)
    Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(app.config.input_dir / "hint.png")
    Image.fromarray(rng.integers(0, 256, (40, 100, 3), dtype=np.uint8)).save(app.config.input_dir / "wide.png")
    return app


async def _run(client, app, prompt):
    response = await client.post("/prompt", data=json.dumps({"prompt": prompt}))
    body = await response.json()
    if response.status != 200:
        return response.status, body
    prompt_id = body["prompt_id"]

    async def finished():
        return (await (await client.get(f"/history/{prompt_id}")).json()).get(prompt_id)

    entry = await until(finished, timeout=DEADLINE_S * 3, what="the ControlNet prompt's history entry")
    if entry["status"]["status_str"] != "success":
        return "error", entry["status"]
    saved = entry["outputs"]["save"]["images"][0]
    return 200, np.asarray(Image.open(app.config.output_dir / saved["filename"])).astype(int)


async def test_controlnet_workflow_through_post_prompt(app, aiohttp_client):
    client = await aiohttp_client(app.make_web_app())
    plain_prompt = controlnet_prompt(1.0, prefix="plain")
    plain_prompt["sample"]["inputs"].update(positive=["pos", 0], negative=["neg", 0])
    status, plain = await _run(client, app, plain_prompt)
    assert status == 200, plain
    status, zero = await _run(client, app, controlnet_prompt(0.0, prefix="zero"))
    assert status == 200, zero
    status, full = await _run(client, app, controlnet_prompt(1.0, prefix="full"))
    assert status == 200, full
    assert np.array_equal(zero, plain)
    assert np.abs(full - zero).mean() > 1.0
    status, wide = await _run(client, app, controlnet_prompt(1.0, hint="wide.png", prefix="wide"))
    assert status == 200, wide  # another size: resized, not an error
    assert wide.shape == full.shape and not np.array_equal(wide, full)

    status, error = await _run(client, app, controlnet_prompt(1.0, control="nope.safetensors"))
    assert status == 400 and "control_net_name" in json.dumps(error)


async def test_bad_control_files_and_thresholds(app, aiohttp_client):
    bad = app.config.models_dir / "controlnet" / "not-a-controlnet.safetensors"
    from safetensors.torch import save_file

    save_file({"some.weight": torch.zeros(2, 2)}, str(bad))
    try:
        client = await aiohttp_client(app.make_web_app())
        status, error = await _run(client, app, controlnet_prompt(1.0, control=bad.name))
        assert status == "error" and "not-a-controlnet.safetensors" in json.dumps(error)
    finally:
        bad.unlink()
    prompt = {"image": {"class_type": "LoadImage", "inputs": {"image": "hint.png"}},
              "canny": {"class_type": "FooocusPyraCanny", "inputs": {
                  "image": ["image", 0], "canny_low_threshold": 0, "canny_high_threshold": 300,
                  "skipping_cn_preprocessor": False}},
              "save": {"class_type": "SaveImage", "inputs": {"images": ["canny", 0], "filename_prefix": "c"}}}
    result = validate_prompt(prompt, app.registry)
    assert not result.ok
    text = json.dumps(result.node_errors)
    assert "canny_low_threshold" in text and "canny_high_threshold" in text
    status, body = await _run(client, app, prompt)
    assert status == 400 and "canny_low_threshold" in json.dumps(body)


def test_demo_control_loras_run_on_tiny_sdxl(app):
    """Fooocus's two Control-LoRA names, built on tiny-sdxl's UNet, through the Fooocus nodes."""
    for name, pre in (("control-lora-canny-rank128.safetensors", "FooocusPyraCanny"),
                      ("fooocus_xl_cpds_128.safetensors", "FooocusCPDS")):
        inputs = {"image": ["hint", 0], "skipping_cn_preprocessor": False}
        if pre == "FooocusPyraCanny":
            inputs.update(canny_low_threshold=64, canny_high_threshold=128)
        prompt = {
            "ckpt": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "tiny-sdxl.safetensors"}},
            "latent": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
            "pos": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["ckpt", 1], "text": "a red apple"}},
            "neg": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["ckpt", 1], "text": ""}},
            "hint": {"class_type": "LoadImage", "inputs": {"image": "wide.png"}},
            "pre": {"class_type": pre, "inputs": inputs},
            "cn": {"class_type": "DiffControlNetLoader", "inputs": {"model": ["ckpt", 0], "control_net_name": name}},
            "apply": {"class_type": "FooocusControlNetApply", "inputs": {
                "positive": ["pos", 0], "negative": ["neg", 0], "control_net": ["cn", 0], "image": ["pre", 0],
                "weight": 1.0, "stop": 0.5, "controlnet_softness": 0.25}},
            "sample": {"class_type": "KSampler", "inputs": {
                "model": ["ckpt", 0], "seed": 5, "steps": 2, "cfg": 4.0, "sampler_name": "euler",
                "scheduler": "karras", "positive": ["apply", 0], "negative": ["apply", 1],
                "latent_image": ["latent", 0], "denoise": 1.0}},
            "save": {"class_type": "SaveImage", "inputs": {"images": ["pre", 0], "filename_prefix": "pre"}},
        }
        prompt["decode"] = {"class_type": "VAEDecode", "inputs": {"samples": ["sample", 0], "vae": ["ckpt", 2]}}
        prompt["save2"] = {"class_type": "SaveImage", "inputs": {"images": ["decode", 0], "filename_prefix": "x"}}
        result = validate_prompt(prompt, app.registry)
        assert result.ok, result.node_errors
        outcome = app.executor.execute(prompt, f"lora-{name}", result.outputs, result.constants, links=result.links)
        assert outcome.status == "success", outcome.error


def test_fooocus_controlnet_apply_passes_through_without_hint_network_or_stop():
    positive, negative = [["p", {}]], [["n", {}]]
    apply = FooocusControlNetApply().apply
    assert apply(positive, negative, 1.0, 0.5, 0.25) == (positive, negative)
    assert apply(positive, negative, 1.0, 0.0, 0.25, control_net=object(), image=torch.zeros(1, 8, 8, 3)) == \
        (positive, negative)
