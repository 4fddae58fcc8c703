"""TAESD step previews: the decoder equals diffusers' AutoencoderTiny decoder (both file layouts
load), takes the UNet's latent as diffusers pipelines feed it, and a KSampler run under
--preview-method taesd previews with it when vae_approx/ holds the file, with the linear map
otherwise or when the file is broken; auto and latent2rgb use the linear map (ComfyUI's rule),
and jobs that keep their own previews (Fooocus) use TAESD whatever the flag."""
import dataclasses
import logging

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from graph import validate_prompt
from models.taesd import load_taesd_decoder, write_tiny_taesd_decoder
from nodes.previews import JOB_PREVIEWS_KEY, TAESDPreviewer, _standard_space, latent_preview
from nodes.runtime import Unmanaged
from server.app import App
from server.config import AppConfig

diffusers = pytest.importorskip("diffusers")


def diffusers_tiny(decoder) -> "diffusers.AutoencoderTiny":
    """diffusers' AutoencoderTiny (SD defaults) with our decoder's weights under its names."""
    oracle = diffusers.AutoencoderTiny()
    mapped = {f"layers.{int(key.split('.', 1)[0]) - 1}.{key.split('.', 1)[1]}": value
              for key, value in decoder.state_dict().items()}
    oracle.decoder.load_state_dict(mapped, strict=True)
    return oracle.eval()


def relative_error(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


@pytest.fixture(scope="module")
def decoder_file(tmp_path_factory):
    return write_tiny_taesd_decoder(tmp_path_factory.mktemp("taesd") / "taesdxl_decoder.safetensors", seed=1)


def test_decoder_matches_diffusers_autoencoder_tiny(decoder_file, tmp_path):
    ours = load_taesd_decoder(decoder_file)
    oracle = diffusers_tiny(ours)
    latent = torch.randn(2, 4, 6, 5, generator=torch.Generator().manual_seed(0)) * 2
    with torch.no_grad():
        expected = (oracle.decode(latent).sample + 1) / 2  # diffusers maps TAESD's [0, 1] to [-1, 1]
        got = ours(latent)
    assert got.shape == (2, 3, 48, 40)
    assert relative_error(got, expected) < 1e-5

    # the same weights from a .pth in the original layout and from diffusers' full model file
    torch.save(ours.state_dict(), tmp_path / "taesd_decoder.pth")
    save_file({k: v.contiguous() for k, v in oracle.state_dict().items()}, str(tmp_path / "tiny.safetensors"))
    for path in (tmp_path / "taesd_decoder.pth", tmp_path / "tiny.safetensors"):
        with torch.no_grad():
            assert torch.equal(load_taesd_decoder(path)(latent), got), path.name


def test_preview_decodes_the_unet_latent_like_a_diffusers_pipeline(decoder_file):
    """Pipelines decode `latents / vae.config.scaling_factor` and AutoencoderTiny's factor is 1.0:
    TAESD reads the UNet's (scaled) latent as is, and returns [0, 1] RGB."""
    ours = load_taesd_decoder(decoder_file)
    oracle = diffusers_tiny(ours)
    denoised = torch.randn(2, 4, 5, 7, generator=torch.Generator().manual_seed(2))
    previewer = TAESDPreviewer(Unmanaged(ours), lambda x: x, None, max_size=512)
    image = previewer(denoised)
    with torch.no_grad():
        rgb = oracle.decode(denoised / oracle.config.scaling_factor).sample[0]
    expected = ((rgb + 1) / 2).clamp(0, 1).mul(255).round().permute(1, 2, 0).numpy()
    assert image.size == (56, 40)  # 8x the latent, first of the batch
    assert abs(np.asarray(image).astype(int) - expected.astype(int)).max() <= 1

    # larger latents are decoded at most at the preview size (TAESD's cost grows with the pixels)
    assert TAESDPreviewer(Unmanaged(ours), lambda x: x, None, max_size=64)(torch.randn(1, 4, 32, 16)).size == (32, 64)


def test_latents_with_their_own_statistics_are_previewed_in_the_standard_space():
    from models.detection import CheckpointInfo
    from nodes.sockets import ModelSocket
    from nodes.sampler_core import latent_from_model

    info = CheckpointInfo(family="sdxl", unet=None, latent_scale_factor=0.5, text_encoders=(),
                          latents_mean=(0.1, -0.2, 0.3, 0.0), latents_std=(0.9, 1.1, 0.8, 1.2))
    model = ModelSocket(network=None, info=info, name="edm")
    denoised = torch.randn(1, 4, 3, 3)
    expected = latent_from_model(model, denoised) * 0.13025
    torch.testing.assert_close(_standard_space(info)(denoised), expected)


# --- through the sampler -------------------------------------------------------------------------

class RecordingSink:
    def __init__(self) -> None:
        self.previews = []

    def send(self, event, data) -> None:
        pass

    def send_image(self, image, *, prompt_id, node_id, full_size) -> None:
        # previews come as renderers, called only by a listener: this sink always listens
        self.previews.append(image() if callable(image) else image)


PROMPT = {
    "ckpt": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "tiny-sdxl.safetensors"}},
    "pos": {"class_type": "CLIPTextEncode", "inputs": {"text": "a lighthouse", "clip": ["ckpt", 1]}},
    "neg": {"class_type": "CLIPTextEncode", "inputs": {"text": "", "clip": ["ckpt", 1]}},
    "latent": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 48, "batch_size": 1}},
    "sample": {"class_type": "KSampler", "inputs": {"model": ["ckpt", 0], "positive": ["pos", 0],
                                                    "negative": ["neg", 0], "latent_image": ["latent", 0],
                                                    "seed": 1, "steps": 2, "cfg": 5.0, "sampler_name": "euler",
                                                    "scheduler": "karras", "denoise": 1.0}},
    "decode": {"class_type": "VAEDecode", "inputs": {"samples": ["sample", 0], "vae": ["ckpt", 2]}},
    "save": {"class_type": "PreviewImage", "inputs": {"images": ["decode", 0]}},
}


@pytest.fixture
def app_with_approx(tmp_path, demo_models_dir):
    """An App over the demo models whose vae_approx/ folder this test fills."""
    from nodes.model_services import make_model_manager

    models = tmp_path / "models"
    models.mkdir()
    for sub in demo_models_dir.iterdir():
        (models / sub.name).symlink_to(sub, target_is_directory=True)
    (models / "vae_approx").mkdir()
    config = AppConfig(models_dir=models, output_dir=tmp_path / "output", input_dir=tmp_path / "input",
                       temp_dir=tmp_path / "temp", custom_nodes_dir=None, cpu=True, preview_method="taesd")
    return App(config, model_manager=make_model_manager(config)), models / "vae_approx"


def run_previews(app, seed: int = 1, extra_data: dict | None = None, expected: int = 2) -> list:
    prompt = {**PROMPT, "sample": {**PROMPT["sample"], "inputs": {**PROMPT["sample"]["inputs"], "seed": seed}}}
    result = validate_prompt(prompt, app.registry)
    assert result.ok, result.node_errors
    sink = RecordingSink()
    outcome = app.executor.execute(prompt, "p", result.outputs, result.constants, links=result.links, sink=sink,
                                   extra_data=extra_data)
    assert outcome.status == "success", outcome.error
    assert len(sink.previews) == expected  # one per step
    return sink.previews


def test_sampler_previews_come_from_taesd_when_its_file_is_present(app_with_approx, decoder_file, caplog):
    app, approx = app_with_approx
    with caplog.at_level(logging.WARNING, logger="nodes.previews"):
        assert {image.size for image in run_previews(app)} == {(8, 6)}  # linear map: 1 pixel per latent
    assert "vae_approx/ holds no taesdxl_decoder" in caplog.text

    (approx / "taesdxl_decoder.safetensors").symlink_to(decoder_file)
    (approx / "taesd_decoder.safetensors").write_bytes(b"not a tensor file")  # SD1.x only: unused
    previews = run_previews(app, seed=2)
    assert {image.size for image in previews} == {(64, 48)}  # TAESD: 8x the latent
    cached = app.services.extras["taesd_decoders"]
    assert len(cached) == 1 and next(iter(cached.values()))[1] is not None
    first = next(iter(cached.values()))[1]
    run_previews(app, seed=3)
    assert next(iter(cached.values()))[1] is first  # loaded once per App


def test_a_broken_taesd_file_warns_and_falls_back_to_the_linear_map(app_with_approx, caplog):
    app, approx = app_with_approx
    (approx / "taesdxl_decoder.pth").write_bytes(b"broken")
    with caplog.at_level(logging.WARNING, logger="nodes.previews"):
        previews = run_previews(app)
    assert {image.size for image in previews} == {(8, 6)}
    assert "cannot use vae_approx/taesdxl_decoder.pth as a TAESD decoder" in caplog.text


def test_a_failing_decode_falls_back_for_the_rest_of_the_run(caplog):
    class Exploding(torch.nn.Conv2d):
        def forward(self, x):
            raise RuntimeError("out of memory")

    fallback_calls = []
    fallback = lambda latent: fallback_calls.append(latent) or latent_preview("sdxl", latent)  # noqa: E731
    previewer = TAESDPreviewer(Unmanaged(Exploding(4, 3, 1)), lambda x: x, fallback, max_size=512)
    with caplog.at_level(logging.WARNING, logger="nodes.previews"):
        assert previewer(torch.zeros(1, 4, 4, 4)).size == (4, 4)
        assert previewer(torch.zeros(1, 4, 4, 4)).size == (4, 4)
    assert len(fallback_calls) == 2 and caplog.text.count("TAESD preview failed") == 1


def test_preview_methods_choose_the_previewer(app_with_approx, decoder_file):
    app, approx = app_with_approx
    (approx / "taesdxl_decoder.safetensors").symlink_to(decoder_file)
    for seed, method in enumerate(("auto", "latent2rgb")):  # ComfyUI: auto is the linear map even with TAESD
        assert {i.size for i in run_previews(app, seed, {"preview_method": method})} == {(8, 6)}, method
    assert run_previews(app, 3, {"preview_method": "none"}, expected=0) == []
    assert {i.size for i in run_previews(app, 4, {"preview_method": "default"})} == {(64, 48)}  # the server's
    # a job that keeps its own previews draws them with TAESD, even on a server whose method is none
    quiet = App(dataclasses.replace(app.config, preview_method="none"), model_manager=app.services.models)
    assert run_previews(quiet, 5, expected=0) == []
    assert {i.size for i in run_previews(quiet, 6, {JOB_PREVIEWS_KEY: True})} == {(64, 48)}
