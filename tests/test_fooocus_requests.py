"""Fooocus-API request/response models: the API document's examples, defaults, 422 shapes,
form parsing. Expected values are copied by hand from the user's API document
(shared/seed/fooocus_api_doc.md) and specs/fooocus_api.md."""

import base64
import io
import json

import pytest
from PIL import Image
from pydantic import ValidationError

from server.fooocus.advanced import AdvancedParams
from server.fooocus.forms import form_to_dict, parse_form
from server.fooocus.requests import (
    CommonRequest,
    ControlNetType,
    DescribeImageRequest,
    ImagePrompt,
    ImagePromptRequestV1,
    ImagePromptRequestV2,
    InpaintOutpaintRequestV1,
    InpaintOutpaintRequestV2,
    JobHistoryRequest,
    Lora,
    MetaScheme,
    OutpaintExpansion,
    OutputFormat,
    PerformanceSelection,
    QueryJobRequest,
    TextToImageWithIPRequest,
    UpscaleOrVaryMethod,
    UpscaleVaryRequestV1,
    UpscaleVaryRequestV2,
    parse_aspect_ratio,
)
from server.fooocus.validation import (
    Vocabulary,
    json_decode_error_response,
    validate_request,
    validate_request_json,
    validation_error_response,
)


def _png_bytes(color=(200, 10, 10)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), color).save(buffer, format="PNG")
    return buffer.getvalue()


IMAGE = _png_bytes()
IMAGE_B64 = base64.b64encode(IMAGE).decode("utf-8")
SOURCE_B64 = base64.b64encode(_png_bytes((0, 0, 255))).decode("utf-8")


def _error(model, data, vocabulary=None) -> list:
    with pytest.raises(ValidationError) as info:
        validate_request(model, data, vocabulary)
    body = validation_error_response(info.value, body=data)
    json.dumps(body)  # the 422 body must be serialisable
    return body["detail"]


# ----------------------------------------------------------------- the document's examples

DOC_JSON_EXAMPLES = [
    (CommonRequest, {"prompt": "1girl sitting on the ground", "async_process": True}),
    (UpscaleVaryRequestV2, {"uov_method": "Upscale (2x)", "async_process": True, "input_image": IMAGE_B64}),
    (
        InpaintOutpaintRequestV2,
        {"input_image": IMAGE_B64, "input_mask": None, "outpaint_selections": ["Left", "Right"], "async_process": True},
    ),
    (
        InpaintOutpaintRequestV2,
        {"prompt": "a cat", "input_image": SOURCE_B64, "input_mask": IMAGE_B64, "async_process": True},
    ),
    (ImagePromptRequestV2, {"input_image": IMAGE_B64, "outpaint_selections": ["Left", "Right"], "image_prompts": []}),
    (
        ImagePromptRequestV2,
        {
            "prompt": "1girl sitting on the chair",
            "input_image": SOURCE_B64,
            "input_mask": IMAGE_B64,
            "image_prompts": [],
            "async_process": True,
        },
    ),
    (
        ImagePromptRequestV2,
        {
            "prompt": "1girl sitting on the chair",
            "image_prompts": [
                {"cn_img": SOURCE_B64, "cn_stop": 0.6, "cn_weight": 0.6, "cn_type": "ImagePrompt"},
                {"cn_img": IMAGE_B64, "cn_stop": 0.6, "cn_weight": 0.6, "cn_type": "ImagePrompt"},
            ],
        },
    ),
    (
        TextToImageWithIPRequest,
        {
            "prompt": "A bear",
            "image_prompts": [
                {"cn_img": SOURCE_B64, "cn_stop": 0.6, "cn_weight": 0.6, "cn_type": "ImagePrompt"},
                {"cn_img": IMAGE_B64, "cn_stop": 0.6, "cn_weight": 0.6, "cn_type": "ImagePrompt"},
            ],
        },
    ),
]


@pytest.mark.parametrize("model,body", DOC_JSON_EXAMPLES)
def test_document_json_examples_validate(model, body):
    request = validate_request_json(model, json.dumps(body))
    for key, value in body.items():
        got = getattr(request, key)
        if key == "image_prompts":
            assert [p.model_dump(mode="json") for p in got] == value
        elif key == "outpaint_selections":
            assert [item.value for item in got] == value
        else:
            assert got == value


def test_document_v2_examples_keep_their_meaning():
    upscale = UpscaleVaryRequestV2.model_validate(DOC_JSON_EXAMPLES[1][1])
    assert upscale.uov_method is UpscaleOrVaryMethod.UPSCALE_2 and upscale.async_process is True
    outpaint = InpaintOutpaintRequestV2.model_validate(DOC_JSON_EXAMPLES[2][1])
    assert outpaint.outpaint_selections == [OutpaintExpansion.LEFT, OutpaintExpansion.RIGHT]
    assert outpaint.input_mask is None


def test_document_v1_form_examples_validate():
    # requests.post(data=params, files={...}) sends every value as a string part.
    upscale = parse_form(
        UpscaleVaryRequestV1,
        [("uov_method", "Upscale (2x)"), ("async_process", "True"), ("input_image", IMAGE)],
    )
    assert upscale.uov_method is UpscaleOrVaryMethod.UPSCALE_2 and upscale.async_process is True
    assert upscale.input_image == IMAGE

    outpaint = parse_form(
        InpaintOutpaintRequestV1,
        [("outpaint_selections", "Left,Right"), ("async_process", "True"), ("input_image", IMAGE)],
    )
    assert outpaint.outpaint_selections == [OutpaintExpansion.LEFT, OutpaintExpansion.RIGHT]
    assert outpaint.input_mask is None

    inpaint = parse_form(
        InpaintOutpaintRequestV1,
        [("prompt", "a cat"), ("async_process", "True"), ("input_image", IMAGE), ("input_mask", IMAGE)],
    )
    assert inpaint.prompt == "a cat" and inpaint.input_mask == IMAGE

    # A list value is sent as repeated parts; a list of dicts as their str() (ignored in v1).
    extend = parse_form(
        ImagePromptRequestV1,
        [("outpaint_selections", "Left"), ("outpaint_selections", "Right"), ("input_image", IMAGE)],
    )
    assert extend.outpaint_selections == [OutpaintExpansion.LEFT, OutpaintExpansion.RIGHT]
    prompt = parse_form(
        ImagePromptRequestV1,
        [
            ("prompt", "1girl sitting on the chair"),
            ("image_prompts", "{'cn_stop': 0.6, 'cn_weight': 0.6, 'cn_type': 'ImagePrompt'}"),
            ("cn_img1", IMAGE),
            ("cn_img2", IMAGE),
        ],
    )
    slots = prompt.image_prompts
    assert [slot.cn_img is not None for slot in slots] == [True, True, False, False]


def test_describe_request_accepts_the_document_query_name():
    assert DescribeImageRequest.model_validate({"image": IMAGE, "type": "Anime"}).image_type.value == "Anime"
    assert DescribeImageRequest.model_validate({"image": IMAGE, "image_type": "Photo"}).image_type.value == "Photo"
    assert DescribeImageRequest.model_validate({"image": IMAGE}).image_type.value == "Photo"
    assert _error(DescribeImageRequest, {"image": IMAGE, "image_type": "Drawing"})[0]["loc"] == ["body", "image_type"]


# ----------------------------------------------------------------- defaults

COMMON_DEFAULTS = {
    "prompt": "",
    "negative_prompt": "",
    "style_selections": ["Fooocus V2", "Fooocus Enhance", "Fooocus Sharp"],
    "performance_selection": "Speed",
    "aspect_ratios_selection": "1152*896",
    "image_number": 1,
    "image_seed": -1,
    "sharpness": 2.0,
    "guidance_scale": 4.0,
    "base_model_name": "juggernautXL_version6Rundiffusion.safetensors",
    "refiner_model_name": "None",
    "refiner_switch": 0.5,
    "require_base64": False,
    "save_meta": True,
    "meta_scheme": "fooocus",
    "save_extension": "png",
    "save_name": "",
    "read_wildcards_in_order": False,
    "async_process": False,
    "webhook_url": None,
}

ADVANCED_DEFAULTS = {
    "disable_preview": False,
    "disable_intermediate_results": False,
    "disable_seed_increment": False,
    "adm_scaler_positive": 1.5,
    "adm_scaler_negative": 0.8,
    "adm_scaler_end": 0.5,
    "refiner_swap_method": "joint",
    "adaptive_cfg": 7.0,
    "clip_skip": 2,
    "sampler_name": "dpmpp_2m_sde_gpu",
    "scheduler_name": "karras",
    "overwrite_step": -1,
    "overwrite_switch": -1,
    "overwrite_width": -1,
    "overwrite_height": -1,
    "overwrite_vary_strength": -1,
    "overwrite_upscale_strength": -1,
    "mixing_image_prompt_and_vary_upscale": False,
    "mixing_image_prompt_and_inpaint": False,
    "debugging_cn_preprocessor": False,
    "skipping_cn_preprocessor": False,
    "controlnet_softness": 0.25,
    "canny_low_threshold": 64,
    "canny_high_threshold": 128,
    "freeu_enabled": False,
    "freeu_b1": 1.01,
    "freeu_b2": 1.02,
    "freeu_s1": 0.99,
    "freeu_s2": 0.95,
    "debugging_inpaint_preprocessor": False,
    "inpaint_disable_initial_latent": False,
    "inpaint_engine": "v2.6",
    "inpaint_strength": 1.0,
    "inpaint_respective_field": 1.0,
    "inpaint_mask_upload_checkbox": False,
    "inpaint_advanced_masking_checkbox": True,
    "invert_mask_checkbox": False,
    "inpaint_erode_or_dilate": 0,
    "black_out_nsfw": False,
    "vae_name": "Default (model)",
    "debugging_dino": False,
    "dino_erode_or_dilate": 0,
    "debugging_enhance_masks_checkbox": False,
}


def test_common_defaults_match_the_document():
    dumped = CommonRequest().model_dump(mode="json")
    for key, value in COMMON_DEFAULTS.items():
        assert dumped[key] == value, key
    assert dumped["advanced_params"] == ADVANCED_DEFAULTS
    assert dumped["loras"] == [
        {"enabled": True, "model_name": "sd_xl_offset_example-lora_1.0.safetensors", "weight": 0.1}
    ] + [{"enabled": True, "model_name": "None", "weight": 1.0}] * 4


def test_route_defaults():
    v2_upscale = UpscaleVaryRequestV2(input_image=IMAGE_B64)
    assert v2_upscale.uov_method is UpscaleOrVaryMethod.UPSCALE_2 and v2_upscale.upscale_value is None
    inpaint = InpaintOutpaintRequestV2()
    assert inpaint.input_image == "" and inpaint.input_mask is None and inpaint.outpaint_selections == []
    assert inpaint.inpaint_additional_prompt == ""
    assert [inpaint.outpaint_distance_left, inpaint.outpaint_distance_right] == [0, 0]
    assert [inpaint.outpaint_distance_top, inpaint.outpaint_distance_bottom] == [0, 0]
    assert ImagePromptRequestV2(image_prompts=[]).input_image is None
    assert _error(ImagePromptRequestV2, {})[0]["loc"] == ["body", "image_prompts"]
    assert _error(UpscaleVaryRequestV2, {})[0]["loc"] == ["body", "input_image"]
    missing = {tuple(e["loc"]) for e in _error(UpscaleVaryRequestV1, {})}
    assert missing == {("body", "input_image"), ("body", "uov_method")}


def test_image_prompt_per_type_defaults():
    expected = {"ImagePrompt": (0.5, 0.6), "FaceSwap": (0.9, 0.75), "PyraCanny": (0.5, 1.0), "CPDS": (0.5, 1.0)}
    for cn_type, (stop, weight) in expected.items():
        for unset in (None, 0):
            item = ImagePrompt(cn_type=cn_type, cn_stop=unset, cn_weight=unset)
            assert (item.resolved_stop, item.resolved_weight) == (stop, weight)
    explicit = ImagePrompt(cn_type="FaceSwap", cn_stop=0.3, cn_weight=1.7)
    assert (explicit.resolved_stop, explicit.resolved_weight) == (0.3, 1.7)
    assert ImagePrompt().cn_type is ControlNetType.IMAGE_PROMPT


# ----------------------------------------------------------------- ranges and enums -> 422

RANGE_CASES = [
    ([], "image_number", 1, 32, 1),
    ([], "sharpness", 0.0, 30.0, 0.01),
    ([], "guidance_scale", 1.0, 30.0, 0.01),
    ([], "refiner_switch", 0.1, 1.0, 0.01),
    (["advanced_params"], "adm_scaler_positive", 0.1, 3.0, 0.01),
    (["advanced_params"], "adm_scaler_negative", 0.1, 3.0, 0.01),
    (["advanced_params"], "adm_scaler_end", 0.0, 1.0, 0.01),
    (["advanced_params"], "adaptive_cfg", 1.0, 30.0, 0.01),
    (["advanced_params"], "clip_skip", 1, 12, 1),
    (["advanced_params"], "overwrite_step", -1, 200, 1),
    (["advanced_params"], "overwrite_switch", -1, 200, 1),
    (["advanced_params"], "overwrite_width", -1, 2048, 1),
    (["advanced_params"], "overwrite_height", -1, 2048, 1),
    (["advanced_params"], "overwrite_vary_strength", -1, 1.0, 0.01),
    (["advanced_params"], "overwrite_upscale_strength", -1, 1.0, 0.01),
    (["advanced_params"], "canny_low_threshold", 1, 255, 1),
    (["advanced_params"], "canny_high_threshold", 1, 255, 1),
    (["advanced_params"], "controlnet_softness", 0.0, 1.0, 0.01),
    (["advanced_params"], "inpaint_strength", 0.0, 1.0, 0.01),
    (["advanced_params"], "inpaint_respective_field", 0.0, 1.0, 0.01),
    (["advanced_params"], "inpaint_erode_or_dilate", -64, 64, 1),
    (["advanced_params"], "dino_erode_or_dilate", -64, 64, 1),
]


def _nest(path, field, value):
    data = {field: value}
    for key in reversed(path):
        data = {key: data}
    return data


@pytest.mark.parametrize("path,field,low,high,step", RANGE_CASES)
def test_range_bounds(path, field, low, high, step):
    for good in (low, high):
        validate_request(CommonRequest, _nest(path, field, good))
    for bad, kind in ((low - step, "greater_than_equal"), (high + step, "less_than_equal")):
        errors = _error(CommonRequest, _nest(path, field, bad))
        assert [(e["loc"], e["type"]) for e in errors] == [(["body", *path, field], kind)]


def test_route_specific_ranges():
    assert _error(UpscaleVaryRequestV2, {"input_image": "x", "upscale_value": 5.5})[0]["loc"] == [
        "body", "upscale_value"]
    UpscaleVaryRequestV2(input_image="x", upscale_value=5.0)
    bad_stop = {"image_prompts": [{"cn_stop": 1.5}]}
    assert _error(ImagePromptRequestV2, bad_stop)[0]["loc"] == ["body", "image_prompts", 0, "cn_stop"]
    bad_weight = {"image_prompts": [{"cn_weight": 2.5}]}
    assert _error(ImagePromptRequestV2, bad_weight)[0]["loc"] == ["body", "image_prompts", 0, "cn_weight"]
    assert _error(Lora, {"model_name": "a", "weight": -2.1})[0]["loc"] == ["body", "weight"]


ENUM_CASES = [
    (CommonRequest, {"performance_selection": "Fast"}, ["performance_selection"]),
    (CommonRequest, {"meta_scheme": "exif"}, ["meta_scheme"]),
    (CommonRequest, {"save_extension": "gif"}, ["save_extension"]),
    (CommonRequest, {"advanced_params": {"refiner_swap_method": "swap"}}, ["advanced_params", "refiner_swap_method"]),
    (CommonRequest, {"advanced_params": {"inpaint_engine": "v3"}}, ["advanced_params", "inpaint_engine"]),
    (UpscaleVaryRequestV2, {"input_image": "x", "uov_method": "Vary"}, ["uov_method"]),
    (InpaintOutpaintRequestV2, {"outpaint_selections": ["Up"]}, ["outpaint_selections", 0]),
    (ImagePromptRequestV2, {"image_prompts": [{"cn_type": "Depth"}]}, ["image_prompts", 0, "cn_type"]),
]


@pytest.mark.parametrize("model,data,loc", ENUM_CASES)
def test_unknown_enum_values_are_rejected(model, data, loc):
    errors = _error(model, data)
    assert [(e["loc"], e["type"]) for e in errors] == [(["body", *loc], "enum")]


def test_enum_error_lists_all_performances():
    (error,) = _error(CommonRequest, {"performance_selection": "Fast"})
    assert error["msg"] == "Input should be 'Speed', 'Quality', 'Extreme Speed', 'Lightning' or 'Hyper-SD'"
    assert error["input"] == "Fast"
    assert set(PerformanceSelection) == {PerformanceSelection(v) for v in
                                         ["Speed", "Quality", "Extreme Speed", "Lightning", "Hyper-SD"]}


def test_meta_scheme_and_extension_spellings():
    assert CommonRequest(meta_scheme="a111").meta_scheme is MetaScheme.A1111
    assert CommonRequest(meta_scheme="a1111").meta_scheme is MetaScheme.A1111
    for extension in ("png", "jpeg", "jpg", "webp", "JPG"):
        assert CommonRequest(save_extension=extension).save_extension is OutputFormat(extension.lower())


# ----------------------------------------------------------------- runtime vocabularies

VOCABULARY = Vocabulary.of(
    styles=["Fooocus V2", "Fooocus Enhance", "Fooocus Sharp", "SAI Anime"],
    samplers=["euler", "dpmpp_2m_sde_gpu"],
    schedulers=["karras", "normal"],
)


def test_unknown_styles_are_listed():
    (error,) = _error(CommonRequest, {"style_selections": ["Fooocus V2", "Nope", "Also Nope"]}, VOCABULARY)
    assert error["loc"] == ["body", "style_selections"]
    assert "'Nope'" in error["msg"] and "'Also Nope'" in error["msg"]
    request = validate_request(CommonRequest, {"style_selections": ["sai anime"]}, VOCABULARY)
    assert request.style_selections == ["SAI Anime"]
    # Without a vocabulary names are not checked; the defaults pass with one.
    assert CommonRequest(style_selections=["Nope"]).style_selections == ["Nope"]
    validate_request(CommonRequest, {}, VOCABULARY)


def test_sampler_and_scheduler_checked_against_vocabulary():
    (error,) = _error(CommonRequest, {"advanced_params": {"sampler_name": "ddim"}}, VOCABULARY)
    assert error["loc"] == ["body", "advanced_params", "sampler_name"] and "'ddim'" in error["msg"]
    (error,) = _error(CommonRequest, {"advanced_params": {"scheduler_name": "turbo"}}, VOCABULARY)
    assert error["loc"] == ["body", "advanced_params", "scheduler_name"]
    ok = validate_request(CommonRequest, {"advanced_params": {"sampler_name": "euler"}}, VOCABULARY)
    assert ok.advanced_params.sampler_name == "euler"


# ----------------------------------------------------------------- field forms

@pytest.mark.parametrize(
    "text,expected",
    [("1152*896", "1152*896"), ("1152×896", "1152*896"), ("1024x1024", "1024*1024"),
     (" 896 * 1152 ", "896*1152"), ("1152×896 | 9:7", "1152*896"), ("1280*1280", "1280*1280"),
     ("64*4096", "64*4096")],
)
def test_aspect_ratio_forms(text, expected):
    assert CommonRequest(aspect_ratios_selection=text).aspect_ratios_selection == expected


@pytest.mark.parametrize("text", ["1152", "1152*", "a*b", "1150*896", "56*1024", "4104*1024", "1152/896"])
def test_bad_aspect_ratios(text):
    (error,) = _error(CommonRequest, {"aspect_ratios_selection": text})
    assert error["loc"] == ["body", "aspect_ratios_selection"] and error["type"] == "value_error"


def test_size_property():
    assert CommonRequest(aspect_ratios_selection="896×1152").size == (896, 1152)
    assert parse_aspect_ratio("704*1408") == (704, 1408)


def test_loras_enabled_default_limit_and_json():
    request = CommonRequest(loras=[{"model_name": "sd_xl_offset_example-lora_1.0.safetensors", "weight": 0.5}])
    assert request.loras[0].enabled is True
    six = [{"model_name": f"l{i}.safetensors", "weight": 0.1 * i} for i in range(6)]
    assert [lora.model_name for lora in CommonRequest(loras=six).loras] == [f"l{i}.safetensors" for i in range(5)]
    from_json = CommonRequest(loras=json.dumps([{"enabled": False, "model_name": "x", "weight": 1}]))
    assert from_json.loras == [Lora(enabled=False, model_name="x", weight=1.0)]
    mixed = CommonRequest(loras=[{"model_name": "a", "weight": 0.3}, {"enabled": False, "model_name": "b"},
                                 {"model_name": "None"}])
    assert mixed.active_loras() == [("a", 0.3)]
    assert _error(CommonRequest, {"loras": [{"weight": 1}]})[0]["loc"] == ["body", "loras", 0, "model_name"]


def test_misc_normalisation():
    assert CommonRequest(refiner_model_name="").refiner_model_name == "None"
    assert CommonRequest(webhook_url="").webhook_url is None
    assert CommonRequest(advanced_params=None).advanced_params == AdvancedParams()
    assert CommonRequest(advanced_params="None").advanced_params == AdvancedParams()
    assert CommonRequest(style_selections="Fooocus V2, Fooocus Sharp").style_selections == ["Fooocus V2", "Fooocus Sharp"]
    assert CommonRequest(image_seed=2**64).image_seed == 2**64  # random-seed request, not an error
    assert InpaintOutpaintRequestV2(outpaint_selections="left,TOP").outpaint_selections == [
        OutpaintExpansion.LEFT, OutpaintExpansion.TOP]
    assert InpaintOutpaintRequestV2(outpaint_distance_left=None).outpaint_distance_left == 0


# ----------------------------------------------------------------- 422 body shape

def test_validation_error_response_shape():
    body = {"image_number": 33}
    with pytest.raises(ValidationError) as info:
        validate_request(CommonRequest, body)
    response = validation_error_response(info.value, body=body)
    assert response == {
        "detail": [
            {
                "type": "less_than_equal",
                "loc": ["body", "image_number"],
                "msg": "Input should be less than or equal to 32",
                "input": 33,
                "ctx": {"le": 32},
            }
        ],
        "body": body,
    }
    # upload bytes in an error stay printable; non-JSON bodies are left out
    with pytest.raises(ValidationError) as info:
        validate_request(UpscaleVaryRequestV1, {"input_image": IMAGE, "uov_method": "x"})
    response = validation_error_response(info.value, body=object())
    assert "body" not in response and json.dumps(response)
    with pytest.raises(ValidationError) as info:
        validate_request(QueryJobRequest, {})
    assert validation_error_response(info.value, loc_prefix=("query",))["detail"][0]["loc"] == ["query", "job_id"]


def test_json_decode_error_response():
    with pytest.raises(json.JSONDecodeError) as info:
        validate_request_json(CommonRequest, b'{"prompt": ')
    response = json_decode_error_response(info.value, b'{"prompt": ')
    assert response["detail"][0]["type"] == "json_invalid"
    assert response["detail"][0]["loc"] == ["body", 11] and response["body"] == '{"prompt": '
    with pytest.raises(json.JSONDecodeError):
        validate_request_json(CommonRequest, b"\xff\xfe")


# ----------------------------------------------------------------- multipart forms

def test_form_field_mapping():
    fields = [
        ("prompt", "a bear"),
        ("style_selections", "Fooocus V2,Fooocus Enhance"),
        ("style_selections", "SAI Anime"),
        ("loras", json.dumps([{"model_name": "a.safetensors", "weight": 0.5}])),
        ("advanced_params", json.dumps({"sampler_name": "euler", "freeu_enabled": True})),
        ("image_number", "3"),
        ("require_base64", "on"),
        ("save_meta", "0"),
        ("upscale_value", ""),
        ("webhook_url", ""),
        ("uov_method", "Upscale (Custom)"),
        ("input_image", IMAGE),
        ("input_mask", b""),
    ]
    request = parse_form(UpscaleVaryRequestV1, fields, VOCABULARY)
    assert request.style_selections == ["Fooocus V2", "Fooocus Enhance", "SAI Anime"]
    assert request.loras == [Lora(model_name="a.safetensors", weight=0.5)]
    assert request.advanced_params.sampler_name == "euler" and request.advanced_params.freeu_enabled
    assert request.image_number == 3 and request.require_base64 is True and request.save_meta is False
    assert request.upscale_value is None and request.webhook_url is None
    assert "input_mask" not in form_to_dict(UpscaleVaryRequestV1, fields)


def test_form_defaults_and_json_list_values():
    request = parse_form(InpaintOutpaintRequestV1, [
        ("input_image", IMAGE), ("loras", ""), ("advanced_params", "None"),
        ("outpaint_selections", '["Left", "Bottom"]'), ("style_selections", '["Fooocus V2"]'),
    ])
    assert request.loras == CommonRequest().loras
    assert request.advanced_params == AdvancedParams()
    assert request.outpaint_selections == [OutpaintExpansion.LEFT, OutpaintExpansion.BOTTOM]
    assert request.style_selections == ["Fooocus V2"]


def test_form_errors_name_the_form_field():
    with pytest.raises(ValidationError) as info:
        parse_form(InpaintOutpaintRequestV1, [("advanced_params", "{not json"), ("image_number", "x")])
    locs = {tuple(e["loc"]) for e in validation_error_response(info.value)["detail"]}
    assert locs == {("body", "advanced_params"), ("body", "image_number"), ("body", "input_image")}
    with pytest.raises(ValidationError) as info:
        parse_form(ImagePromptRequestV1, [("cn_stop2", "1.5"), ("cn_type3", "Depth")])
    locs = {tuple(e["loc"]) for e in validation_error_response(info.value)["detail"]}
    assert locs == {("body", "cn_stop2"), ("body", "cn_type3")}


def test_form_image_prompt_slots():
    request = parse_form(ImagePromptRequestV1, [
        ("cn_img1", IMAGE), ("cn_type1", "FaceSwap"), ("cn_stop1", ""), ("cn_weight1", ""),
        ("cn_img3", IMAGE), ("cn_stop3", "0.4"), ("cn_weight3", "1.2"), ("cn_type3", "PyraCanny"),
    ])
    first, second, third, _ = request.image_prompts
    assert first.cn_img == IMAGE and (first.resolved_stop, first.resolved_weight) == (0.9, 0.75)
    assert second.cn_img is None
    assert (third.cn_type, third.resolved_stop, third.resolved_weight) == (ControlNetType.PYRA_CANNY, 0.4, 1.2)


def test_query_models():
    assert QueryJobRequest.model_validate({"job_id": "x", "require_step_preivew": "true"}).require_step_preview
    assert not QueryJobRequest.model_validate({"job_id": "x"}).require_step_preview
    history = JobHistoryRequest.model_validate({})
    assert (history.job_id, history.page, history.page_size, history.delete) == (None, 0, 20, False)
