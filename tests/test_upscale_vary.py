"""Upscale or Vary (issue 9): size rules, the image-to-image schedule, the planner's choices, and
the v1/v2 routes end to end over the demo models (tiny SDXL + tiny Fooocus-layout upscaler).

Diffusion at Fooocus' sizes (>= shape ceil 1024) costs seconds per job on a CPU even with tiny
networks, so the end-to-end jobs run 1 step, and the document's examples, sent as written, go to a
server started with `--preset lightning` (4 steps, CFG 1); the size rules are also checked below
the network level.
"""
import asyncio
import io
import json
import struct
import zlib

import numpy as np
import pytest
import torch
from aiohttp import web
from PIL import Image

from models.image_sizes import shape_ceil, size_after_shape_ceil, upscale_target, vary_shape_ceil
from models.sampling.model_sampling import DiscreteModelSampling
from models.sampling.registry import make_sigmas
from models.upscaler import load_upscaler, upscale_image
from nodes.fooocus.image_size import FooocusImageShapeCeil, FooocusUpscaleResize, lanczos
from nodes.images import pil_to_tensor, tensor_to_pil
from server.app import App
from server.config import AppConfig
from server.fooocus.requests import UpscaleVaryRequestV2
from server.fooocus.setup import attach_fooocus_api
from server.fooocus.validation import validate_request
from server.serve import make_model_manager

from fooocus_client import b64, start_fooocus_server, wait_for_job

V1 = "/v1/generation/image-upscale-vary"
V2 = "/v2/generation/image-upscale-vary"
UPSCALER = "upscale_models/fooocus_upscaler_s409985e5.bin"
FAST_STEPS = {"overwrite_step": 1}


# ----------------------------------------------------------------------------- helpers

def png_bytes(width: int, height: int, seed: int = 0, mode: str = "RGB") -> bytes:
    rng = np.random.default_rng(seed)
    channels = {"RGB": 3, "RGBA": 4}[mode]
    array = rng.integers(0, 256, (height, width, channels), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(array, mode).save(buffer, format="PNG")
    return buffer.getvalue()


def jpeg_bytes(width: int, height: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), (120, 90, 40)).save(buffer, format="JPEG")
    return buffer.getvalue()


def make_app(demo_models_dir, tmp_path, **overrides):
    config = AppConfig(models_dir=demo_models_dir, output_dir=tmp_path / "output", input_dir=tmp_path / "input",
                       temp_dir=tmp_path / "temp", custom_nodes_dir=None, cpu=True, **overrides)
    app = App(config, model_manager=make_model_manager(config))
    return app, attach_fooocus_api(app)


@pytest.fixture
async def server(aiohttp_client, demo_app_factory):
    async def start(**overrides):
        return await start_fooocus_server(aiohttp_client, demo_app_factory, **overrides)
    return start


async def post_json(client, path, body):
    """As the document's v2 example: JSON text with a Content-Type header."""
    return await client.post(path, data=json.dumps(body), headers={"Content-Type": "application/json"})


async def image_of(client, item: dict) -> Image.Image:
    assert item["finish_reason"] == "SUCCESS", item
    response = await client.get("/files/" + item["url"].split("/files/", 1)[1])
    assert response.status == 200
    return Image.open(io.BytesIO(await response.read())).convert("RGB")


def plan(api, app, body: dict, width: int, height: int):
    """What a v2 request with a width x height input would run, planned as the route plans it."""
    name = api.jobs.planner.by_type["Image Upscale or Variation"].inputs.save(
        Image.new("RGB", (width, height)), "input_image")
    parsed = validate_request(UpscaleVaryRequestV2, {**body, "input_image": name}, api.routes.vocabulary())
    params = api.routes.request_params(parsed, exclude=("image_prompts",))
    return api.jobs.planner("Image Upscale or Variation", params, "job-under-test")


def classes(job_plan, run: int = 0) -> set[str]:
    return {node["class_type"] for node in job_plan.runs[run].prompt.values()}


def node_inputs(job_plan, node: str, run: int = 0) -> dict:
    return job_plan.runs[run].prompt[node]["inputs"]


# ----------------------------------------------------------------------------- size rules

@pytest.mark.parametrize("height,width,expected", [(512, 512, 512), (1024, 1024, 1024), (896, 1152, 1024),
                                                   (100, 100, 128), (1000, 1000, 1024), (1025, 1025, 1088)])
def test_shape_ceil(height, width, expected):
    assert shape_ceil(height, width) == expected


def test_set_shape_ceil_sizes_are_multiples_of_64_at_the_target():
    for height, width in [(64, 96), (300, 200), (512, 512), (3000, 1000), (700, 1500)]:
        h, w = size_after_shape_ceil(height, width, 1024)
        assert h % 64 == 0 and w % 64 == 0
        assert shape_ceil(h, w) == 1024
    # already at the target: unchanged, even when not on the 64 grid
    assert size_after_shape_ceil(1000, 1000, 1024) == (1000, 1000)


@pytest.mark.parametrize("height,width,ceil", [(64, 96, 1024), (1000, 1000, 1024), (1200, 1700, 1472),
                                               (3000, 3000, 2048)])
def test_vary_clamps_the_shape_ceil_to_1024_2048(height, width, ceil):
    assert vary_shape_ceil(height, width) == ceil


@pytest.mark.parametrize("width,height,factor,fast,size,direct", [
    (640, 512, 2.0, True, (1280, 1024), True),      # doubled shape ceil 1152 >= 1024: exactly 2x
    (512, 512, 2.0, False, (1024, 1024), False),    # exactly at 1024
    (496, 496, 2.0, False, (992, 992), False),      # 992 px has shape ceil 1024: exactly 2x too
    (300, 200, 2.0, True, (1200, 800), True),       # shape ceil 512 < 1024: the 4x image at 1024
    (200, 100, 2.0, True, (1408, 704), True),
    (400, 300, 3.0, False, (1200, 900), False),     # Custom 3.0
    (600, 400, 1.5, False, (1216, 832), False),     # 1.5x: shape ceil 768 < 1024 -> to 1024
    (1000, 1000, 1.5, False, (1500, 1500), False),
    (1400, 1400, 2.0, False, (2800, 2800), True),   # shape ceil 2816 > 2800: no diffusion
    (1350, 1350, 2.0, False, (2700, 2700), False),  # shape ceil 2752 <= 2800: diffusion
    (576, 576, 5.0, False, (2880, 2880), True),
])
def test_upscale_target(width, height, factor, fast, size, direct):
    target = upscale_target(width, height, factor, fast=fast)
    assert target.size == size
    assert target.direct_return == direct
    assert (target.shape_ceil == 1024) == (shape_ceil(height * factor, width * factor) < 1024)


def test_upscale_resize_node_follows_the_rule_from_the_real_input_size():
    original = torch.rand(1, 100, 200, 3)
    exact = FooocusUpscaleResize().resize(torch.rand(1, 400, 800, 3), torch.rand(1, 512, 640, 3), 2.0)[0]
    assert exact.shape[1:3] == (1024, 1280)
    small = FooocusUpscaleResize().resize(torch.rand(1, 400, 800, 3), original, 2.0)[0]
    assert small.shape[1:3] == (704, 1408)  # from the 4x image (400 x 800) to shape ceil 1024
    custom = FooocusUpscaleResize().resize(torch.rand(1, 1200, 1600, 3), torch.rand(1, 300, 400, 3), 3.0)[0]
    assert custom.shape[1:3] == (900, 1200)


def test_shape_ceil_node_resamples_with_lanczos_step_by_step():
    image = pil_to_tensor(Image.open(io.BytesIO(png_bytes(96, 64))))
    out = FooocusImageShapeCeil().resize(image[None], 1024)[0][0]
    expected = tensor_to_pil(image)
    for size in [(768, 512), (1216, 832)]:
        expected = expected.resize(size, Image.LANCZOS)
    assert out.shape[:2] == (832, 1216)
    assert torch.equal(out, pil_to_tensor(expected))
    assert torch.equal(lanczos(image, 96, 64), image)  # same size: untouched


# ----------------------------------------------------------------------------- schedule

@pytest.mark.parametrize("steps,denoise", [(18, 0.382), (30, 0.5), (30, 0.85), (4, 0.382)])
def test_partial_denoise_schedule_is_comfyui_rule(steps, denoise):
    """ComfyUI/Fooocus: karras over int(steps / denoise) steps, keep the last steps + 1 sigmas."""
    sampling = DiscreteModelSampling()
    sigmas = make_sigmas(sampling, "karras", steps, denoise)
    total = int(steps / denoise)
    rho, smin, smax = 7.0, float(sampling.sigma_min), float(sampling.sigma_max)
    ramp = np.linspace(0, 1, total)
    full = (smax ** (1 / rho) + ramp * (smin ** (1 / rho) - smax ** (1 / rho))) ** rho
    expected = np.append(full, 0.0)[-(steps + 1):]
    assert len(sigmas) == steps + 1
    np.testing.assert_allclose(sigmas.numpy(), expected, rtol=1e-5, atol=1e-6)


# ----------------------------------------------------------------------------- planner

async def test_planner_chooses_workflow_steps_and_strength(server):
    client, app, api = await server()
    vary = plan(api, app, {"uov_method": "Vary (Subtle)"}, 96, 64)
    assert "FooocusImageShapeCeil" in classes(vary) and "ImageUpscaleWithModel" not in classes(vary)
    assert node_inputs(vary, "sampler")["denoise"] == 0.5 and node_inputs(vary, "sampler")["steps"] == 30
    assert node_inputs(vary, "resize")["shape_ceil"] == 1024
    strong = plan(api, app, {"uov_method": "Vary (Strong)", "performance_selection": "Quality"}, 96, 64)
    assert node_inputs(strong, "sampler")["denoise"] == 0.85 and node_inputs(strong, "sampler")["steps"] == 60
    forced = plan(api, app, {"uov_method": "Vary (Strong)",
                             "advanced_params": {"overwrite_vary_strength": 0.3}}, 96, 64)
    assert node_inputs(forced, "sampler")["denoise"] == 0.3

    upscale = plan(api, app, {"uov_method": "Upscale (2x)"}, 320, 256)
    assert {"ImageUpscaleWithModel", "VAEEncodeTiled", "VAEDecodeTiled"} <= classes(upscale)
    assert node_inputs(upscale, "sampler")["denoise"] == 0.382
    assert node_inputs(upscale, "sampler")["steps"] == 18  # Speed's upscale steps
    assert node_inputs(upscale, "upscaler")["model_name"] == "fooocus_upscaler_s409985e5.bin"
    quality = plan(api, app, {"uov_method": "Upscale (1.5x)", "performance_selection": "Quality",
                              "advanced_params": {"overwrite_upscale_strength": 0.6}}, 320, 256)
    assert node_inputs(quality, "sampler")["steps"] == 36 and node_inputs(quality, "sampler")["denoise"] == 0.6
    assert node_inputs(quality, "resize")["factor"] == 1.5
    custom = plan(api, app, {"uov_method": "Upscale (Custom)", "upscale_value": 3.0}, 400, 300)
    assert node_inputs(custom, "resize")["factor"] == 3.0

    fast = plan(api, app, {"uov_method": "Upscale (Fast 2x)", "image_number": 3}, 64, 64)
    assert "FooocusKSampler" not in classes(fast) and "CLIPTextEncode" not in classes(fast)
    assert len(fast.runs) == 1  # Fooocus returns the upscaled input once
    big = plan(api, app, {"uov_method": "Upscale (Custom)", "upscale_value": 5.0}, 576, 576)
    assert "FooocusKSampler" not in classes(big)  # 2880 px > 2800: returned without diffusion
    below = plan(api, app, {"uov_method": "Upscale (2x)"}, 1350, 1350)
    assert "FooocusKSampler" in classes(below)
    disabled = plan(api, app, {"uov_method": "Disabled", "aspect_ratios_selection": "64*64"}, 96, 64)
    assert "EmptyLatentImage" in classes(disabled)  # the tab is off: text-to-image


async def test_sd15_refiner_at_partial_denoise_runs_alone_or_not_at_all(server):
    """Fooocus' rule: with d > ((steps - switch) / steps) ** 0.834 only the base samples, otherwise
    only the SD1.5 refiner, with its own VAE for encoding and decoding (30 steps, switch 15: 0.561)."""
    client, app, api = await server()
    common = {"refiner_model_name": "tiny-sd15.safetensors", "refiner_switch": 0.5}
    subtle = plan(api, app, {**common, "uov_method": "Vary (Subtle)"}, 96, 64)  # 0.5 <= 0.561
    inputs = node_inputs(subtle, "sampler")
    assert inputs["model"] == ["refiner", 0] and inputs["positive"] == ["refiner_positive", 0]
    assert node_inputs(subtle, "encode")["vae"] == ["refiner", 2] and node_inputs(subtle, "decode")["vae"] == \
        ["refiner", 2]
    assert "refiner_model" not in inputs  # no swap inside the sampler
    assert node_inputs(subtle, "refiner")["ckpt_name"] == "tiny-sd15.safetensors"
    strong = plan(api, app, {**common, "uov_method": "Vary (Strong)"}, 96, 64)  # 0.85 > 0.561
    inputs = node_inputs(strong, "sampler")
    assert inputs["model"] == ["loras", 0] and "refiner_model" not in inputs
    assert node_inputs(strong, "encode")["vae"] == ["base", 2]
    sdxl_refiner = plan(api, app, {"refiner_model_name": "tiny-sdxl-refiner.safetensors", "refiner_switch": 0.5,
                                   "uov_method": "Vary (Subtle)"}, 96, 64)
    assert node_inputs(sdxl_refiner, "sampler")["refiner_model"] == ["refiner", 0]  # joint swap as usual


async def test_missing_upscaler_is_a_job_error_naming_file_and_folder(aiohttp_client, demo_models_dir, tmp_path):
    root = tmp_path / "models"
    root.mkdir()
    for entry in demo_models_dir.iterdir():
        if entry.name != "upscale_models":
            (root / entry.name).symlink_to(entry, target_is_directory=entry.is_dir())
    app, api = make_app(root, tmp_path)
    client = await aiohttp_client(app.make_web_app())
    response = await post_json(client, V2, {"input_image": b64(png_bytes(64, 64)), "uov_method": "Upscale (2x)",
                                            "async_process": True})
    job = await wait_for_job(client, (await response.json())["job_id"])
    assert job["job_stage"] == "ERROR"
    assert "fooocus_upscaler_s409985e5.bin" in job["job_status"] and "upscale_models" in job["job_status"]
    assert (await client.get("/ping")).status == 200


# ----------------------------------------------------------------------------- routes end to end

@pytest.mark.timeout(900)
async def test_document_v1_example_as_written(server):
    """The API document's v1 example: multipart with the image as a file, async, Upscale (2x)."""
    client, app, api = await server(preset="lightning")
    from aiohttp import FormData
    form = FormData()
    form.add_field("uov_method", "Upscale (2x)")
    form.add_field("async_process", "True")
    form.add_field("input_image", jpeg_bytes(48, 40), filename="bear.jpg")
    response = await client.post(V1, data=form)
    assert response.status == 200, await response.text()
    submitted = await response.json()
    assert submitted["job_type"] == "Image Upscale or Variation" and submitted["job_stage"] == "WAITING"
    job = await wait_for_job(client, submitted["job_id"])
    assert job["job_stage"] == "SUCCESS", job
    image = await image_of(client, job["job_result"][0])
    target = upscale_target(48, 40, 2.0)
    assert image.size == (target.size[0] // 8 * 8, target.size[1] // 8 * 8)
    history = await (await client.get("/v1/generation/job-history", params={"job_id": submitted["job_id"]})).json()
    assert submitted["job_id"] in json.dumps(history["history"])


@pytest.mark.timeout(900)
async def test_document_v2_example_as_written(server):
    client, app, api = await server(preset="lightning")
    params = {"uov_method": "Upscale (2x)", "async_process": True, "input_image": b64(jpeg_bytes(40, 48))}
    response = await post_json(client, V2, params)
    assert response.status == 200, await response.text()
    job = await wait_for_job(client, (await response.json())["job_id"])
    assert job["job_stage"] == "SUCCESS", job
    assert (await image_of(client, job["job_result"][0])).size[0] % 8 == 0


@pytest.mark.timeout(900)
async def test_vary_subtle_sync_and_strong_async(server):
    client, app, api = await server()
    body = {"uov_method": "Vary (Subtle)", "input_image": "data:image/png;base64," + b64(png_bytes(96, 64)),
            "advanced_params": FAST_STEPS, "image_seed": 7}
    response = await post_json(client, V2, body)
    items = await response.json()
    assert response.status == 200 and items[0]["seed"] == "7", items
    assert (await image_of(client, items[0])).size == (1216, 832)

    from aiohttp import FormData
    form = FormData()
    for key, value in {"uov_method": "Vary (Strong)", "async_process": "true",
                       "advanced_params": json.dumps(FAST_STEPS)}.items():
        form.add_field(key, value)
    form.add_field("input_image", png_bytes(64, 96, mode="RGBA"), filename="x.png")
    job = await wait_for_job(client, (await (await client.post(V1, data=form)).json())["job_id"])
    assert job["job_stage"] == "SUCCESS", job
    assert (await image_of(client, job["job_result"][0])).size == (832, 1216)


@pytest.mark.timeout(900)
async def test_upscale_15x_and_custom_end_in_success_at_their_sizes(server):
    """Both submitted async at once (1 step, Lightning's CFG 1): 1.5x of 600x400 goes to shape ceil
    1024 (1216x832), Custom 3.0 of 400x300 to exactly 1200x900 (1200x896 after the VAE's 8-px grid)."""
    client, app, api = await server(preset="lightning")
    jobs = []
    for method, extra, size in [("Upscale (1.5x)", {}, (600, 400)),
                                ("Upscale (Custom)", {"upscale_value": 3.0}, (400, 300))]:
        body = {"uov_method": method, "input_image": b64(png_bytes(*size)), "advanced_params": FAST_STEPS,
                "async_process": True, **extra}
        jobs.append((await (await post_json(client, V2, body)).json())["job_id"])
    sizes = [(await image_of(client, (await wait_for_job(client, job))["job_result"][0])).size for job in jobs]
    assert sizes == [(1216, 832), (1200, 896)]


async def test_fast_2x_is_the_super_resolution_image_without_diffusion(server, demo_models_dir):
    client, app, api = await server()
    source = png_bytes(576, 448, seed=3)
    response = await post_json(client, V2, {"uov_method": "Upscale (Fast 2x)", "input_image": b64(source)})
    items = await response.json()
    image = await image_of(client, items[0])
    assert image.size == (1152, 896)
    # the oracle: the same upscaler through spandrel directly, then Lanczos to exactly 2x
    descriptor = load_upscaler(demo_models_dir / UPSCALER)
    upscaled = upscale_image(descriptor, pil_to_tensor(Image.open(io.BytesIO(source)))[None])[0]
    expected = tensor_to_pil(upscaled).resize((1152, 896), Image.LANCZOS)
    difference = np.abs(np.asarray(image, dtype=np.int16) - np.asarray(expected, dtype=np.int16))
    assert difference.max() <= 1  # float rounding of the network on a different tile schedule at most


async def test_png_streaming_answer(server):
    client, app, api = await server()
    response = await post_json(client, V2 + "?accept=image/png",
                               {"uov_method": "Upscale (Fast 2x)", "input_image": b64(png_bytes(64, 32))})
    assert response.status == 200 and response.content_type == "image/png"
    assert Image.open(io.BytesIO(await response.read())).size == upscale_target(64, 32, 2.0).size


# ----------------------------------------------------------------------------- URL inputs

@pytest.fixture
async def image_host(aiohttp_server):
    """A local HTTP server: /ok.png an image, /slow never answers, /redirect to /ok.png, /text not an image."""
    never = asyncio.Event()

    async def ok(request):
        return web.Response(body=png_bytes(64, 48), content_type="image/png")

    async def slow(request):
        await never.wait()

    async def redirect(request):
        raise web.HTTPFound("/ok.png")

    async def text(request):
        return web.Response(text="hello")

    app = web.Application()
    app.router.add_get("/ok.png", ok)
    app.router.add_get("/slow", slow)
    app.router.add_get("/redirect", redirect)
    app.router.add_get("/text", text)
    host = await aiohttp_server(app)
    yield host
    never.set()


async def test_url_input_needs_the_private_url_flag(server, image_host):
    url = str(image_host.make_url("/redirect"))
    client, app, api = await server()
    refused = await post_json(client, V2, {"uov_method": "Upscale (Fast 2x)", "input_image": url})
    assert refused.status == 422
    detail = (await refused.json())["detail"][0]
    assert detail["loc"] == ["body", "input_image"] and "--allow-private-urls" in detail["msg"]

    client, app, api = await server(allow_private_urls=True)
    response = await post_json(client, V2, {"uov_method": "Upscale (Fast 2x)", "input_image": url})
    items = await response.json()
    assert response.status == 200, items
    assert (await image_of(client, items[0])).size == upscale_target(64, 48, 2.0).size


async def test_url_that_times_out_or_is_no_image_is_a_422(server, image_host):
    client, app, api = await server(allow_private_urls=True, url_fetch_timeout_s=0.5)
    for path, words in [("/slow", "did not answer"), ("/text", "could not decode"), ("/missing", "HTTP 404")]:
        response = await post_json(client, V2, {"uov_method": "Upscale (2x)",
                                                "input_image": str(image_host.make_url(path))})
        assert response.status == 422, path
        detail = (await response.json())["detail"][0]
        assert detail["loc"] == ["body", "input_image"] and words in detail["msg"], detail
    assert (await client.get("/ping")).status == 200


def test_literal_private_addresses_are_refused_before_connecting():
    from server.fooocus.url_fetch import UrlFetcher, UrlFetchError, is_public_address

    for address in ["127.0.0.1", "10.1.2.3", "192.168.0.1", "172.16.5.4", "169.254.169.254", "::1", "fe80::1",
                    "0.0.0.0", "::ffff:127.0.0.1", "100.64.0.1", "224.0.0.1"]:
        assert not is_public_address(address), address
    assert is_public_address("8.8.8.8") and is_public_address("2606:4700:4700::1111")
    fetcher = UrlFetcher()
    for url in ["http://169.254.169.254/latest/meta-data", "http://[::1]:8888/x.png", "ftp://example.com/a.png",
                "file:///etc/passwd"]:
        with pytest.raises(UrlFetchError):
            asyncio.run(fetcher.fetch(url))


# ----------------------------------------------------------------------------- bad input

def truncated_png() -> bytes:
    data = png_bytes(64, 64)
    return data[: len(data) // 2]


def bomb_png(width: int = 60000, height: int = 60000) -> bytes:
    """A valid tiny PNG whose header claims width x height pixels."""
    data = bytearray(png_bytes(8, 8))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    data[16:29] = ihdr
    data[29:33] = struct.pack(">I", zlib.crc32(b"IHDR" + ihdr))
    return bytes(data)


@pytest.mark.parametrize("case,body,field", [
    ("missing image", {"uov_method": "Upscale (2x)"}, "input_image"),
    ("empty image", {"uov_method": "Upscale (2x)", "input_image": ""}, "input_image"),
    ("not an image", {"uov_method": "Upscale (2x)", "input_image": b64(b"just some text, no pixels")},
     "input_image"),
    ("truncated png", {"uov_method": "Upscale (2x)", "input_image": b64(truncated_png())}, "input_image"),
    ("1x1 image", {"uov_method": "Upscale (2x)", "input_image": b64(png_bytes(1, 1))}, "input_image"),
    ("over the pixel limit", {"uov_method": "Upscale (2x)", "input_image": b64(bomb_png())}, "input_image"),
    ("bad base64", {"uov_method": "Upscale (2x)", "input_image": "%%%not base64%%%"}, "input_image"),
    ("private URL", {"uov_method": "Upscale (2x)", "input_image": "http://127.0.0.1:9/a.png"}, "input_image"),
    ("unknown uov_method", {"uov_method": "Vary", "input_image": b64(png_bytes(16, 16))}, "uov_method"),
    ("upscale_value too big", {"uov_method": "Upscale (Custom)", "upscale_value": 5.5,
                               "input_image": b64(png_bytes(16, 16))}, "upscale_value"),
    ("upscale_value too small", {"uov_method": "Upscale (Custom)", "upscale_value": 0.5,
                                 "input_image": b64(png_bytes(16, 16))}, "upscale_value"),
])
async def test_bad_input_is_a_422_naming_the_field(server, case, body, field):
    client, app, api = await server()
    response = await post_json(client, V2, body)
    assert response.status == 422, (case, await response.text())
    locations = [detail["loc"] for detail in (await response.json())["detail"]]
    assert ["body", field] in locations, (case, locations)
    assert (await client.get("/ping")).status == 200
    assert api.store.queue_summary()["running_size"] == 0  # nothing was queued


async def test_v1_bad_inputs(server):
    from aiohttp import FormData
    client, app, api = await server()
    cases = [({"uov_method": "Upscale (2x)"}, None, "input_image"),
             ({"uov_method": "Upscale (2x)"}, b"not an image", "input_image"),
             ({"uov_method": "Upscale (2x)"}, truncated_png(), "input_image"),
             ({"uov_method": "Nope"}, png_bytes(16, 16), "uov_method"),
             ({"uov_method": "Upscale (Custom)", "upscale_value": "9"}, png_bytes(16, 16), "upscale_value")]
    for fields, image, field in cases:
        form = FormData()
        for key, value in fields.items():
            form.add_field(key, value)
        if image is not None:
            form.add_field("input_image", image, filename="in.png")
        response = await client.post(V1, data=form)
        assert response.status == 422, (fields, await response.text())
        assert ["body", field] in [d["loc"] for d in (await response.json())["detail"]]
    stored = app.config.input_dir / "fooocus"
    assert not stored.exists() or not list(stored.iterdir())  # refused requests leave no stored input


async def test_deleting_a_job_deletes_its_stored_input(server):
    client, app, api = await server()
    response = await post_json(client, V2, {"uov_method": "Upscale (Fast 2x)", "input_image": b64(png_bytes(32, 32)),
                                            "async_process": True})
    job_id = (await response.json())["job_id"]
    assert (await wait_for_job(client, job_id))["job_stage"] == "SUCCESS"
    record = api.store.get(job_id)
    stored = app.config.input_dir / record.params["input_image"]
    assert stored.is_file() and record.params["input_image"].startswith("fooocus/")
    deleted = await client.get("/v1/generation/job-history", params={"job_id": job_id, "delete": "true"})
    assert (await deleted.json()) == {"message": "Deleted"}
    assert not stored.exists()


async def test_malformed_multipart_is_a_422(server):
    client, app, api = await server()
    body = (b"--XYZ\r\nContent-Disposition: form-data; name=\"uov_method\"\r\nBroken-Header\r\n\r\nUpscale (2x)\r\n"
            b"--XYZ--\r\n")
    response = await client.post(V1, data=body, headers={"Content-Type": "multipart/form-data; boundary=XYZ"})
    assert response.status == 422, await response.text()
    assert (await client.get("/ping")).status == 200
