"""The OpenAPI 3.1 document of the Fooocus API, built from the pydantic request and response models.

The document lists exactly the routes the server mounts (every route pack's `routes()` plus `/ping`):
each (method, path) is looked up in `OPERATIONS`, which says which models describe it. A mounted
route missing from the table still appears, described only by its handler's docstring, and
`undocumented_routes()` names it so a test can insist every route is described properly.

Schemas come from `pydantic.json_schema.models_json_schema`, requests in validation mode and
responses in serialization mode, all under `#/components/schemas`.
"""
from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Any, Iterable, Optional, Union

from pydantic import AliasChoices, BaseModel, Field
from pydantic.json_schema import models_json_schema

from .describe import DescribeForm, DescribeQuery, DescribeResponse
from .requests import (CommonRequest, ImagePromptRequestV1, ImagePromptRequestV2, InpaintOutpaintRequestV1,
                       InpaintOutpaintRequestV2, JobHistoryRequest, QueryJobRequest, TextToImageWithIPRequest,
                       UpscaleVaryRequestV1, UpscaleVaryRequestV2)
from .responses import (
    AllModelsResponse,
    AsyncJobResponse,
    GeneratedImageResult,
    JobHistoryResponse,
    JobQueueInfo,
    MessageResponse,
    StopResponse,
)

OPENAPI_VERSION = "3.1.0"
# The Fooocus-API release whose routes and shapes this server reproduces (specs/fooocus_api.md).
COMPATIBLE_VERSION = "0.5.0.1"
SECURITY_SCHEME = "APIKeyHeader"
API_KEY_HEADER = "X-API-KEY"
COMPONENTS_REF = "#/components/schemas/{model}"

# Hints the request models cannot express (their validators check more than a JSON schema can);
# they steer clients and fuzzers towards the accepted spelling.
PROPERTY_HINTS: dict[str, dict[str, Any]] = {
    "aspect_ratios_selection": {
        "pattern": r"^\s*\d+\s*[*×xX]\s*\d+",
        "examples": ["1152*896", "1024*1024", "896*1152"],
        "description": "width*height, each a multiple of 8 between 64 and 4096",
    },
}


# --- models that exist only to describe answers ------------------------------------------------
class ValidationErrorItem(BaseModel):
    """One pydantic error in FastAPI's shape (no `url`)."""

    type: str
    loc: list[Union[str, int]]
    msg: str
    input: Any = None
    ctx: Optional[dict[str, Any]] = None


class HTTPValidationError(BaseModel):
    """422: the request did not validate. `body` echoes a JSON body when there was one."""

    detail: list[ValidationErrorItem]
    body: Any = None


class Forbidden(BaseModel):
    """403 when the server runs with --apikey and X-API-KEY is missing or wrong."""

    detail: str = "Forbidden"


class CancelQuery(BaseModel):
    """POST /v1/generation/cancel (our extension; a JSON body `{"job_id": ...}` also works)."""

    job_id: str


class GenerationQuery(BaseModel):
    """Query parameters every generation route reads."""

    accept: Optional[str] = Field(None, description="`image/png` streams the first image as PNG bytes "
                                                    "(the `Accept` header does the same; the query wins)")


class FileLocation(BaseModel):
    """Path parameters of /files/{date}/{file_name}."""

    date: str = Field(description="the output folder's day, YYYY-MM-DD")
    file_name: str = Field(description="the image file name from a result `url`")


# --- what describes each route -------------------------------------------------------------------
@dataclass(frozen=True)
class Reply:
    """One documented answer: a status's description and its body per media type.

    A body is a model class, `[Model]` (a JSON array of it) or a raw JSON schema dict.
    """

    description: str
    content: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Operation:
    summary: str
    tag: str
    description: str = ""
    body: Optional[type[BaseModel]] = None
    query: Optional[type[BaseModel]] = None
    path: Optional[type[BaseModel]] = None
    replies: dict[str, Reply] = field(default_factory=dict)
    validates: bool = False  # answers 422 with HTTPValidationError
    public: bool = False  # served without X-API-KEY (the middleware's PUBLIC_PREFIXES)
    body_media: str = "application/json"  # "multipart/form-data" for the v1 image routes


JSON = "application/json"
MULTIPART = "multipart/form-data"
BINARY = {"type": "string", "format": "binary"}
TEXT = {"type": "string"}

JOB_ANSWER = Reply("Sync: one result per image. Async (`async_process`): the queued job.",
                   {JSON: {"anyOf": [[GeneratedImageResult], AsyncJobResponse]}, "image/png": BINARY})
GENERATION_REPLIES = {
    "200": JOB_ANSWER,
    "400": Reply("PNG streaming only: the job was stopped (`USER_CANCEL`)", {"text/plain": TEXT}),
    "409": Reply("PNG streaming only: the queue is full (`QUEUE_IS_FULL`)", {"text/plain": TEXT}),
    "500": Reply("PNG streaming only: the job failed (`ERROR`) or produced no image", {"text/plain": TEXT}),
}
NOT_FOUND_JOB = Reply("No job with this id", {JSON: AsyncJobResponse})

OPERATIONS: dict[tuple[str, str], Operation] = {
    ("GET", "/"): Operation(
        "Index", "Default", "A link to these docs.",
        replies={"200": Reply("HTML", {"text/html": TEXT})}),
    ("GET", "/ping"): Operation(
        "Ping", "Default", "Liveness check; answers the JSON string `\"pong\"`.",
        replies={"200": Reply("pong", {JSON: {"type": "string", "const": "pong"}})}),
    ("POST", "/v1/generation/text-to-image"): Operation(
        "Text to image", "GenerateV1",
        "Generate images from a prompt. The body is read as JSON whatever its Content-Type. "
        "Blocks until the job ends unless `async_process` is true.",
        body=CommonRequest, query=GenerationQuery, replies=GENERATION_REPLIES, validates=True),
    ("POST", "/v1/generation/image-upscale-vary"): Operation(
        "Upscale or vary", "GenerateV1",
        "Upscale (super-resolution, then re-diffusion at denoise 0.382) or vary (denoise 0.5 / 0.85) an "
        "uploaded image. Multipart: `input_image` is a file part, every other field a form field "
        "(`loras` and `advanced_params` as JSON text, `style_selections` comma-separated).",
        body=UpscaleVaryRequestV1, body_media=MULTIPART, query=GenerationQuery, replies=GENERATION_REPLIES,
        validates=True),
    ("POST", "/v2/generation/image-upscale-vary"): Operation(
        "Upscale or vary", "GenerateV2",
        "As the v1 route, with a JSON body: `input_image` is base64 (optionally a `data:image/...;base64,` "
        "URL) or an http(s) URL to a public address; `image_prompts` with images apply to Vary and Upscale.",
        body=UpscaleVaryRequestV2, query=GenerationQuery, replies=GENERATION_REPLIES, validates=True),
    ("POST", "/v1/tools/describe-image"): Operation(
        "Describe an image", "Tools",
        "A BLIP caption (`Photo`) or WD14 tags (`Anime`) of the uploaded image. Not queued: it answers "
        "while generation jobs run. `type` is the old name of `image_type`.",
        body=DescribeForm, body_media=MULTIPART, query=DescribeQuery, validates=True,
        replies={"200": Reply("The description", {JSON: DescribeResponse}),
                 "503": Reply("A describe model file is missing (the message names it and its folder), or "
                              "describe is busy", {JSON: {"type": "object", "properties": {"detail": TEXT}}}),
                 "504": Reply("Describe took too long", {JSON: {"type": "object", "properties": {"detail": TEXT}}})}),
    ("POST", "/v1/generation/image-inpaint-outpaint"): Operation(
        "Inpaint or outpaint", "GenerateV1",
        "Repaint the white part of `input_mask` (optional file part) and/or extend the image to the "
        "`outpaint_selections` sides (comma-separated). Neither a mask with white pixels nor a side: "
        "text-to-image. Multipart, as the other v1 image routes.",
        body=InpaintOutpaintRequestV1, body_media=MULTIPART, query=GenerationQuery, replies=GENERATION_REPLIES,
        validates=True),
    ("POST", "/v2/generation/image-inpaint-outpaint"): Operation(
        "Inpaint or outpaint", "GenerateV2",
        "As the v1 route, with a JSON body: images as base64 or http(s) URLs, `outpaint_selections` a list. "
        "An empty `input_image` makes it text-to-image.",
        body=InpaintOutpaintRequestV2, query=GenerationQuery, replies=GENERATION_REPLIES, validates=True),
    ("POST", "/v1/generation/image-inpait-outpaint"): Operation(
        "Inpaint or outpaint (old path)", "GenerateV1", "Fooocus-API <= 0.3.29's spelling of the v1 route.",
        body=InpaintOutpaintRequestV1, body_media=MULTIPART, query=GenerationQuery, replies=GENERATION_REPLIES,
        validates=True),
    ("POST", "/v2/generation/image-inpait-outpaint"): Operation(
        "Inpaint or outpaint (old path)", "GenerateV2", "Fooocus-API <= 0.3.29's spelling of the v2 route.",
        body=InpaintOutpaintRequestV2, query=GenerationQuery, replies=GENERATION_REPLIES, validates=True),
    ("POST", "/v1/generation/image-prompt"): Operation(
        "Image prompt", "GenerateV1",
        "Text-to-image guided by up to four image prompts: file parts `cn_img1..4` with `cn_type1..4` "
        "(ImagePrompt, FaceSwap, PyraCanny, CPDS), `cn_stop1..4`, `cn_weight1..4` (0 or empty: the type's "
        "default). `input_image`/`input_mask` make it an inpaint/outpaint request, with the image prompts "
        "mixed in when there are any.",
        body=ImagePromptRequestV1, body_media=MULTIPART, query=GenerationQuery, replies=GENERATION_REPLIES,
        validates=True),
    ("POST", "/v2/generation/image-prompt"): Operation(
        "Image prompt", "GenerateV2",
        "As the v1 route, with a JSON body: `image_prompts` (required, may be empty) lists "
        "{cn_img (base64 or URL), cn_stop, cn_weight, cn_type}.",
        body=ImagePromptRequestV2, query=GenerationQuery, replies=GENERATION_REPLIES, validates=True),
    ("POST", "/v2/generation/text-to-image-with-ip"): Operation(
        "Text to image with image prompts", "GenerateV2",
        "Text-to-image plus `image_prompts` (at most four with an image; more is a 422).",
        body=TextToImageWithIPRequest, query=GenerationQuery, replies=GENERATION_REPLIES, validates=True),
    ("GET", "/v1/generation/query-job"): Operation(
        "Query a job", "Query",
        "Stage, progress and (when finished) results of a job. `require_step_preview` adds the latest "
        "preview as base64 PNG.",
        query=QueryJobRequest, replies={"200": Reply("The job", {JSON: AsyncJobResponse}), "404": NOT_FOUND_JOB},
        validates=True),
    ("GET", "/v1/generation/job-queue"): Operation(
        "Job queue", "Query", replies={"200": Reply("Queue sizes", {JSON: JobQueueInfo})}),
    ("GET", "/v1/generation/job-history"): Operation(
        "Job history", "Query",
        "Waiting/running jobs and finished jobs (oldest first), paged by `page`/`page_size`, filtered by "
        "`job_id`. `delete=true` with `job_id` deletes a finished job and its files.",
        query=JobHistoryRequest,
        replies={"200": Reply("History, or the delete outcome (`Deleted` / `Not found`)",
                              {JSON: {"anyOf": [JobHistoryResponse, MessageResponse]}})},
        validates=True),
    ("POST", "/v1/generation/stop"): Operation(
        "Stop the running job", "GenerateV1", replies={"200": Reply("Always success", {JSON: StopResponse})}),
    ("POST", "/v1/generation/cancel"): Operation(
        "Cancel a job", "GenerateV1",
        "Our extension: cancel one job by id, waiting (removed from the queue) or running (interrupted). "
        "Answers the job as query-job does.",
        query=CancelQuery, replies={"200": Reply("The job", {JSON: AsyncJobResponse}), "404": NOT_FOUND_JOB},
        validates=True),
    ("GET", "/v1/engines/all-models"): Operation(
        "All models", "Query", "Rescans the model folders.",
        replies={"200": Reply("Checkpoint and LoRA file names", {JSON: AllModelsResponse})}),
    ("POST", "/v1/engines/refresh-models"): Operation(
        "Refresh models", "Query", "Removed upstream; kept as an alias of all-models.",
        replies={"200": Reply("Checkpoint and LoRA file names", {JSON: AllModelsResponse})}),
    ("GET", "/v1/engines/styles"): Operation(
        "Styles", "Query",
        replies={"200": Reply("Style names", {JSON: {"type": "array", "items": {"type": "string"}}})}),
    ("GET", "/v1/engines/clean_vram"): Operation(
        "Free model memory", "Query", "Unloads models from the GPU.",
        replies={"200": Reply("ok", {JSON: MessageResponse})}),
    ("GET", "/files/{date}/{file_name}"): Operation(
        "Output image", "Default",
        "An image a job saved. `Accept: image/png|image/jpeg|image/webp` converts it.",
        path=FileLocation, public=True,
        replies={"200": Reply("The image", {"image/png": BINARY, "image/jpeg": BINARY, "image/webp": BINARY}),
                 "404": Reply("No such file", {"text/plain": TEXT})}),
}


def undocumented_routes(routes: Iterable[tuple[str, str]]) -> list[tuple[str, str]]:
    """Mounted routes that `OPERATIONS` does not describe (they get a bare entry)."""
    return [(method, path) for method, path in routes if (method, path) not in OPERATIONS]


def _fallback(handler: Any) -> Operation:
    doc = inspect.getdoc(handler) or ""
    return Operation(doc.splitlines()[0] if doc else "Undocumented", "Default", doc,
                     replies={"200": Reply("Successful response", {JSON: {}})})


class _Schemas:
    """Collects the models the operations mention, then hands out their `$ref`s."""

    def __init__(self) -> None:
        self.wanted: dict[tuple[type[BaseModel], str], None] = {}
        self.refs: dict[tuple[type[BaseModel], str], dict] = {}
        self.components: dict[str, Any] = {}

    def want(self, model: type[BaseModel], mode: str) -> None:
        self.wanted[(model, mode)] = None

    def want_body(self, body: Any, mode: str) -> None:
        if isinstance(body, type) and issubclass(body, BaseModel):
            self.want(body, mode)
        elif isinstance(body, list):
            self.want_body(body[0], mode)
        elif isinstance(body, dict):
            for value in body.values():
                if isinstance(value, list):
                    for item in value:
                        self.want_body(item, mode)

    def resolve(self) -> None:
        refs, defs = models_json_schema(list(self.wanted), ref_template=COMPONENTS_REF)
        self.refs = refs
        self.components = defs.get("$defs", {})
        for schema in self.components.values():
            for name, hint in PROPERTY_HINTS.items():
                prop = schema.get("properties", {}).get(name)
                if prop is not None and prop.get("type") == "string":
                    prop.update(hint)

    def ref(self, model: type[BaseModel], mode: str) -> dict:
        return dict(self.refs[(model, mode)])

    def body_schema(self, body: Any, mode: str) -> Any:
        if isinstance(body, type) and issubclass(body, BaseModel):
            return self.ref(body, mode)
        if isinstance(body, list):
            return {"type": "array", "items": self.body_schema(body[0], mode)}
        if isinstance(body, dict) and any(isinstance(v, list) for v in body.values()):
            return {key: [self.body_schema(item, mode) for item in value] if isinstance(value, list) else value
                    for key, value in body.items()}
        return body


def _without_null(schema: dict) -> dict:
    """Query and path values are strings on the wire; an Optional field is simply left out."""
    options = schema.get("anyOf")
    if options:
        kept = [option for option in options if option.get("type") != "null"]
        if len(kept) == 1:
            rest = {key: value for key, value in schema.items() if key != "anyOf"}
            if rest.get("default", ...) is None:
                rest.pop("default")
            return {**kept[0], **rest}
    return schema


def _parameters(model: type[BaseModel], location: str) -> list[dict]:
    """One parameter per field; old spellings (extra AliasChoices) are listed as deprecated."""
    properties = model.model_json_schema(mode="validation").get("properties", {})
    parameters = []
    for name, info in model.model_fields.items():
        names = [name]
        alias = info.validation_alias
        if isinstance(alias, AliasChoices):
            names = [choice for choice in alias.choices if isinstance(choice, str)]
        elif isinstance(alias, str):
            names = [alias]
        schema = _without_null(dict(properties.get(names[0], {})))
        description = schema.pop("description", None) or info.description
        required = location == "path" or info.is_required()
        for index, spelled in enumerate(names):
            parameter = {"name": spelled, "in": location, "required": required and index == 0,
                         "schema": schema}
            if description:
                parameter["description"] = description
            if index:
                parameter["deprecated"] = True
                parameter["required"] = False
                parameter["description"] = f"Old spelling of `{names[0]}`."
            parameters.append(parameter)
    return parameters


def build_document(routes: Iterable[tuple[str, str, Any]], *, apikey_required: bool = False) -> dict:
    """The OpenAPI document for these mounted routes ((method, path, handler) triples).

    `apikey_required`: the server runs with --apikey, so every non-public operation lists the
    X-API-KEY requirement and its 403 answer.
    """
    routes = [(method.upper(), path, handler) for method, path, handler in routes
              if method.upper() not in ("HEAD", "OPTIONS")]
    described = [(method, path, OPERATIONS.get((method, path)) or _fallback(handler))
                 for method, path, handler in routes]
    schemas = _Schemas()
    schemas.want(HTTPValidationError, "serialization")
    if apikey_required:
        schemas.want(Forbidden, "serialization")
    for _, _, operation in described:
        if operation.body is not None:
            schemas.want(operation.body, "validation")
        for reply in operation.replies.values():
            for body in reply.content.values():
                schemas.want_body(body, "serialization")
    schemas.resolve()

    paths: dict[str, dict] = {}
    for method, path, operation in described:
        paths.setdefault(path, {})[method.lower()] = _operation(method, path, operation, schemas, apikey_required)
    return {
        "openapi": OPENAPI_VERSION,
        "info": {
            "title": "Fooocus API",
            "version": COMPATIBLE_VERSION,
            "description": "Fooocus-API compatible image generation over a node-graph backend. "
                           "The ComfyUI routes (`/prompt`, `/ws`, ...) are served too and not listed here.",
        },
        "paths": paths,
        "components": {
            "schemas": schemas.components,
            "securitySchemes": {SECURITY_SCHEME: {"type": "apiKey", "in": "header", "name": API_KEY_HEADER}},
        },
    }


def _operation_id(method: str, path: str) -> str:
    words = "".join(ch if ch.isalnum() else "_" for ch in path).strip("_") or "index"
    return f"{method.lower()}_{words}"


def _operation(method: str, path: str, operation: Operation, schemas: _Schemas, apikey_required: bool) -> dict:
    entry: dict[str, Any] = {"tags": [operation.tag], "summary": operation.summary,
                             "operationId": _operation_id(method, path)}
    if operation.description:
        entry["description"] = operation.description
    parameters = []
    if operation.path is not None:
        parameters += _parameters(operation.path, "path")
    if operation.query is not None:
        parameters += _parameters(operation.query, "query")
    if parameters:
        entry["parameters"] = parameters
    if operation.body is not None:
        entry["requestBody"] = {"required": False, "content": {
            operation.body_media: {"schema": schemas.ref(operation.body, "validation")}}}
    responses = {}
    for status, reply in operation.replies.items():
        answer: dict[str, Any] = {"description": reply.description}
        if reply.content:
            answer["content"] = {media: {"schema": schemas.body_schema(body, "serialization")}
                                 for media, body in reply.content.items()}
        responses[status] = answer
    if operation.validates:
        responses["422"] = {"description": "Validation error",
                            "content": {JSON: {"schema": schemas.ref(HTTPValidationError, "serialization")}}}
    if apikey_required and not operation.public:
        entry["security"] = [{SECURITY_SCHEME: []}]
        responses["403"] = {"description": "Missing or wrong X-API-KEY",
                            "content": {JSON: {"schema": schemas.ref(Forbidden, "serialization")}}}
    entry["responses"] = dict(sorted(responses.items()))
    return entry


def fooocus_routes(api) -> list[tuple[str, str, Any]]:
    """The routes a mounted FooocusAPI serves that the document lists: its own plus the App's /ping."""
    from server.app import ping  # the App registers /ping itself; the document describes it too

    return [*(route for pack in api.route_packs for route in pack.routes()), ("GET", "/ping", ping)]


def document_for(api) -> dict:
    """The document of a FooocusAPI as mounted in its App."""
    return build_document(fooocus_routes(api), apikey_required=bool(api.app.config.apikey))
