"""Fooocus-API routes that take input images (v1 multipart forms, v2 JSON with base64 or URLs).

Each route validates the body into its request model (422 naming the field), decodes every image
once (422 naming the field on any failure: bad base64, not an image, truncated, too big, too
small, an unreachable or refused URL), stores it in the input folder and submits the job with the
stored file's name in place of the image, through the same path as text-to-image.
"""
from __future__ import annotations

import json
from typing import Any, Callable

import pydantic
from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

from server.jobs import JobType

from .forms import parse_form
from .images import check_generation_input, load_image_input, to_rgb
from .input_store import InputImageStore
from .requests import (IMAGE_PROMPT_SLOTS, ImagePromptRequestV1, ImagePromptRequestV2, InpaintOutpaintRequestV1,
                       InpaintOutpaintRequestV2, TextToImageWithIPRequest, UpscaleVaryRequestV1,
                       UpscaleVaryRequestV2)
from .routes import FooocusRoutes, read_json_body, unprocessable
from .url_fetch import UrlFetcher
from .validation import validate_request, validation_error_response

# Request fields not stored with the job as sent: images travel as stored files (image prompts
# are stored as a list of slots naming their files); v1's flat cn_* slots become that list.
NOT_STORED = ("image_prompts",) + tuple(f"cn_{part}{slot}" for slot in range(1, IMAGE_PROMPT_SLOTS + 1)
                                        for part in ("img", "stop", "weight", "type"))


class ImageInputError(ValueError):
    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


def input_error_response(error: ImageInputError) -> web.Response:
    location = [int(part) if part.isdigit() else part for part in error.field.split(".")]
    return unprocessable({"detail": [{"type": "value_error", "loc": ["body", *location], "msg": str(error),
                                      "input": None}]})


async def read_form_fields(request: web.Request) -> list[tuple[str, Any]]:
    """(name, str | bytes) pairs of a multipart or urlencoded body, in arrival order."""
    try:
        form = await request.post()
    except (ValueError, HttpProcessingError) as exc:  # a malformed multipart body (bad part headers too)
        raise web.HTTPUnprocessableEntity(
            text=json.dumps({"detail": [{"type": "value_error", "loc": ["body"],
                                         "msg": f"expected a multipart form: {exc}", "input": None}]}),
            content_type="application/json")
    fields = []
    for name, value in form.items():
        if isinstance(value, web.FileField):
            fields.append((name, value.file.read()))
        else:
            fields.append((name, value))
    return fields


class ImageRoutes:
    def __init__(self, base: FooocusRoutes, inputs: InputImageStore, fetcher: UrlFetcher,
                 vocabulary: Callable) -> None:
        self.base = base
        self.inputs = inputs
        self.fetcher = fetcher
        self.vocabulary = vocabulary

    def routes(self) -> list[tuple[str, str, Any]]:
        return [
            ("POST", "/v1/generation/image-upscale-vary", self.upscale_vary_v1),
            ("POST", "/v2/generation/image-upscale-vary", self.upscale_vary_v2),
            ("POST", "/v1/generation/image-inpaint-outpaint", self.inpaint_outpaint_v1),
            ("POST", "/v2/generation/image-inpaint-outpaint", self.inpaint_outpaint_v2),
            # the paths of Fooocus-API up to v0.3.29, whose clients still send them
            ("POST", "/v1/generation/image-inpait-outpaint", self.inpaint_outpaint_v1),
            ("POST", "/v2/generation/image-inpait-outpaint", self.inpaint_outpaint_v2),
            ("POST", "/v1/generation/image-prompt", self.image_prompt_v1),
            ("POST", "/v2/generation/image-prompt", self.image_prompt_v2),
            ("POST", "/v2/generation/text-to-image-with-ip", self.text_to_image_with_ip),
        ]

    # --- Upscale or Vary ----------------------------------------------------------------------
    async def upscale_vary_v1(self, request: web.Request) -> web.StreamResponse:
        fields = await read_form_fields(request)
        try:
            parsed = parse_form(UpscaleVaryRequestV1, fields, self.vocabulary())
        except pydantic.ValidationError as exc:
            return unprocessable(validation_error_response(exc))
        return await self._submit(request, JobType.IMAGE_UPSCALE_VARY.value, parsed, {"input_image": True})

    async def upscale_vary_v2(self, request: web.Request) -> web.StreamResponse:
        body = await read_json_body(request)
        try:
            parsed = validate_request(UpscaleVaryRequestV2, body, self.vocabulary())
        except pydantic.ValidationError as exc:
            return unprocessable(validation_error_response(exc, body))
        return await self._submit(request, JobType.IMAGE_UPSCALE_VARY.value, parsed, {"input_image": True})

    # --- Inpaint or Outpaint -------------------------------------------------------------------
    async def inpaint_outpaint_v1(self, request: web.Request) -> web.StreamResponse:
        fields = await read_form_fields(request)
        try:
            parsed = parse_form(InpaintOutpaintRequestV1, fields, self.vocabulary())
        except pydantic.ValidationError as exc:
            return unprocessable(validation_error_response(exc))
        return await self._submit(request, JobType.IMAGE_INPAINT_OUTPAINT.value, parsed,
                                  {"input_image": True, "input_mask": False})

    async def inpaint_outpaint_v2(self, request: web.Request) -> web.StreamResponse:
        """An empty `input_image` makes the request text-to-image, as in Fooocus-API."""
        body = await read_json_body(request)
        try:
            parsed = validate_request(InpaintOutpaintRequestV2, body, self.vocabulary())
        except pydantic.ValidationError as exc:
            return unprocessable(validation_error_response(exc, body))
        return await self._submit(request, JobType.IMAGE_INPAINT_OUTPAINT.value, parsed,
                                  {"input_image": False, "input_mask": False})

    # --- Image prompt -------------------------------------------------------------------------
    async def image_prompt_v1(self, request: web.Request) -> web.StreamResponse:
        fields = await read_form_fields(request)
        try:
            parsed = parse_form(ImagePromptRequestV1, fields, self.vocabulary())
        except pydantic.ValidationError as exc:
            return unprocessable(validation_error_response(exc))
        prompts = [(f"cn_img{slot}", prompt) for slot, prompt in enumerate(parsed.image_prompts, start=1)]
        return await self._submit(request, JobType.IMAGE_PROMPT.value, parsed,
                                  {"input_image": False, "input_mask": False}, prompts)

    async def image_prompt_v2(self, request: web.Request) -> web.StreamResponse:
        body = await read_json_body(request)
        try:
            parsed = validate_request(ImagePromptRequestV2, body, self.vocabulary())
        except pydantic.ValidationError as exc:
            return unprocessable(validation_error_response(exc, body))
        prompts = [(f"image_prompts.{index}.cn_img", prompt) for index, prompt in enumerate(parsed.image_prompts)]
        return await self._submit(request, JobType.IMAGE_PROMPT.value, parsed,
                                  {"input_image": False, "input_mask": False}, prompts)

    async def text_to_image_with_ip(self, request: web.Request) -> web.StreamResponse:
        body = await read_json_body(request)
        try:
            parsed = validate_request(TextToImageWithIPRequest, body, self.vocabulary())
        except pydantic.ValidationError as exc:
            return unprocessable(validation_error_response(exc, body))
        prompts = [(f"image_prompts.{index}.cn_img", prompt) for index, prompt in enumerate(parsed.image_prompts)]
        return await self._submit(request, JobType.TEXT_TO_IMAGE.value, parsed, {}, prompts)

    # --- shared -------------------------------------------------------------------------------
    async def _submit(self, request: web.Request, job_type: str, parsed: pydantic.BaseModel,
                      image_fields: dict[str, bool], image_prompts=None) -> web.StreamResponse:
        """Decode and store the images named in `image_fields` (field -> required) and those of
        `image_prompts` ((field name, ImagePrompt) pairs; entries without an image are dropped;
        the request models allow at most four with an image), then submit."""
        stored: dict = {}
        names: list[str] = []
        try:
            for field, required in image_fields.items():
                stored[field] = await self._store_image(getattr(parsed, field), field, required)
                names.append(stored[field])
            if image_prompts is not None:
                slots = []
                for field, prompt in image_prompts:
                    name = await self._store_image(prompt.cn_img, field, required=False)
                    if name is not None:
                        names.append(name)
                        slots.append({"cn_img": name, "cn_stop": prompt.cn_stop, "cn_weight": prompt.cn_weight,
                                      "cn_type": prompt.cn_type.value})
                stored["image_prompts"] = slots
        except ImageInputError as error:
            self.inputs.delete(name for name in names if name)
            return input_error_response(error)
        response = await self.base.generate(request, job_type, parsed, stored_images=stored, exclude=NOT_STORED)
        if response.status >= 400:  # nothing was queued: the stored inputs have no job to serve
            self.inputs.delete(name for name in names if name)
        return response

    async def _store_image(self, value, field: str, required: bool) -> str | None:
        try:
            image = await load_image_input(value, field, self.fetcher)
            if image is None:
                if required:
                    raise ValueError(f"{field}: an image is required")
                return None
            image = check_generation_input(to_rgb(image), field)
        except ValueError as error:
            message = str(error)
            raise ImageInputError(field, message if message.startswith(field) else f"{field}: {message}") from None
        return self.inputs.save(image, field)
