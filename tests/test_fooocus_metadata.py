"""Metadata text of both schemes against hand-written expectations, and its round trip through
PNG text chunks and JPEG/WebP EXIF."""

import io
import json

import pytest
from PIL import Image

from server.fooocus.metadata import (
    EXIF_MAKER_NOTE,
    EXIF_SOFTWARE,
    EXIF_USER_COMMENT,
    EmbeddedMetadata,
    GenerationRecord,
    LoraRecord,
    a1111_metadata_text,
    a1111_sampler_label,
    encode_image,
    fooocus_metadata_text,
    parse_a1111_parameters,
    read_metadata,
)
from server.fooocus.requests import MetaScheme

RECORD = GenerationRecord(
    prompt="a cat, sitting",
    negative_prompt="blurry",
    styles=["Fooocus V2", "Fooocus Enhance"],
    performance="Speed",
    steps=30,
    width=1152,
    height=896,
    guidance_scale=4.0,
    sharpness=2.0,
    adm_guidance=(1.5, 0.8, 0.3),
    base_model="juggernautXL_v8Rundiffusion.safetensors",
    base_model_hash="aeb7e9e689",
    sampler="dpmpp_2m_sde_gpu",
    scheduler="karras",
    seed=12345,
    prompt_expansion="a cat, sitting, highly detailed",
    loras=[LoraRecord("sd_xl_offset_example-lora_1.0.safetensors", 0.1, "4852686128")],
    full_prompt=["a cat, sitting", "highly detailed"],
    full_negative_prompt=["blurry", "ugly"],
)

EXPECTED_A1111 = (
    "a cat, sitting, highly detailed\n"
    "Negative prompt: blurry, ugly\n"
    'Steps: 30, Sampler: DPM++ 2M SDE Karras, Seed: 12345, Size: 1152x896, CFG scale: 4.0, '
    'Sharpness: 2.0, ADM Guidance: "(1.5, 0.8, 0.3)", Model: juggernautXL_v8Rundiffusion, '
    'Model hash: aeb7e9e689, Performance: Speed, Scheduler: karras, VAE: Default (model), '
    'Raw prompt: "a cat, sitting", Raw negative prompt: blurry, Clip skip: 2, '
    'Lora hashes: "sd_xl_offset_example-lora_1.0: 4852686128", '
    'Lora weights: "sd_xl_offset_example-lora_1.0: 0.1", Version: Fooocus v2.5.5'
)

EXPECTED_FOOOCUS = {
    "adm_guidance": "(1.5, 0.8, 0.3)",
    "base_model": "juggernautXL_v8Rundiffusion",
    "base_model_hash": "aeb7e9e689",
    "clip_skip": 2,
    "full_negative_prompt": ["blurry", "ugly"],
    "full_prompt": ["a cat, sitting", "highly detailed"],
    "guidance_scale": 4.0,
    "lora_combined_1": "sd_xl_offset_example-lora_1.0 : 0.1",
    "loras": [["sd_xl_offset_example-lora_1.0", 0.1, "4852686128"]],
    "metadata_scheme": "fooocus",
    "negative_prompt": "blurry",
    "performance": "Speed",
    "prompt": "a cat, sitting",
    "prompt_expansion": "a cat, sitting, highly detailed",
    "refiner_model": "None",
    "refiner_switch": 0.5,
    "resolution": "(1152, 896)",
    "sampler": "dpmpp_2m_sde_gpu",
    "scheduler": "karras",
    "seed": "12345",
    "sharpness": 2.0,
    "steps": 30,
    "styles": "['Fooocus V2', 'Fooocus Enhance']",
    "vae": "Default (model)",
    "version": "Fooocus v2.5.5",
}


def test_a1111_text_matches_hand_written_string():
    assert a1111_metadata_text(RECORD) == EXPECTED_A1111


def test_a1111_optional_parameters_and_refiner():
    record = GenerationRecord(
        **{**RECORD.__dict__, "refiner_model": "sd_xl_refiner_1.0_0.9vae.safetensors",
           "refiner_model_hash": "8d0ce6c016", "refiner_swap_method": "separate", "overwrite_switch": 0.6,
           "adaptive_cfg": 5.0, "clip_skip": 1, "freeu": (1.01, 1.02, 0.99, 0.95), "loras": (),
           "sampler": "euler", "scheduler": "normal", "created_by": "me"}
    )
    params_line = a1111_metadata_text(record).split("\n")[-1]
    assert params_line == (
        'Steps: 30, Sampler: Euler, Seed: 12345, Size: 1152x896, CFG scale: 4.0, Sharpness: 2.0, '
        'ADM Guidance: "(1.5, 0.8, 0.3)", Model: juggernautXL_v8Rundiffusion, Model hash: aeb7e9e689, '
        'Performance: Speed, Scheduler: normal, VAE: Default (model), Raw prompt: "a cat, sitting", '
        'Raw negative prompt: blurry, Refiner: sd_xl_refiner_1.0_0.9vae, Refiner hash: 8d0ce6c016, '
        'Adaptive CFG: 5.0, Overwrite Switch: 0.6, Refiner Swap Method: separate, '
        'FreeU: "(1.01, 1.02, 0.99, 0.95)", Version: Fooocus v2.5.5, User: me'
    )


def test_a1111_sampler_labels():
    assert a1111_sampler_label("dpmpp_2m_sde_gpu", "karras") == "DPM++ 2M SDE Karras"
    assert a1111_sampler_label("euler_ancestral", "karras") == "Euler a Karras"  # Fooocus quirk kept
    assert a1111_sampler_label("uni_pc", "normal") == "UniPC"
    assert a1111_sampler_label("dpmpp_3m_sde_gpu", "karras") == "dpmpp_3m_sde_gpu"


def test_fooocus_text_is_sorted_json_of_the_log():
    text = fooocus_metadata_text(RECORD)
    assert json.loads(text) == EXPECTED_FOOOCUS
    assert text == json.dumps(EXPECTED_FOOOCUS, sort_keys=True)
    with_refiner = GenerationRecord(**{**RECORD.__dict__, "refiner_model": "ref/sd_xl_refiner.safetensors",
                                       "refiner_model_hash": "abc"})
    data = json.loads(fooocus_metadata_text(with_refiner))
    assert (data["refiner_model"], data["refiner_model_hash"]) == ("sd_xl_refiner", "abc")


def test_parse_a1111_round_trip():
    parsed = parse_a1111_parameters(EXPECTED_A1111)
    assert parsed["prompt"] == "a cat, sitting, highly detailed"
    assert parsed["negative_prompt"] == "blurry, ugly"
    params = parsed["parameters"]
    assert params["Steps"] == "30" and params["Sampler"] == "DPM++ 2M SDE Karras"
    assert params["Raw prompt"] == "a cat, sitting" and params["ADM Guidance"] == "(1.5, 0.8, 0.3)"
    assert params["Lora weights"] == "sd_xl_offset_example-lora_1.0: 0.1"
    assert params["Version"] == "Fooocus v2.5.5"
    assert list(params) == [
        "Steps", "Sampler", "Seed", "Size", "CFG scale", "Sharpness", "ADM Guidance", "Model", "Model hash",
        "Performance", "Scheduler", "VAE", "Raw prompt", "Raw negative prompt", "Clip skip", "Lora hashes",
        "Lora weights", "Version",
    ]


IMAGE = Image.new("RGB", (16, 16), (30, 120, 200))


@pytest.mark.parametrize("extension", ["png", "jpeg", "jpg", "webp"])
@pytest.mark.parametrize("scheme", [MetaScheme.FOOOCUS, MetaScheme.A1111])
def test_container_round_trip(extension, scheme):
    embedded = EmbeddedMetadata.of(RECORD, scheme)
    data = encode_image(IMAGE, extension, embedded)
    expected_format = {"png": "PNG", "jpeg": "JPEG", "jpg": "JPEG", "webp": "WEBP"}[extension]
    assert Image.open(io.BytesIO(data)).format == expected_format
    found = read_metadata(data)
    assert found is not None and found.scheme is scheme and found.text == embedded.text
    if scheme is MetaScheme.FOOOCUS:
        assert found.parsed == EXPECTED_FOOOCUS
    else:
        assert found.parsed["parameters"]["Seed"] == "12345"
    if extension != "png":
        exif = Image.open(io.BytesIO(data)).getexif()
        assert exif[EXIF_SOFTWARE] == "Fooocus v2.5.5" and exif[EXIF_MAKER_NOTE] == scheme.value
        assert exif[EXIF_USER_COMMENT] == embedded.text  # ASCII text is stored as Fooocus does
        assert found.software == "Fooocus v2.5.5"
    else:
        info = Image.open(io.BytesIO(data)).info
        assert info["parameters"] == embedded.text and info["fooocus_scheme"] == scheme.value


@pytest.mark.parametrize("extension", ["png", "jpeg", "webp"])
def test_non_ascii_prompt_survives(extension):
    record = GenerationRecord(**{**RECORD.__dict__, "prompt": "chat noir, 猫, café", "full_prompt": ["chat noir", "猫"]})
    embedded = EmbeddedMetadata.of(record, MetaScheme.A1111)
    found = read_metadata(encode_image(IMAGE, extension, embedded))
    assert found.text == embedded.text
    assert found.parsed["parameters"]["Raw prompt"] == "chat noir, 猫, café"


def test_no_metadata_and_scheme_guess():
    assert read_metadata(encode_image(IMAGE, "png")) is None
    assert read_metadata(encode_image(IMAGE, "webp")) is None
    # A file without the scheme marker: JSON object -> fooocus, text -> a1111.
    exif = Image.Exif()
    exif[EXIF_USER_COMMENT] = fooocus_metadata_text(RECORD)
    buffer = io.BytesIO()
    IMAGE.save(buffer, format="JPEG", exif=exif)
    assert read_metadata(buffer.getvalue()).scheme is MetaScheme.FOOOCUS
    exif[EXIF_USER_COMMENT] = EXPECTED_A1111
    buffer = io.BytesIO()
    IMAGE.save(buffer, format="JPEG", exif=exif)
    assert read_metadata(buffer.getvalue()).scheme is MetaScheme.A1111


def test_jpeg_drops_alpha():
    rgba = Image.new("RGBA", (8, 8), (10, 20, 30, 128))
    assert Image.open(io.BytesIO(encode_image(rgba, "jpg"))).mode == "RGB"
