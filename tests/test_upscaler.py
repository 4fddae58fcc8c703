"""Super-resolution: Fooocus' upscaler layout through spandrel (oracle: spandrel on the same
weights in its own layouts), tiled inference (oracle: one untiled call), out-of-memory halving,
clamping, file errors, the ComfyUI upscale nodes through workflows, and the demo file."""
import pickle
from pathlib import Path

import numpy as np
import pytest
import spandrel
import torch
from PIL import Image
from safetensors.torch import save_file

from graph import validate_prompt
from models.tiny_upscaler import (FOOOCUS_UPSCALER_NAME, tiny_upscaler_state_dict, write_tiny_fooocus_upscaler,
                                  write_tiny_standard_upscaler)
from models.upscaler import UpscalerError, fooocus_to_esrgan_keys, load_upscaler, tile_grid, upscale_image
from nodes.upscale import bislerp, resample
from server.app import App
from server.config import AppConfig


def random_image(batch=1, height=70, width=90, channels=3, seed=0):
    return torch.rand(batch, height, width, channels, generator=torch.Generator().manual_seed(seed))


@pytest.fixture(scope="module")
def fooocus_file(tmp_path_factory):
    return write_tiny_fooocus_upscaler(tmp_path_factory.mktemp("up") / FOOOCUS_UPSCALER_NAME, seed=3)


@pytest.fixture(scope="module")
def tiny(fooocus_file):
    return load_upscaler(fooocus_file)


# --- the file format and the conversion ------------------------------------------------------

def test_tiny_file_has_fooocus_layout_and_format(fooocus_file):
    raw = torch.load(fooocus_file, map_location="cpu", weights_only=True)
    assert type(raw) is dict and all(isinstance(value, torch.Tensor) for value in raw.values())
    assert "model.0.weight" in raw and "model.1.sub.0.residual_block_1.conv1.0.weight" in raw
    assert "model.1.sub.0.residual_block_3.conv5.0.bias" in raw and "model.10.weight" in raw  # scale 4
    assert not any("RDB" in key for key in raw)
    assert {value.dtype for value in raw.values()} == {torch.float16}
    # as in Fooocus, the file is not something spandrel detects before the keys are renamed
    with pytest.raises(spandrel.UnsupportedModelError):
        spandrel.ModelLoader().load_from_state_dict(raw)


@pytest.mark.parametrize("layout", ["realesrgan", "esrgan"])
def test_converted_fooocus_file_equals_spandrel_on_its_own_layout(fooocus_file, tiny, tmp_path, layout):
    standard = write_tiny_standard_upscaler(tmp_path / f"standard_{layout}.pth", seed=3, layout=layout)
    oracle = spandrel.ModelLoader().load_from_file(standard)  # spandrel's own reader and conversion
    assert tiny.architecture.id == oracle.architecture.id == "ESRGAN"
    assert tiny.scale == oracle.scale == 4
    ours, theirs = tiny.model.state_dict(), oracle.model.state_dict()
    assert ours.keys() == theirs.keys()
    for key in ours:
        assert torch.equal(ours[key], theirs[key]), key
    pixels = random_image(height=24, width=20).movedim(-1, 1)
    assert torch.equal(tiny(pixels), oracle(pixels))


def test_safetensors_and_wrapped_pickles_load_too(tmp_path):
    state = tiny_upscaler_state_dict(seed=5)
    save_file(state, tmp_path / "fooocus.safetensors")
    torch.save({"params_ema": state}, tmp_path / "wrapped.pth")
    reference = load_upscaler(write_tiny_fooocus_upscaler(tmp_path / "plain.bin", seed=5))
    pixels = random_image(height=16, width=16).movedim(-1, 1)
    for name in ("fooocus.safetensors", "wrapped.pth"):
        assert torch.equal(load_upscaler(tmp_path / name)(pixels), reference(pixels)), name


def test_conversion_leaves_other_layouts_alone():
    state = tiny_upscaler_state_dict(layout="realesrgan")
    assert fooocus_to_esrgan_keys(state) is state


# --- errors ------------------------------------------------------------------------------------

class _Exploit:
    def __reduce__(self):
        return (print, ("this must never run",))


def test_bad_files_raise_clear_errors_naming_the_file(tmp_path):
    cases = {
        "missing.pth": None,
        "garbage.pth": b"not a pickle at all",
        "truncated.safetensors": b"\x10\x00",
        "notes.txt": b"hello",
        "not_a_model.pth": {"weight": torch.zeros(3, 3)},
        "code.pth": _Exploit(),
    }
    for name, content in cases.items():
        path = tmp_path / name
        if isinstance(content, bytes):
            path.write_bytes(content)
        elif content is not None:
            if name == "code.pth":
                path.write_bytes(pickle.dumps(content, protocol=2))
            else:
                torch.save(content, path)
        with pytest.raises(UpscalerError) as error:
            load_upscaler(path)
        assert name in str(error.value), str(error.value)
        assert isinstance(error.value, ValueError)
    with pytest.raises(UpscalerError, match="refused"):
        load_upscaler(tmp_path / "code.pth")
    with pytest.raises(UpscalerError, match="not an upscale model"):
        load_upscaler(tmp_path / "not_a_model.pth")


# --- tiled inference ---------------------------------------------------------------------------

def test_tile_grid_covers_the_axis_with_even_tiles():
    assert tile_grid(40, 48, 32) == (40, [0])
    assert tile_grid(90, 48, 32) == (47, [0, 14, 28, 43])
    assert tile_grid(1024, 512, 32) == (363, [0, 330, 661])
    for length, tile, overlap in ((1000, 512, 32), (513, 512, 32), (97, 33, 8), (300, 64, 0)):
        size, starts = tile_grid(length, tile, overlap)
        assert size <= tile and starts[0] == 0 and starts[-1] + size == length
        assert all(size - (b - a) >= overlap for a, b in zip(starts, starts[1:]))


def test_tiled_equals_untiled(tiny):
    image = random_image(batch=2)
    untiled = upscale_image(tiny, image)  # 512-px tile: one call per image
    assert torch.equal(untiled[0:1], tiny(image[0:1].movedim(-1, 1)).movedim(1, -1))
    calls = []
    tiled = upscale_image(tiny, image, tile=48, overlap=32, min_tile=16,
                          progress=lambda done, total: calls.append((done, total)))
    assert tiled.shape == (2, 280, 360, 3)
    assert (tiled - untiled).abs().max() < 1e-3
    # 3 rows x 4 columns of tiles per image, reported one by one
    assert calls == [(done, 24) for done in range(1, 25)]
    # without overlap the seams show: the blend is what makes tiles agree
    seams = upscale_image(tiny, image, tile=48, overlap=0, min_tile=16)
    assert (seams - untiled).abs().max() > 1e-3


def test_interrupt_is_checked_between_tiles(tiny):
    class Stop(Exception):
        pass

    seen = []

    def check():
        if len(seen) == 3:
            raise Stop
        seen.append(1)

    with pytest.raises(Stop):
        upscale_image(tiny, random_image(), tile=48, overlap=32, min_tile=16, check_interrupt=check)


class _OutOfMemoryAbove(torch.nn.Module):
    """Wraps a network and fails like a full GPU on inputs with a side over `limit`."""

    def __init__(self, inner, limit):
        super().__init__()
        self.inner, self.limit, self.sizes = inner, limit, []

    def forward(self, pixels):
        self.sizes.append(tuple(pixels.shape[-2:]))
        if max(pixels.shape[-2:]) > self.limit:
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        return self.inner(pixels)


def _descriptor_around(tiny, module):
    return spandrel.ImageModelDescriptor(module, module.state_dict(), architecture=tiny.architecture, purpose="SR", tags=[],
                                         supports_half=True, supports_bfloat16=True, scale=tiny.scale,
                                         input_channels=3, output_channels=3)


def test_out_of_memory_halves_the_tile(tiny):
    image = random_image()
    untiled = upscale_image(tiny, image)
    flaky = _OutOfMemoryAbove(tiny.model, limit=40)
    result = upscale_image(_descriptor_around(tiny, flaky), image, tile=128, overlap=16, min_tile=32)
    tried = list(dict.fromkeys(max(size) for size in flaky.sizes))
    assert tried == [90, 53, 31]  # the whole 70x90 image, then tiles of at most 64, then of at most 32
    assert (result - untiled).abs().max() < 1e-3
    with pytest.raises(torch.OutOfMemoryError):
        upscale_image(_descriptor_around(tiny, _OutOfMemoryAbove(tiny.model, limit=40)), image, tile=128,
                      overlap=16, min_tile=64)


def test_output_is_clamped(tmp_path):
    state = tiny_upscaler_state_dict(seed=1)
    state["model.10.bias"] = torch.tensor([3.0, -3.0, 0.5], dtype=torch.float16)  # red above 1, green below 0
    torch.save(state, tmp_path / "bright.bin")
    bright = load_upscaler(tmp_path / "bright.bin")
    image = random_image(height=20, width=24)
    raw = bright.model(image.movedim(-1, 1)).movedim(1, -1)
    assert raw[..., 0].min() > 1 and raw[..., 1].max() < 0
    out = upscale_image(bright, image, tile=16, overlap=8, min_tile=16)
    assert out.min() >= 0 and out.max() <= 1
    assert torch.equal(out[..., 0], torch.ones_like(out[..., 0]))
    assert torch.equal(out[..., 1], torch.zeros_like(out[..., 1]))


def test_alpha_is_resized_alongside(tiny):
    image = random_image(height=12, width=10, channels=4)
    out = upscale_image(tiny, image)
    assert out.shape == (1, 48, 40, 4)
    assert torch.allclose(out[..., :3], upscale_image(tiny, image[..., :3]))
    expected = torch.nn.functional.interpolate(image[..., 3:].movedim(-1, 1), size=(48, 40), mode="bilinear")
    assert torch.allclose(out[..., 3:], expected.movedim(1, -1))


# --- resampling -----------------------------------------------------------------------------------

def test_bislerp_is_bilinear_for_parallel_vectors():
    direction = torch.tensor([0.3, -0.5, 0.2, 0.8]).reshape(1, 4, 1, 1)
    lengths = torch.rand(2, 1, 5, 7, generator=torch.Generator().manual_seed(0)) + 0.5
    latent = direction * lengths
    expected = torch.nn.functional.interpolate(latent, size=(9, 12), mode="bilinear")
    assert torch.allclose(bislerp(latent, 12, 9), expected, atol=1e-5)


def test_bislerp_keeps_unit_vectors_on_the_sphere():
    latent = torch.randn(1, 4, 6, 6, generator=torch.Generator().manual_seed(1))
    latent = latent / latent.norm(dim=1, keepdim=True)
    out = bislerp(latent, 11, 13)
    assert out.shape == (1, 4, 13, 11)
    assert torch.allclose(out.norm(dim=1), torch.ones(1, 13, 11), atol=1e-4)
    linear = torch.nn.functional.interpolate(latent, size=(13, 11), mode="bilinear")
    assert linear.norm(dim=1).min() < 0.99  # plain bilinear shrinks them: the slerp is what keeps them


def test_lanczos_is_pillows():
    array = (np.random.default_rng(0).random((9, 13, 3)) * 255).astype(np.uint8)
    pixels = torch.from_numpy(array.astype(np.float32) / 255.0).movedim(-1, 0)[None]
    ours = (resample(pixels, 29, 17, "lanczos")[0].movedim(0, -1).numpy() * 255).round().astype(np.uint8)
    np.testing.assert_array_equal(ours, np.asarray(Image.fromarray(array).resize((29, 17), Image.LANCZOS)))


# --- the nodes through workflows -----------------------------------------------------------------

class ShapeProbe:
    """Test-only output node: reports the shape of an IMAGE or LATENT and keeps the value."""
    CATEGORY = "testing"
    RETURN_TYPES = ()
    FUNCTION = "probe"
    OUTPUT_NODE = True
    seen: dict = {}

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"tag": ("STRING", {"default": ""})},
                "optional": {"image": ("IMAGE",), "latent": ("LATENT",)}}

    def probe(self, tag, image=None, latent=None):
        value = image if image is not None else latent["samples"]
        ShapeProbe.seen[tag] = value
        return {"ui": {"shape": list(value.shape)}}


@pytest.fixture
def app(tmp_path, fooocus_file):
    from nodes import register_builtin_nodes
    from nodes.model_services import make_model_manager

    models = tmp_path / "models"
    (models / "upscale_models").mkdir(parents=True)
    (models / "upscale_models" / FOOOCUS_UPSCALER_NAME).write_bytes(Path(fooocus_file).read_bytes())
    config = AppConfig(models_dir=models, output_dir=tmp_path / "output", input_dir=tmp_path / "input",
                       temp_dir=tmp_path / "temp", custom_nodes_dir=None, cpu=True)

    def register(registry):
        register_builtin_nodes(registry)
        registry.register_mappings({"ShapeProbe": ShapeProbe}, builtin=True)

    app = App(config, register_nodes=register, model_manager=make_model_manager(config))
    array = (np.random.default_rng(1).random((40, 56, 3)) * 255).astype(np.uint8)
    Image.fromarray(array).save(Path(config.input_dir) / "in.png")
    return app


class Events:
    def __init__(self):
        self.progress = []

    def send(self, event, data):
        if event == "progress":
            self.progress.append((data["node"], data["value"], data["max"]))

    def send_image(self, image, **kwargs):
        pass


def run(app, prompt, sink=None):
    result = validate_prompt(prompt, app.registry)
    assert result.ok, result.node_errors
    return app.executor.execute(prompt, "p", result.outputs, result.constants, links=result.links, sink=sink)


def probe(source, tag, kind="image"):
    return {"class_type": "ShapeProbe", "inputs": {"tag": tag, kind: source}}


def load_image(name="in.png"):
    return {"class_type": "LoadImage", "inputs": {"image": name}}


def test_upscale_model_nodes_in_a_workflow(app, fooocus_file):
    prompt = {
        "image": load_image(),
        "loader": {"class_type": "UpscaleModelLoader", "inputs": {"model_name": FOOOCUS_UPSCALER_NAME}},
        "sr": {"class_type": "ImageUpscaleWithModel", "inputs": {"upscale_model": ["loader", 0], "image": ["image", 0]}},
        "probe": probe(["sr", 0], "sr"),
        "save": {"class_type": "SaveImage", "inputs": {"images": ["sr", 0], "filename_prefix": "sr"}},
    }
    events = Events()
    outcome = run(app, prompt, sink=events)
    assert outcome.status == "success", outcome.error
    assert outcome.outputs["probe"]["shape"] == [1, 160, 224, 3]
    image = np.asarray(Image.open(Path(app.config.input_dir) / "in.png"), dtype=np.float32) / 255.0
    expected = upscale_image(load_upscaler(fooocus_file), torch.from_numpy(image)[None])
    assert torch.allclose(ShapeProbe.seen["sr"], expected, atol=1e-6)
    assert ("sr", 1, 1) in events.progress  # one tile of the 512-px grid
    saved = Image.open(Path(app.config.output_dir) / outcome.outputs["save"]["images"][0]["filename"])
    assert saved.size == (224, 160)


def test_missing_upscale_model_fails_the_node_naming_file_and_folder(app):
    prompt = {
        "image": load_image(),
        "loader": {"class_type": "UpscaleModelLoader", "inputs": {"model_name": "4x-UltraSharp.pth"}},
        "sr": {"class_type": "ImageUpscaleWithModel", "inputs": {"upscale_model": ["loader", 0], "image": ["image", 0]}},
        "probe": probe(["sr", 0], "missing"),
    }
    outcome = run(app, prompt)
    assert outcome.status == "error"
    message = outcome.error["exception_message"]
    assert "4x-UltraSharp.pth" in message and "upscale_models" in message
    assert outcome.error["node_id"] == "loader"


def test_image_scale_nodes_compute_comfyui_sizes(app):
    prompt = {"image": load_image()}  # 56 x 40
    cases = {
        # ImageScaleBy: round(side * scale_by)
        "by_lanczos": ("ImageScaleBy", {"upscale_method": "lanczos", "scale_by": 0.37}, [1, 15, 21, 3]),
        "by_bicubic": ("ImageScaleBy", {"upscale_method": "bicubic", "scale_by": 1.5}, [1, 60, 84, 3]),
        "by_nearest": ("ImageScaleBy", {"upscale_method": "nearest-exact", "scale_by": 2.0}, [1, 80, 112, 3]),
        # ImageScaleToTotalPixels: sqrt(mp * 1024^2 / (w*h)) = 2.1636 -> 121.16 x 86.54
        "mp": ("ImageScaleToTotalPixels", {"upscale_method": "area", "megapixels": 0.01}, [1, 87, 121, 3]),
        # ... and rounded to multiples of resolution_steps: 15.15 -> 15 * 8, 10.82 -> 11 * 8
        "mp_steps": ("ImageScaleToTotalPixels", {"upscale_method": "bilinear", "megapixels": 0.01,
                                                 "resolution_steps": 8}, [1, 88, 120, 3]),
    }
    for tag, (class_type, inputs, _) in cases.items():
        prompt[tag] = {"class_type": class_type, "inputs": {"image": ["image", 0], **inputs}}
        prompt[f"probe_{tag}"] = probe([tag, 0], tag)
    outcome = run(app, prompt)
    assert outcome.status == "success", outcome.error
    for tag, (_, _, shape) in cases.items():
        assert outcome.outputs[f"probe_{tag}"]["shape"] == shape, tag
    source = np.asarray(Image.open(Path(app.config.input_dir) / "in.png"))
    lanczos = np.asarray(Image.fromarray(source).resize((21, 15), Image.LANCZOS), dtype=np.float32) / 255.0
    assert torch.allclose(ShapeProbe.seen["by_lanczos"][0], torch.from_numpy(lanczos), atol=1e-6)
    nearest = ShapeProbe.seen["by_nearest"][0]
    assert torch.equal(nearest[::2, ::2], torch.from_numpy(source.astype(np.float32) / 255.0))


def test_latent_upscale_nodes_compute_comfyui_sizes(app):
    prompt = {
        "empty": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 48, "batch_size": 1}},
        # LatentUpscaleBy: round(latent side * scale_by): 8 x 6 -> 12 x 9
        "latent_by": {"class_type": "LatentUpscaleBy", "inputs": {"samples": ["empty", 0], "upscale_method": "bislerp",
                                                                  "scale_by": 1.5}},
        # LatentUpscale: pixels // 8, a zero side follows the aspect: 96 high -> 128 wide
        "latent_zero": {"class_type": "LatentUpscale", "inputs": {"samples": ["empty", 0], "upscale_method": "bilinear",
                                                                  "width": 0, "height": 96, "crop": "disabled"}},
        # ... and sides below 64 pixels are raised to 64
        "latent_up": {"class_type": "LatentUpscale", "inputs": {"samples": ["empty", 0], "upscale_method": "area",
                                                                "width": 200, "height": 16, "crop": "center"}},
    }
    for tag in ("latent_by", "latent_zero", "latent_up"):
        prompt[f"probe_{tag}"] = probe([tag, 0], tag, kind="latent")
    outcome = run(app, prompt)
    assert outcome.status == "success", outcome.error
    assert outcome.outputs["probe_latent_by"]["shape"] == [1, 4, 9, 12]
    assert outcome.outputs["probe_latent_zero"]["shape"] == [1, 4, 12, 16]
    assert outcome.outputs["probe_latent_up"]["shape"] == [1, 4, 8, 25]


def test_latent_upscale_center_crop_keeps_the_middle():
    from nodes.upscale import LatentUpscale

    latent = torch.arange(2 * 8 * 8, dtype=torch.float32).reshape(1, 2, 8, 8)
    (out,) = LatentUpscale().upscale({"samples": latent}, "nearest-exact", 64, 128, "center")
    # a 1:2 target from a square source: the middle half of the columns, stretched
    assert out["samples"].shape == (1, 2, 16, 8)
    expected = torch.nn.functional.interpolate(latent[..., :, 2:6], size=(16, 8), mode="nearest-exact")
    assert torch.equal(out["samples"], expected)


# --- the demo file -------------------------------------------------------------------------------

def test_demo_tops_up_only_missing_files(tmp_path, demo_models_dir):
    """An existing demo folder from before the upscaler existed gets it when the server starts on
    demo models; nothing already there is rewritten."""
    import shutil

    from server.demo import ensure_models_or_demo, write_demo_models

    models = tmp_path / "models"
    shutil.copytree(demo_models_dir, models)
    upscaler_path = models / "upscale_models" / FOOOCUS_UPSCALER_NAME
    upscaler_path.unlink()
    before = {path: path.read_bytes() for path in models.rglob("*") if path.is_file()}
    ensure_models_or_demo(AppConfig(models_dir=models, demo_models=True))
    upscaler = load_upscaler(upscaler_path)
    assert upscaler.scale == 4 and upscaler.architecture.id == "ESRGAN"
    assert all(path.read_bytes() == content for path, content in before.items())
    write_tiny_fooocus_upscaler(upscaler_path, seed=9)  # e.g. the user's own file under that name
    mine = upscaler_path.read_bytes()
    assert write_demo_models(models) == []
    assert upscaler_path.read_bytes() == mine
