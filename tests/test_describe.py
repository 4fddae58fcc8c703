"""Describe: BLIP photo captions and WD14 anime tags, from the model files to POST /v1/tools/describe-image.

Oracles: transformers' BlipForConditionalGeneration built directly in its own layout (logits) and
its `generate` (sampled tokens), torchvision's Resize/Normalize (pixels), the real checkpoint's key
list (tests/fixtures/blip_caption_capfilt_large_keys.txt, from Salesforce's model definition)
against transformers' full-size model, and ONNX taggers whose outputs are known by construction.
"""
import asyncio
import io
import shutil
import threading
from pathlib import Path

import numpy as np
import pytest
import requests
import torch
from aiohttp import FormData
from PIL import Image

from graph import context as graph_context
from graph import validate_prompt
from models.interrogate.blip import (CaptionSettings, build_blip, decode_caption, load_bert_tokenizer, load_blip,
                                     pixel_values, read_blip_state, sample_caption_ids)
from models.interrogate.blip_keys import POSITION_IDS_KEY, BlipShape, convert_state_dict, rename_key
from models.interrogate.tiny import (salesforce_key, salesforce_layout, tagger_onnx, tiny_tags, write_onnx,
                                     write_tags_csv, write_tiny_blip, write_tiny_wd14)
from models.interrogate.wd14 import CHARACTER, GENERAL, RATING, Tag, WD14Tagger, fit_white_square, select_tags
from nodes.describe import FOLDER, TINY_BLIP_FILE, TINY_WD14_FILE
from server.app import App
from server.config import AppConfig
from server.fooocus.describe import DescribeBusy, DescribeRoutes, DescribeRunner, DescribeTimeout
from server.fooocus.setup import attach_fooocus_api

FIXTURES = Path(__file__).parent / "fixtures"
ROUTE = "/v1/tools/describe-image"


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def real_key_list() -> dict[str, tuple[int, ...]]:
    rows = (line.split() for line in (FIXTURES / "blip_caption_capfilt_large_keys.txt").read_text().splitlines()
            if line and not line.startswith("#"))
    return {key: tuple(int(n) for n in shape.split(",")) for key, shape in rows}


@pytest.fixture(scope="module")
def tiny_blip(tmp_path_factory):
    root = tmp_path_factory.mktemp("blip")
    write_tiny_blip(root / "tiny.pth", root / "tokenizer")
    tokenizer = load_bert_tokenizer(root / "tokenizer")
    model, _ = load_blip(root / "tiny.pth", [root / "tokenizer"])
    return root / "tiny.pth", tokenizer, model


def upload(data: bytes, field: str = "image"):
    form = FormData()
    form.add_field(field, data, filename="image")
    return form


def noise_png(width=48, height=40, seed=0) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 256, size=(height, width, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


# --- BLIP: keys, network, preprocessing, sampling --------------------------------------------------
def test_rename_matches_transformers_on_every_key_of_the_real_checkpoint():
    from transformers import BlipForConditionalGeneration

    real = real_key_list()
    assert len(real) == 474
    shape = BlipShape.of({key: torch.empty(size, device="meta") for key, size in real.items()})
    assert shape == BlipShape(vision_width=768, vision_layers=12, vision_mlp=3072, patch_size=16, image_size=384,
                              text_width=768, text_layers=12, text_intermediate=3072, vocab_size=30524,
                              max_positions=512, encoder_width=768)
    config = shape.transformers_config(bos_token_id=30522, sep_token_id=102, pad_token_id=0)
    assert config.text_config.num_attention_heads == 12 and config.vision_config.num_attention_heads == 12
    with torch.device("meta"):
        expected = {key: tuple(value.shape) for key, value in BlipForConditionalGeneration(config).state_dict().items()}
    converted = convert_state_dict({key: torch.empty(size, device="meta") for key, size in real.items()})
    assert {key: tuple(value.shape) for key, value in converted.items()} == expected
    # only the position-id buffer (non-persistent in transformers) is dropped
    assert {rename_key(key) for key in real} - set(converted) == {POSITION_IDS_KEY}
    # the tiny writer's layout is the real one at other widths
    assert salesforce_layout(shape) == real


@pytest.mark.parametrize("original, renamed", [
    ("visual_encoder.cls_token", "vision_model.embeddings.class_embedding"),
    ("visual_encoder.pos_embed", "vision_model.embeddings.position_embedding"),
    ("visual_encoder.patch_embed.proj.weight", "vision_model.embeddings.patch_embedding.weight"),
    ("visual_encoder.blocks.11.attn.qkv.bias", "vision_model.encoder.layers.11.self_attn.qkv.bias"),
    ("visual_encoder.blocks.0.attn.proj.weight", "vision_model.encoder.layers.0.self_attn.projection.weight"),
    ("visual_encoder.blocks.3.norm2.weight", "vision_model.encoder.layers.3.layer_norm2.weight"),
    ("visual_encoder.norm.bias", "vision_model.post_layernorm.bias"),
    ("text_decoder.bert.encoder.layer.5.crossattention.self.key.weight",
     "text_decoder.bert.encoder.layer.5.crossattention.self.key.weight"),
])
def test_rename_rules_of_the_conversion_script(original, renamed):
    assert rename_key(original) == renamed


def test_converted_tiny_checkpoint_gives_the_logits_of_transformers_own_model(tiny_blip):
    from transformers import BlipForConditionalGeneration

    path, tokenizer, converted = tiny_blip
    state = read_blip_state(path)
    assert POSITION_IDS_KEY in state and set(state) == set(salesforce_layout(BlipShape.of(state)))
    direct = BlipForConditionalGeneration(converted.config).eval()  # transformers' layout, its own init
    direct.load_state_dict({key: state[salesforce_key(key)] for key in direct.state_dict()})
    pixels = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(3))
    ids = torch.tensor([[tokenizer.bos_token_id, 6, 7, 8, 9, 10], [tokenizer.bos_token_id, 12, 13, 14, 15, 16]])
    with torch.no_grad():
        ours, theirs = converted(pixel_values=pixels, input_ids=ids), direct(pixel_values=pixels, input_ids=ids)
    assert torch.equal(ours.logits, theirs.logits)
    assert torch.equal(ours.image_embeds, theirs.image_embeds)
    # the output projection stays tied to the word embeddings, as in Salesforce's file
    head = converted.text_decoder.cls.predictions.decoder.weight
    assert head is converted.text_decoder.bert.embeddings.word_embeddings.weight


def test_pixels_are_torchvision_bicubic_resize_and_clip_normalize():
    from torchvision import transforms
    from torchvision.transforms import InterpolationMode

    image = torch.rand(1, 37, 53, 3, generator=torch.Generator().manual_seed(0))
    oracle = transforms.Compose([
        transforms.Resize((384, 384), interpolation=InterpolationMode.BICUBIC, antialias=False),
        transforms.Normalize((0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711))])
    expected = oracle(image[0].permute(2, 0, 1))[None]
    assert torch.allclose(pixel_values(image, 384), expected, atol=1e-6)


@pytest.mark.parametrize("settings", [CaptionSettings(), CaptionSettings(max_length=30, min_length=14, top_p=0.95,
                                                                           top_k=5, repetition_penalty=1.5)],
                         ids=["fooocus", "other"])
def test_sampled_tokens_equal_transformers_generate_for_each_seed(tiny_blip, settings):
    _, tokenizer, model = tiny_blip
    assert len(tokenizer) > 50  # so transformers' default top_k of 50 filters something
    pixels = pixel_values(torch.rand(1, 40, 56, 3, generator=torch.Generator().manual_seed(1)), 32)
    prompt = tokenizer(settings.prompt, return_tensors="pt").input_ids
    runs = []
    for seed in (0, 1, 2):
        ours = sample_caption_ids(model, tokenizer, pixels, seed=seed, settings=settings)
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            theirs = model.generate(pixels, input_ids=prompt.clone(), do_sample=True, top_p=settings.top_p,
                                    top_k=settings.top_k, max_length=settings.max_length,
                                    min_length=settings.min_length, repetition_penalty=settings.repetition_penalty)
        assert ours.tolist() == theirs.tolist()
        assert torch.equal(sample_caption_ids(model, tokenizer, pixels, seed=seed, settings=settings), ours)
        assert settings.min_length <= ours.shape[1] <= settings.max_length
        assert ours[0, :4].tolist() == [tokenizer.bos_token_id, *prompt[0, 1:4].tolist()]
        runs.append(ours.tolist())
    assert runs[0] != runs[1] != runs[2]


def test_caption_text_drops_special_tokens_and_the_prompt(tiny_blip):
    _, tokenizer, _ = tiny_blip
    vocab = tokenizer.get_vocab()
    ids = torch.tensor([[tokenizer.bos_token_id, vocab["a"], vocab["picture"], vocab["of"], vocab["red"], vocab["cat"],
                         tokenizer.sep_token_id]])
    assert decode_caption(tokenizer, ids, CaptionSettings().prompt) == "red cat"


def test_interrupt_stops_a_caption_between_tokens(tiny_blip):
    _, tokenizer, model = tiny_blip
    pixels = pixel_values(torch.rand(1, 32, 32, 3), 32)
    calls = []

    def check():
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt("stop")

    with pytest.raises(KeyboardInterrupt):
        sample_caption_ids(model, tokenizer, pixels, seed=0, check=check)
    assert len(calls) == 3


def test_a_checkpoint_and_a_tokenizer_that_do_not_fit_are_refused(tiny_blip, tmp_path):
    from models.interrogate.blip import BlipTokenizerMissing
    from models.interrogate.blip_keys import BlipCheckpointError
    from models.interrogate.tiny import write_bert_vocab

    path, tokenizer, _ = tiny_blip
    other = load_bert_tokenizer(write_bert_vocab(tmp_path / "small", words=("a", "picture", "of")))
    with pytest.raises(BlipCheckpointError, match="token rows"):
        build_blip(read_blip_state(path), other)
    with pytest.raises(BlipTokenizerMissing, match="do not fit"):
        load_blip(path, [tmp_path / "small"])
    broken = dict(read_blip_state(path))
    broken.pop("visual_encoder.blocks.1.attn.proj.weight")
    with pytest.raises(BlipCheckpointError, match="Salesforce's layout"):
        build_blip(broken, tokenizer)


# --- WD14 -------------------------------------------------------------------------------------------
def logit(p):
    return np.log(p / (1.0 - p))


def test_tag_selection_order_and_format_against_a_model_with_known_outputs(tmp_path):
    tags = [Tag("general", RATING), Tag("explicit", RATING), Tag("1girl", GENERAL), Tag("long_hair", GENERAL),
            Tag("open_mouth", GENERAL), Tag(":d", GENERAL), Tag("hatsune_miku", CHARACTER),
            Tag("saber_(fate)", CHARACTER), Tag("cirno", CHARACTER)]
    probabilities = np.array([0.99, 0.9, 0.36, 0.34, 0.97, 0.5, 0.84, 0.86, 0.99])
    # zero weights: the outputs are sigmoid(bias), whatever the image
    model = tagger_onnx(np.zeros((48, len(tags))), logit(probabilities), side=16)
    write_onnx(model, tmp_path / "known.onnx")
    write_tags_csv(tmp_path / "known.csv", tags)
    tagger = WD14Tagger.load(tmp_path / "known.onnx")
    assert np.allclose(tagger.probabilities(Image.new("RGB", (7, 3))), probabilities, atol=1e-6)
    text = tagger.tag(Image.new("RGB", (20, 30), (10, 200, 30)))
    assert text == "saber \\(fate\\), cirno, 1girl, open mouth, :d"
    assert tagger.tag(Image.new("RGB", (5, 5)), general_threshold=0.9, character_threshold=0.95) == "cirno, open mouth"
    assert tagger.tag(Image.new("RGB", (5, 5)), exclude=["Cirno", " open_mouth"]) == "saber \\(fate\\), 1girl, :d"
    with pytest.raises(ValueError, match="9 probabilities for 8 tags"):
        select_tags(tags[:8], probabilities)


def test_tagger_input_is_a_white_square_in_bgr_nhwc(tmp_path):
    # identity weights: output k = sigmoid(mean of pooled cell k / 255), cells in NCHW order (B, G, R)
    write_onnx(tagger_onnx(np.eye(48), np.zeros(48), side=32), tmp_path / "probe.onnx")
    write_tags_csv(tmp_path / "probe.csv", [Tag(f"cell_{n}", GENERAL) for n in range(48)])
    tagger = WD14Tagger.load(tmp_path / "probe.onnx")
    assert tagger.side == 32
    image = Image.new("RGB", (32, 16), (255, 0, 0))
    image.paste((0, 0, 255), (16, 0, 32, 16))  # left half red, right half blue; white above and below
    means = logit(tagger.probabilities(image).astype(np.float64)).reshape(3, 4, 4) * 255  # [BGR, rows, cols]
    white, red, blue = (255, 255, 255), (0, 0, 255), (255, 0, 0)  # as B, G, R
    expected = np.empty((3, 4, 4))
    for row in range(4):
        for col in range(4):
            expected[:, row, col] = white if row in (0, 3) else (red if col < 2 else blue)
    assert np.allclose(means, expected, atol=0.05)
    square = fit_white_square(Image.new("RGB", (100, 10), (0, 0, 0)), 32)
    assert square.size == (32, 32) and square.getpixel((0, 0)) == (255, 255, 255)
    assert square.getpixel((16, 16)) == (0, 0, 0)
    assert fit_white_square(Image.new("RGB", (1, 500)), 32).size == (32, 32)  # a 1-pixel-wide image still fits


def test_demo_tagger_tags_noise(tmp_path):
    write_tiny_wd14(tmp_path / "t.onnx", tmp_path / "t.csv")
    tags = WD14Tagger.load(tmp_path / "t.onnx").tag(Image.open(io.BytesIO(noise_png())))
    assert tags.startswith(("1girl", "hatsune", "hakurei", "kirisame", "saber", "rem", "cirno")) and "1girl, solo" in tags
    assert [tag.category for tag in tiny_tags()][:4] == [RATING] * 4


# --- the describe runner: bounded, beside the queue ---------------------------------------------------
class Gate:
    """Blocks until released, honouring interrupts; tells when it has started."""
    started = threading.Event()
    release = threading.Event()
    RETURN_TYPES = ()
    OUTPUT_NODE = True
    FUNCTION = "run"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"value": ("INT",)}}

    @classmethod
    def IS_CHANGED(cls, **kwargs):
        return float("nan")

    def run(self, value):
        context = graph_context.current()
        type(self).started.set()
        while not type(self).release.wait(0.005):
            context.check_interrupt()
        return {"ui": {"text": [f"gate {value}"]}}


def gated_runner(toy_app_factory, **options):
    app = toy_app_factory()

    class LocalGate(Gate):
        started, release = threading.Event(), threading.Event()

    app.registry.register("Gate", LocalGate)
    return DescribeRunner(app.registry, app.services, **options), LocalGate


async def test_runner_refuses_calls_beyond_its_bound_and_frees_the_slot(toy_app_factory):
    runner, gate = gated_runner(toy_app_factory, max_calls=1)
    prompt = {"describe": {"class_type": "Gate", "inputs": {"value": 1}}}
    cleaned = threading.Event()
    first = asyncio.ensure_future(runner.run(prompt, cleanup=cleaned.set))
    await asyncio.to_thread(gate.started.wait, 10)
    second_cleaned = threading.Event()
    with pytest.raises(DescribeBusy):
        await runner.run(prompt, cleanup=second_cleaned.set)
    assert second_cleaned.is_set()  # a refused call's upload is removed at once
    gate.release.set()
    outcome = await first
    assert outcome.status == "success" and outcome.outputs["describe"]["text"] == ["gate 1"] and cleaned.is_set()
    assert (await runner.run(prompt)).status == "success"  # the slot is free again


async def test_runner_times_out_and_stops_the_run(toy_app_factory):
    runner, gate = gated_runner(toy_app_factory, max_calls=1, timeout_s=0.3)
    finished = threading.Event()
    with pytest.raises(DescribeTimeout, match="longer than 0.3 s"):
        await runner.run({"describe": {"class_type": "Gate", "inputs": {"value": 2}}}, cleanup=finished.set)
    assert await asyncio.to_thread(finished.wait, 10)  # the interrupted node ended by itself
    gate.release.set()
    assert (await runner.run({"describe": {"class_type": "Gate", "inputs": {"value": 3}}})).status == "success"


# --- the route ---------------------------------------------------------------------------------------
@pytest.fixture
def describe_app(tmp_path, demo_models_dir):
    from nodes.model_services import make_model_manager

    def build(models_dir=demo_models_dir, **overrides):
        config = AppConfig(models_dir=models_dir, output_dir=tmp_path / "output", input_dir=tmp_path / "input",
                           temp_dir=tmp_path / "temp", custom_nodes_dir=None, cpu=True, **overrides)
        app = App(config, model_manager=make_model_manager(config))
        return app, attach_fooocus_api(app)

    return build


def describe_image(host: str, image: bytes, params: dict = {"type": "Photo"}) -> dict:  # noqa: B006
    """The API document's example (describe), with the test server's address."""
    response = requests.post(url=f"{host}/v1/tools/describe-image",
                             params=params,
                             files={
                                 "image": image
                             },
                             timeout=30)
    return response.json()


async def test_document_describe_example_and_both_types(aiohttp_client, describe_app, tmp_path):
    app, _ = describe_app()
    client = await aiohttp_client(app.make_web_app())
    host = str(client.make_url("")).rstrip("/")
    image = noise_png()
    photo = await asyncio.to_thread(describe_image, host, image)
    assert set(photo) == {"describe"} and isinstance(photo["describe"], str) and photo["describe"].strip()
    same = await asyncio.to_thread(describe_image, host, image, {"image_type": "Photo"})
    assert same == photo  # seed 0: the same image gets the same caption
    anime = await asyncio.to_thread(describe_image, host, image, {"image_type": "Anime"})
    assert anime["describe"].strip() and anime != photo
    assert await asyncio.to_thread(describe_image, host, image, {"type": "Anime"}) == anime
    assert await asyncio.to_thread(describe_image, host, image, {}) == photo  # Photo is the default
    assert not any((tmp_path / "input" / "describe").iterdir())  # uploads are removed after use


async def test_route_answers_what_the_nodes_compute(aiohttp_client, describe_app, demo_models_dir):
    from models.interrogate.blip import caption
    from nodes.images import pil_to_tensor

    app, _ = describe_app()
    client = await aiohttp_client(app.make_web_app())
    data = noise_png(40, 56, seed=5)
    image = Image.open(io.BytesIO(data)).convert("RGB")
    folder = Path(demo_models_dir) / FOLDER
    model, tokenizer = load_blip(folder / TINY_BLIP_FILE, [folder / "tiny-blip-caption_tokenizer"])
    expected_caption = caption(model, tokenizer, pil_to_tensor(image), seed=0)
    expected_tags = WD14Tagger.load(folder / TINY_WD14_FILE).tag(image)
    for kind, expected in (("Photo", expected_caption), ("Anime", expected_tags)):
        response = await client.post(ROUTE, params={"image_type": kind}, data=upload(data))
        assert response.status == 200 and await response.json() == {"describe": expected}


async def test_bad_input_is_422_naming_the_field(aiohttp_client, describe_app):
    app, _ = describe_app()
    client = await aiohttp_client(app.make_web_app())

    async def error(**kwargs):
        response = await client.post(ROUTE, **kwargs)
        assert response.status == 422, await response.text()
        [item] = (await response.json())["detail"]
        return item

    assert (await error())["loc"] == ["body", "image"]
    assert (await error(data=upload(b"x", "other")))["loc"] == ["body", "image"]
    item = await error(data=upload(b"certainly not an image"))
    assert item["loc"] == ["body", "image"] and item["msg"].startswith("image: could not decode")
    assert (await error(params={"type": "Painting"}, data=upload(noise_png())))["loc"] == ["query", "type"]
    item = await error(params={"image_type": "cartoon", "type": "Photo"}, data=upload(noise_png()))
    assert item["loc"] == ["query", "image_type"] and "'Photo' or 'Anime'" in item["msg"]
    ok = await client.post(ROUTE, params={"image_type": "anime"}, data=upload(noise_png()))
    assert ok.status == 200  # any case
    assert (await client.get("/ping")).status == 200  # still serving


async def test_missing_model_files_are_named_with_their_folder(aiohttp_client, describe_app, demo_models_dir, tmp_path):
    root = tmp_path / "models"
    for entry in Path(demo_models_dir).iterdir():
        if entry.name != FOLDER:
            (root / entry.name).parent.mkdir(parents=True, exist_ok=True)
            (root / entry.name).symlink_to(entry, target_is_directory=entry.is_dir())
    (root / FOLDER).mkdir()
    app, _ = describe_app(root)
    client = await aiohttp_client(app.make_web_app())
    for kind, name in (("Photo", "model_base_caption_capfilt_large.pth"), ("Anime", "wd-v1-4-moat-tagger-v2.onnx")):
        response = await client.post(ROUTE, params={"image_type": kind}, data=upload(noise_png()))
        message = (await response.json())["detail"]
        assert response.status == 503 and name in message and str(root / FOLDER) in message
    # the real BLIP file without a BERT vocabulary: the missing tokenizer folder is named
    shutil.copy(Path(demo_models_dir) / FOLDER / TINY_BLIP_FILE, root / FOLDER / "model_base_caption_capfilt_large.pth")
    response = await client.post(ROUTE, data=upload(noise_png()))
    message = (await response.json())["detail"]
    assert response.status == 503 and str(root / FOLDER / "bert_tokenizer") in message
    # a tagger without its tag list
    shutil.copy(Path(demo_models_dir) / FOLDER / TINY_WD14_FILE, root / FOLDER / "wd-v1-4-moat-tagger-v2.onnx")
    response = await client.post(ROUTE, params={"type": "Anime"}, data=upload(noise_png()))
    message = (await response.json())["detail"]
    assert response.status == 503 and "wd-v1-4-moat-tagger-v2.csv" in message and str(root / FOLDER) in message


async def test_api_key_is_required_as_on_the_other_fooocus_routes(aiohttp_client, describe_app):
    app, _ = describe_app(apikey="secret")
    client = await aiohttp_client(app.make_web_app())
    assert (await client.post(ROUTE, data=upload(noise_png()))).status == 403
    response = await client.post(ROUTE, data=upload(noise_png()), headers={"X-API-KEY": "secret"})
    assert response.status == 200


async def test_describe_answers_while_a_long_generation_job_runs(aiohttp_client, tmp_path, demo_models_dir):
    from fooocus_toy import ToySave
    from nodes.model_services import make_model_manager
    from server.fooocus.api import FooocusAPI
    from server.fooocus.jobs import JobPlan
    from server.fooocus.validation import Vocabulary
    from server.queue import RunSpec
    from toy_nodes import Number

    config = AppConfig(models_dir=demo_models_dir, output_dir=tmp_path / "output", input_dir=tmp_path / "input",
                       temp_dir=tmp_path / "temp", custom_nodes_dir=None, cpu=True)
    app = App(config, model_manager=make_model_manager(config))

    class JobGate(Gate):
        started, release = threading.Event(), threading.Event()

        def run(self, value):
            super().run(value)
            return (value,)
    JobGate.RETURN_TYPES, JobGate.OUTPUT_NODE = ("INT",), False
    for name, node in (("Number", Number), ("JobGate", JobGate), ("ToySave", ToySave)):
        app.registry.register(name, node)

    def plan(job_type, params, job_id):
        prompt = {"n": {"class_type": "Number", "inputs": {"value": 1}},
                  "gate": {"class_type": "JobGate", "inputs": {"value": ["n", 0]}},
                  "save": {"class_type": "ToySave", "inputs": {"value": ["gate", 0], "job_id": job_id, "index": 0}}}
        checked = validate_prompt(prompt, app.registry)
        return JobPlan([RunSpec(prompt, checked.outputs, checked.constants, checked.links)], [0], 1)

    api = FooocusAPI(app, plan, vocabulary=lambda: Vocabulary.of(), style_names=lambda: [])
    app.services.extras["fooocus_outputs"] = api.outputs
    api.route_packs.append(DescribeRoutes(app))
    app.extensions.append(api)
    client = await aiohttp_client(app.make_web_app())
    job = await (await client.post("/v1/generation/text-to-image", json={"prompt": "slow", "async_process": True})).json()
    assert await asyncio.to_thread(JobGate.started.wait, 20)  # the job is running, held at its gate
    stage = await (await client.get("/v1/generation/query-job", params={"job_id": job["job_id"]})).json()
    assert stage["job_stage"] == "RUNNING"
    for kind in ("Photo", "Anime"):
        response = await client.post(ROUTE, params={"image_type": kind}, data=upload(noise_png()))
        assert response.status == 200 and (await response.json())["describe"]
    stage = await (await client.get("/v1/generation/query-job", params={"job_id": job["job_id"]})).json()
    assert stage["job_stage"] == "RUNNING"  # describe did not wait for it
    JobGate.release.set()
    for _ in range(2000):
        stage = await (await client.get("/v1/generation/query-job", params={"job_id": job["job_id"]})).json()
        if stage["job_stage"] != "RUNNING":
            break
        await asyncio.sleep(0.01)
    assert stage["job_stage"] == "SUCCESS", stage


def test_describe_workflows_are_comfy_api_format(demo_models_dir, tmp_path):
    """The route's graphs validate as they are against the built-in nodes (so /prompt accepts them)."""
    from workflows import Workflow

    config = AppConfig(models_dir=demo_models_dir, output_dir=tmp_path / "o", input_dir=tmp_path / "i",
                       temp_dir=tmp_path / "t", custom_nodes_dir=None, cpu=True)
    app = App(config)
    (tmp_path / "i").mkdir(exist_ok=True)
    Image.new("RGB", (8, 8)).save(tmp_path / "i" / "example.png")
    for name, model in (("describe_photo", TINY_BLIP_FILE), ("describe_anime", TINY_WD14_FILE)):
        prompt = Workflow.load(name).fill({"image": "example.png", "model": model})
        checked = validate_prompt(prompt, app.registry)
        assert checked.ok, checked.node_errors
        assert checked.outputs == ["describe"]
