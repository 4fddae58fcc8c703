"""What the Fooocus API hands out and takes in: response bodies, output naming, URLs, serving with traversal refusal,
Accept conversion, data URLs, deletion (OutputStore), and input image / mask decoding."""

import base64
import io
from datetime import date

import pytest
from PIL import Image
from pydantic import ValidationError

from server.fooocus.images import (
    binarize_mask,
    decode_input_image,
    decode_mask,
    read_image_input,
)
from server.fooocus.metadata import (
    EmbeddedMetadata,
    GenerationRecord,
    encode_image,
    read_metadata,
)
from server.fooocus.outputs import (
    OutputStore,
    accepted_extension,
    convert_for_accept,
    png_base64,
    safe_stem,
    to_data_url,
)
from server.fooocus.requests import MetaScheme
from server.fooocus.responses import (
    AllModelsResponse,
    AsyncJobResponse,
    DescribeImageResponse,
    GeneratedImageResult,
    JobHistoryResponse,
    JobQueueInfo,
    StopResponse,
    TaskType,
    WebhookPayload,
)

DAY = date(2024, 5, 6)
PICTURE = Image.new("RGB", (16, 12), (200, 40, 10))


@pytest.fixture
def store(tmp_path):
    return OutputStore(tmp_path / "outputs", "http://127.0.0.1:8888/", today=lambda: DAY)


def _record() -> GenerationRecord:
    return GenerationRecord(
        prompt="a fox", negative_prompt="", styles=[], performance="Speed", steps=30, width=16, height=12,
        guidance_scale=4.0, sharpness=2.0, adm_guidance=(1.5, 0.8, 0.3), base_model="base.safetensors",
        sampler="euler", scheduler="karras", seed=7,
    )


# ----------------------------------------------------------------- saving and naming

@pytest.mark.parametrize("extension,fmt", [("png", "PNG"), ("jpeg", "JPEG"), ("jpg", "JPEG"), ("webp", "WEBP")])
def test_save_naming_url_and_format(store, tmp_path, extension, fmt):
    saved = store.save(PICTURE, job_id="3f2a-job", index=1, extension=extension)
    assert saved.path == tmp_path / "outputs" / "files" / "2024-05-06" / f"3f2a-job-1.{extension}"
    assert saved.relative_path == f"2024-05-06/3f2a-job-1.{extension}"
    assert saved.url == f"http://127.0.0.1:8888/files/2024-05-06/3f2a-job-1.{extension}"
    with Image.open(saved.path) as image:
        assert image.format == fmt and image.size == (16, 12)
    assert not any(p.name.endswith(".partial") for p in saved.path.parent.iterdir())


def test_save_name_wins_and_is_made_safe(store):
    assert store.save(PICTURE, job_id="j", index=0, save_name="portrait").relative_path == "2024-05-06/portrait-0.png"
    escaped = store.save(PICTURE, job_id="j", index=2, save_name="../../etc/pass wd")
    assert escaped.relative_path == "2024-05-06/_.._etc_pass_wd-2.png"
    assert escaped.path.parent == store.files_dir / "2024-05-06"
    assert store.save(PICTURE, job_id="j", index=0, save_name="...").relative_path == "2024-05-06/j-0.png"
    assert safe_stem(".hidden") == "hidden" and safe_stem("a/b\\c") == "a_b_c"
    with pytest.raises(ValueError):
        store.save(PICTURE, job_id="", index=0)


def test_save_with_metadata(store):
    embedded = EmbeddedMetadata.of(_record(), MetaScheme.A1111)
    saved = store.save(PICTURE, job_id="j", index=0, extension="webp", metadata=embedded)
    found = read_metadata(saved.path)
    assert found.text == embedded.text and found.scheme is MetaScheme.A1111


# ----------------------------------------------------------------- serving

def test_resolve_and_traversal_refusal(store, tmp_path):
    saved = store.save(PICTURE, job_id="job", index=0)
    assert store.resolve("2024-05-06", "job-0.png") == saved.path.resolve()
    secret = tmp_path / "outputs" / "secret.png"
    secret.write_bytes(encode_image(PICTURE, "png"))
    (store.files_dir / "2024-05-06" / "link.png").symlink_to(secret)
    refused = [
        ("2024-05-06", "../../secret.png"),
        ("..", "secret.png"),
        ("2024-05-06/..", "job-0.png"),
        ("2024-05-06", ".."),
        ("2024-05-06", "link.png"),  # points outside files/
        ("2024-05-06", "job-0.txt"),
        ("2024-05-06", "job-0"),
        ("2024-05-06", "missing-0.png"),
        ("2024-05-06", "sub\\job-0.png"),
        ("2024-05-06", ".job-0.png.partial"),
    ]
    for day, name in refused:
        assert store.resolve(day, name) is None, (day, name)


def test_accept_conversion(store):
    embedded = EmbeddedMetadata.of(_record(), MetaScheme.FOOOCUS)
    saved = store.save(PICTURE, job_id="job", index=0, metadata=embedded)
    assert convert_for_accept(saved.path, None) is None
    assert convert_for_accept(saved.path, "image/png") is None  # already PNG: serve as is
    assert convert_for_accept(saved.path, "*/*") is None
    assert convert_for_accept(saved.path, "image/webp,image/png") is None
    for accept, fmt, media in [("image/webp", "WEBP", "image/webp"), ("image/jpeg", "JPEG", "image/jpeg"),
                               ("image/jpg", "JPEG", "image/jpeg"), ("image/webp; q=0.9", "WEBP", "image/webp")]:
        data, media_type = convert_for_accept(saved.path, accept)
        assert media_type == media
        with Image.open(io.BytesIO(data)) as image:
            assert image.format == fmt and image.size == (16, 12)
        assert read_metadata(data).text == embedded.text
    jpeg = store.save(PICTURE, job_id="job", index=1, extension="jpg")
    assert convert_for_accept(jpeg.path, "image/jpeg") is None
    assert Image.open(io.BytesIO(convert_for_accept(jpeg.path, "image/png")[0])).format == "PNG"
    assert accepted_extension("text/png") is None and accepted_extension("IMAGE/WEBP") == "webp"


def test_base64_forms(store):
    saved = store.save(PICTURE, job_id="job", index=0, extension="webp")
    url = store.data_url(saved)
    assert url.startswith("data:image/webp;base64,")
    assert base64.b64decode(url.split(",", 1)[1]) == saved.path.read_bytes()
    assert to_data_url(b"abc", "png") == "data:image/png;base64,YWJj"
    assert to_data_url(b"abc", "jpg").startswith("data:image/jpeg;base64,")
    raw = png_base64(PICTURE)
    assert not raw.startswith("data:")
    assert Image.open(io.BytesIO(base64.b64decode(raw))).format == "PNG"


def test_delete_job_files(store, tmp_path):
    first = store.save(PICTURE, job_id="job", index=0)
    second = store.save(PICTURE, job_id="job", index=1)
    other = store.save(PICTURE, job_id="other", index=0)
    outside = tmp_path / "outputs" / "keep.png"
    outside.write_bytes(b"x")
    removed = store.delete([first.url, second.relative_path, "2024-05-06/../../keep.png", "nonsense"])
    assert removed == 2
    assert not first.path.exists() and not second.path.exists()
    assert other.path.exists() and outside.exists()
    assert store.delete([other.url]) == 1
    assert not (store.files_dir / "2024-05-06").exists()  # empty date folder removed


# ----------------------------------------------------------------- input images

def _encoded(image: Image.Image, fmt: str = "PNG") -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt)
    return buffer.getvalue()


RGB_BYTES = _encoded(PICTURE)
RGB_B64 = base64.b64encode(RGB_BYTES).decode()


@pytest.mark.parametrize(
    "value",
    [
        RGB_B64,
        "data:image/png;base64," + RGB_B64,
        "\n".join(RGB_B64[i:i + 60] for i in range(0, len(RGB_B64), 60)),
        RGB_B64.rstrip("="),
        base64.urlsafe_b64encode(RGB_BYTES).decode(),
        RGB_BYTES,
    ],
)
def test_decode_input_image_forms(value):
    image = decode_input_image(value, "input_image")
    assert image.mode == "RGB" and image.size == (16, 12)
    assert image.getpixel((3, 3)) == (200, 40, 10)


@pytest.mark.parametrize("value", [None, "", "None", "null", "string", b""])
def test_no_image_values(value):
    assert decode_input_image(value, "input_image") is None


def test_decode_errors_name_the_field():
    with pytest.raises(ValueError, match=r"^cn_img: not valid base64"):
        decode_input_image("not base64 at all!", "cn_img")
    with pytest.raises(ValueError, match=r"^input_image: could not decode the image"):
        decode_input_image(base64.b64encode(b"plain text").decode(), "input_image")
    with pytest.raises(ValueError, match=r"^input_mask: could not decode the image"):
        decode_mask(RGB_BYTES[:40], "input_mask")  # truncated upload
    with pytest.raises(ValueError, match=r"^input_image: a data URL"):
        decode_input_image("data:image/png," + RGB_B64, "input_image")
    with pytest.raises(ValueError, match=r"^input_image: image URLs are not fetched"):
        decode_input_image("https://example.com/a.png", "input_image")


def test_url_inputs_use_the_given_fetcher():
    seen = []
    image = decode_input_image("https://example.com/a.png", "input_image",
                               fetch_url=lambda url: seen.append(url) or RGB_BYTES)
    assert seen == ["https://example.com/a.png"] and image.size == (16, 12)

    def failing(url):
        raise TimeoutError("timed out")

    with pytest.raises(ValueError, match=r"^input_image: could not fetch the image URL \(timed out\)"):
        decode_input_image("http://example.com/a.png", "input_image", fetch_url=failing)


def test_transparency_is_composited_on_white_and_gray_expanded():
    rgba = Image.new("RGBA", (4, 4), (255, 0, 0, 0))
    rgba.putpixel((0, 0), (0, 0, 255, 255))
    rgba.putpixel((1, 0), (0, 0, 0, 128))
    image = decode_input_image(_encoded(rgba), "input_image")
    assert image.getpixel((0, 0)) == (0, 0, 255)
    assert image.getpixel((2, 2)) == (255, 255, 255)
    assert all(abs(c - 127) <= 1 for c in image.getpixel((1, 0)))
    gray = decode_input_image(_encoded(Image.new("L", (4, 4), 77)), "input_image")
    assert gray.mode == "RGB" and gray.getpixel((0, 0)) == (77, 77, 77)
    sixteen = Image.new("I;16", (4, 4), 65535)
    assert decode_input_image(_encoded(sixteen), "input_image").getpixel((0, 0)) == (255, 255, 255)


def test_mask_decoding():
    # RGBA mask: transparent -> white -> repaint; opaque black -> keep.
    rgba = Image.new("RGBA", (4, 4), (0, 0, 0, 0))
    rgba.putpixel((0, 0), (0, 0, 0, 255))
    mask = decode_mask(_encoded(rgba), "input_mask")
    assert mask.mode == "L" and mask.getpixel((0, 0)) == 0 and mask.getpixel((3, 3)) == 255
    gray = Image.new("L", (4, 4), 100)
    assert decode_mask(base64.b64encode(_encoded(gray)).decode(), "input_mask").getpixel((1, 1)) == 100
    colour = decode_mask(_encoded(Image.new("RGB", (4, 4), (200, 0, 0))), "input_mask")
    assert colour.getpixel((0, 0)) == 200  # channel 0, as the reference server reads masks
    assert decode_mask(None) is None
    binary = binarize_mask(Image.frombytes("L", (4, 1), bytes([0, 127, 128, 255])))
    assert binary.tobytes() == bytes([0, 0, 255, 255])


def test_read_image_input_keeps_mode():
    rgba = Image.new("RGBA", (2, 2), (1, 2, 3, 4))
    assert read_image_input(_encoded(rgba), "input_image").mode == "RGBA"


# ----------------------------------------------------------------- responses

def test_response_examples_of_the_document():
    models = {
        "model_filenames": ["juggernautXL_version6Rundiffusion.safetensors", "sd_xl_base_1.0_0.9vae.safetensors",
                            "sd_xl_refiner_1.0_0.9vae.safetensors"],
        "lora_filenames": ["sd_xl_offset_example-lora_1.0.safetensors"],
    }
    assert AllModelsResponse.model_validate(models).model_dump(mode="json") == models
    queue = {"running_size": 0, "finished_size": 1, "last_job_id": "cac3914a-926d-4b6f-a46a-83794a0ce1d4"}
    assert JobQueueInfo.model_validate(queue).model_dump(mode="json") == queue
    assert StopResponse().model_dump() == {"msg": "success"}
    describe = {"describe": "a young woman posing with her hands behind her head"}
    assert DescribeImageResponse.model_validate(describe).model_dump() == describe
    history = JobHistoryResponse(history=[{"job_id": "cac3914a-926d-4b6f-a46a-83794a0ce1d4", "is_finished": True}])
    assert history.model_dump(mode="json") == {
        "queue": [],
        "history": [{"job_id": "cac3914a-926d-4b6f-a46a-83794a0ce1d4", "in_queue_mills": 0, "start_mills": 0,
                     "finish_mills": 0, "is_finished": True}],
    }
    # The document's query-job example shows the seed as a number; the API answers a string.
    job = AsyncJobResponse.model_validate({
        "job_id": "cac3914a-926d-4b6f-a46a-83794a0ce1d4", "job_type": "Text to Image", "job_stage": "SUCCESS",
        "job_progress": 100, "job_status": "Finished", "job_step_preview": None,
        "job_result": [{"base64": None, "url": "http://127.0.0.1:8888/files/2023-11-27/b928e50e.png",
                        "seed": 8228839561385006000, "finish_reason": "SUCCESS"}],
    })
    assert job.model_dump(mode="json")["job_result"][0]["seed"] == "8228839561385006000"
    webhook = {"job_id": "717ec0b5", "job_result": [{"url": "http://127.0.0.1:8888/files/2023-12-29/f1.png",
                                                      "seed": "3283449865282320931"}]}
    assert WebhookPayload.model_validate(webhook).model_dump(mode="json") == webhook


def test_special_job_responses():
    assert AsyncJobResponse.queue_full(TaskType.TEXT_TO_IMAGE).model_dump(mode="json") == {
        "job_id": "", "job_type": "Text to Image", "job_stage": "ERROR", "job_progress": 0, "job_status": None,
        "job_step_preview": None,
        "job_result": [{"base64": None, "url": None, "seed": "", "finish_reason": "QUEUE_IS_FULL"}],
    }
    assert AsyncJobResponse.not_found().model_dump(mode="json") == {
        "job_id": "", "job_type": "Not Found", "job_stage": "ERROR", "job_progress": 0,
        "job_status": "Job not found", "job_step_preview": None, "job_result": None,
    }
    submitted = AsyncJobResponse.submitted("abc", TaskType.UPSCALE_OR_VARY).model_dump(mode="json")
    assert submitted["job_stage"] == "WAITING" and submitted["job_type"] == "Image Upscale or Variation"
    assert GeneratedImageResult(seed=5).seed == "5"
    with pytest.raises(ValidationError):
        GeneratedImageResult(finish_reason="DONE")
