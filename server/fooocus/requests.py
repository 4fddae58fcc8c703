"""Request bodies of the Fooocus-API routes (pydantic v2), one place for every request shape.

`CommonRequest` is the text-to-image body; the image routes extend it. v2 routes take images as
strings (base64, data URL or URL), v1 routes take multipart uploads, modelled here as `bytes`
(forms.py turns a multipart form into these models). Defaults follow the user's API document,
then the reference server (specs/fooocus_api.md §3-4) where the document is silent.

Unknown enum values and out-of-range numbers fail validation, so the route can answer 422 with
pydantic's error list (validation.validation_error_response). Style names are checked against
the server's list when a `Vocabulary` is passed (validation.validate_request).
"""

from __future__ import annotations

import json
import re
from enum import Enum
from typing import Annotated, Any, Optional, Union

from pydantic import (
    AfterValidator,
    AliasChoices,
    BaseModel,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
)

from server.fooocus.advanced import AdvancedParams
from server.fooocus.validation import canonical_names, vocabulary_from

DEFAULT_STYLES = ("Fooocus V2", "Fooocus Enhance", "Fooocus Sharp")
DEFAULT_ASPECT_RATIO = "1152*896"
# The API document's default; an unknown or missing file falls back to the server's default model.
DEFAULT_BASE_MODEL = "juggernautXL_version6Rundiffusion.safetensors"
DEFAULT_REFINER_MODEL = "None"
DEFAULT_LORA_FILE = "sd_xl_offset_example-lora_1.0.safetensors"
MAX_LORAS = 5
MAX_IMAGE_NUMBER = 32
# Custom sizes are allowed (upstream dropped the 26-entry whitelist); keep them on the latent
# grid and within what one GPU can hold.
MIN_SIDE, MAX_SIDE, SIDE_MULTIPLE = 64, 4096, 8

# Strings the reference server treats as "no value" for optional JSON-string fields.
NO_VALUE_STRINGS = frozenset({"", "none", "null"})


class PerformanceSelection(str, Enum):
    SPEED = "Speed"
    QUALITY = "Quality"
    EXTREME_SPEED = "Extreme Speed"
    LIGHTNING = "Lightning"
    HYPER_SD = "Hyper-SD"


class OutputFormat(str, Enum):
    PNG = "png"
    JPEG = "jpeg"
    JPG = "jpg"
    WEBP = "webp"


class MetaScheme(str, Enum):
    FOOOCUS = "fooocus"
    A1111 = "a1111"


class UpscaleOrVaryMethod(str, Enum):
    DISABLED = "Disabled"
    SUBTLE_VARIATION = "Vary (Subtle)"
    STRONG_VARIATION = "Vary (Strong)"
    UPSCALE_15 = "Upscale (1.5x)"
    UPSCALE_2 = "Upscale (2x)"
    UPSCALE_FAST = "Upscale (Fast 2x)"
    UPSCALE_CUSTOM = "Upscale (Custom)"


class OutpaintExpansion(str, Enum):
    LEFT = "Left"
    RIGHT = "Right"
    TOP = "Top"
    BOTTOM = "Bottom"


class ControlNetType(str, Enum):
    IMAGE_PROMPT = "ImagePrompt"
    FACE_SWAP = "FaceSwap"
    PYRA_CANNY = "PyraCanny"
    CPDS = "CPDS"


class DescribeImageType(str, Enum):
    PHOTO = "Photo"
    ANIME = "Anime"


# (stop, weight) used when an image prompt leaves them unset (null or 0), per Fooocus' flags.
CONTROLNET_DEFAULTS: dict[ControlNetType, tuple[float, float]] = {
    ControlNetType.IMAGE_PROMPT: (0.5, 0.6),
    ControlNetType.FACE_SWAP: (0.9, 0.75),
    ControlNetType.PYRA_CANNY: (0.5, 1.0),
    ControlNetType.CPDS: (0.5, 1.0),
}

_SIZE_PATTERN = re.compile(r"^\s*(\d+)\s*[*×xX]\s*(\d+)\s*(?:[|(<].*)?$")


def parse_aspect_ratio(text: str) -> tuple[int, int]:
    """'1152*896', '1152×896', '1152x896' or a UI label '1152×896 | 9:7' -> (1152, 896)."""
    match = _SIZE_PATTERN.match(text)
    if not match:
        raise ValueError(f"expected 'width*height', got {text!r}")
    width, height = int(match.group(1)), int(match.group(2))
    for side in (width, height):
        if not MIN_SIDE <= side <= MAX_SIDE or side % SIDE_MULTIPLE:
            raise ValueError(
                f"width and height must be multiples of {SIDE_MULTIPLE} "
                f"between {MIN_SIDE} and {MAX_SIDE}, got {width}*{height}"
            )
    return width, height


def _json_or_raw(value: Any) -> Any:
    """JSON-encoded fields (forms, lenient clients): decode when it parses, else keep the raw
    string so pydantic reports a type error naming the field."""
    if isinstance(value, (str, bytes)):
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value


class Lora(BaseModel):
    model_config = ConfigDict(allow_inf_nan=False, protected_namespaces=())

    # The document's examples omit `enabled` (the v0.3 shape); treat a missing flag as on.
    enabled: bool = True
    model_name: str
    weight: float = Field(0.5, ge=-2.0, le=2.0)


def default_loras() -> list[Lora]:
    """The default preset's five slots: the offset LoRA at 0.1, then four empty slots."""
    first = Lora(enabled=True, model_name=DEFAULT_LORA_FILE, weight=0.1)
    return [first] + [Lora(enabled=True, model_name="None", weight=1.0) for _ in range(4)]


class CommonRequest(BaseModel):
    """Body of /v1/generation/text-to-image and the base of every generation request."""

    model_config = ConfigDict(allow_inf_nan=False)

    prompt: str = ""
    negative_prompt: str = ""
    style_selections: list[str] = Field(default_factory=lambda: list(DEFAULT_STYLES))
    performance_selection: PerformanceSelection = PerformanceSelection.SPEED
    aspect_ratios_selection: str = DEFAULT_ASPECT_RATIO
    image_number: int = Field(1, ge=1, le=MAX_IMAGE_NUMBER)
    # -1 (or anything outside [0, 2**63-1]) asks for a random seed; not a validation error.
    image_seed: int = -1
    sharpness: float = Field(2.0, ge=0.0, le=30.0)
    guidance_scale: float = Field(4.0, ge=1.0, le=30.0)
    base_model_name: str = DEFAULT_BASE_MODEL
    refiner_model_name: str = DEFAULT_REFINER_MODEL
    refiner_switch: float = Field(0.5, ge=0.1, le=1.0)
    loras: list[Lora] = Field(default_factory=default_loras)
    advanced_params: AdvancedParams = Field(default_factory=AdvancedParams)
    require_base64: bool = False
    save_meta: bool = True
    meta_scheme: MetaScheme = MetaScheme.FOOOCUS
    save_extension: OutputFormat = OutputFormat.PNG
    save_name: str = ""
    read_wildcards_in_order: bool = False
    async_process: bool = False
    webhook_url: Optional[str] = None

    @field_validator("style_selections", mode="before")
    @classmethod
    def _split_style_string(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [name.strip() for name in value.split(",") if name.strip()]
        return value

    @field_validator("style_selections")
    @classmethod
    def _known_styles(cls, value: list[str], info: ValidationInfo) -> list[str]:
        vocabulary = vocabulary_from(info)
        if vocabulary is None or vocabulary.styles is None:
            return value
        return canonical_names(value, vocabulary.styles, "style(s)")

    @field_validator("aspect_ratios_selection")
    @classmethod
    def _normalise_size(cls, value: str) -> str:
        width, height = parse_aspect_ratio(value)
        return f"{width}*{height}"

    @field_validator("refiner_model_name", mode="before")
    @classmethod
    def _empty_refiner_is_none(cls, value: Any) -> Any:
        return DEFAULT_REFINER_MODEL if value is None or value == "" else value

    @field_validator("loras", mode="before")
    @classmethod
    def _loras_json_and_limit(cls, value: Any) -> Any:
        value = _json_or_raw(value)
        # The reference server keeps the first five and ignores the rest.
        return value[:MAX_LORAS] if isinstance(value, list) else value

    @field_validator("advanced_params", mode="before")
    @classmethod
    def _advanced_json_or_default(cls, value: Any) -> Any:
        if value is None or (isinstance(value, str) and value.strip().lower() in NO_VALUE_STRINGS):
            return {}
        return _json_or_raw(value)

    @field_validator("meta_scheme", "save_extension", mode="before")
    @classmethod
    def _lower_case_choice(cls, value: Any) -> Any:
        if isinstance(value, str):
            value = value.strip().lower()
            # The document spells the A1111 scheme "a111".
            return "a1111" if value == "a111" else value
        return value

    @field_validator("webhook_url", mode="before")
    @classmethod
    def _empty_webhook_is_none(cls, value: Any) -> Any:
        return None if value == "" else value

    @property
    def size(self) -> tuple[int, int]:
        """(width, height) from aspect_ratios_selection."""
        return parse_aspect_ratio(self.aspect_ratios_selection)

    def active_loras(self) -> list[tuple[str, float]]:
        """(file, weight) of enabled LoRA slots that name a file."""
        return [
            (lora.model_name, lora.weight)
            for lora in self.loras
            if lora.enabled and lora.model_name not in ("", "None")
        ]


class ImagePrompt(BaseModel):
    """One image-prompt slot; `cn_img` is a string in v2 JSON, upload bytes in v1 forms."""

    model_config = ConfigDict(allow_inf_nan=False)

    cn_img: Union[str, bytes, None] = None
    cn_stop: Optional[float] = Field(None, ge=0.0, le=1.0)
    cn_weight: Optional[float] = Field(None, ge=0.0, le=2.0)
    cn_type: ControlNetType = ControlNetType.IMAGE_PROMPT

    @property
    def resolved_stop(self) -> float:
        """cn_stop, or the type's default when unset (null or 0), as the reference server does."""
        return self.cn_stop or CONTROLNET_DEFAULTS[self.cn_type][0]

    @property
    def resolved_weight(self) -> float:
        return self.cn_weight or CONTROLNET_DEFAULTS[self.cn_type][1]


MAX_IMAGE_PROMPTS = 4  # Fooocus' image-prompt slots
MAX_IMAGE_PROMPT_ENTRIES = 16  # entries with or without an image (Fooocus-API's v2 pads the list to 5)


def _at_most_four_with_images(prompts: list[ImagePrompt]) -> list[ImagePrompt]:
    """More images than slots would be silently dropped by Fooocus-API: refuse them instead."""
    with_images = sum(1 for prompt in prompts if prompt.cn_img)
    if with_images > MAX_IMAGE_PROMPTS:
        raise ValueError(f"at most {MAX_IMAGE_PROMPTS} image prompts with an image (Fooocus has "
                         f"{MAX_IMAGE_PROMPTS} slots); this request has {with_images}")
    return prompts


ImagePromptList = Annotated[list[ImagePrompt], Field(max_length=MAX_IMAGE_PROMPT_ENTRIES),
                            AfterValidator(_at_most_four_with_images)]


class OutpaintFields(BaseModel):
    """Inpaint/outpaint fields shared by the inpaint and image-prompt routes (v1 and v2)."""

    inpaint_additional_prompt: str = ""
    outpaint_selections: list[OutpaintExpansion] = Field(default_factory=list)
    # <= 0 means "30 % of the side" in the pipeline (the reference v2 default is -1).
    outpaint_distance_left: int = Field(0, ge=-1, le=MAX_SIDE)
    outpaint_distance_right: int = Field(0, ge=-1, le=MAX_SIDE)
    outpaint_distance_top: int = Field(0, ge=-1, le=MAX_SIDE)
    outpaint_distance_bottom: int = Field(0, ge=-1, le=MAX_SIDE)

    @field_validator("outpaint_selections", mode="before")
    @classmethod
    def _split_directions(cls, value: Any) -> Any:
        if value is None:
            return []
        if isinstance(value, str):
            value = [part for part in value.split(",") if part.strip()]
        if isinstance(value, list):
            return [_capitalised(item) for item in value]
        return value

    @field_validator(
        "outpaint_distance_left",
        "outpaint_distance_right",
        "outpaint_distance_top",
        "outpaint_distance_bottom",
        mode="before",
    )
    @classmethod
    def _null_distance_is_zero(cls, value: Any) -> Any:
        return 0 if value is None else value


def _capitalised(item: Any) -> Any:
    if isinstance(item, str):
        item = item.strip()
        return item[:1].upper() + item[1:].lower()
    return item


# ---------------------------------------------------------------- v2 (JSON, images as strings)


class TextToImageWithIPRequest(CommonRequest):
    """POST /v2/generation/text-to-image-with-ip."""

    image_prompts: ImagePromptList = Field(default_factory=list)


class UpscaleVaryRequestV2(CommonRequest):
    """POST /v2/generation/image-upscale-vary."""

    input_image: str
    uov_method: UpscaleOrVaryMethod = UpscaleOrVaryMethod.UPSCALE_2
    # Only used by 'Upscale (Custom)'.
    upscale_value: Optional[float] = Field(None, ge=1.0, le=5.0)
    image_prompts: ImagePromptList = Field(default_factory=list)


class InpaintOutpaintRequestV2(OutpaintFields, CommonRequest):
    """POST /v2/generation/image-inpaint-outpaint. An empty input_image means text-to-image."""

    input_image: Optional[str] = ""
    input_mask: Optional[str] = None
    image_prompts: ImagePromptList = Field(default_factory=list)


class ImagePromptRequestV2(OutpaintFields, CommonRequest):
    """POST /v2/generation/image-prompt; `image_prompts` is required (may be empty)."""

    input_image: Optional[str] = None
    input_mask: Optional[str] = None
    image_prompts: ImagePromptList


# ---------------------------------------------------------------- v1 (multipart, images as bytes)


class UpscaleVaryRequestV1(CommonRequest):
    """POST /v1/generation/image-upscale-vary (multipart)."""

    input_image: bytes
    uov_method: UpscaleOrVaryMethod
    upscale_value: Optional[float] = Field(None, ge=1.0, le=5.0)


class InpaintOutpaintRequestV1(OutpaintFields, CommonRequest):
    """POST /v1/generation/image-inpaint-outpaint (multipart)."""

    input_image: bytes
    input_mask: Optional[bytes] = None


IMAGE_PROMPT_SLOTS = MAX_IMAGE_PROMPTS  # v1's flat cn_*1..4 fields


class ImagePromptRequestV1(OutpaintFields, CommonRequest):
    """POST /v1/generation/image-prompt (multipart).

    The slots are flat form fields cn_img1..4, cn_stop1..4, cn_weight1..4, cn_type1..4, kept
    flat here so a validation error names the form field the client sent.
    """

    input_image: Optional[bytes] = None
    input_mask: Optional[bytes] = None
    cn_img1: Optional[bytes] = None
    cn_stop1: Optional[float] = Field(None, ge=0.0, le=1.0)
    cn_weight1: Optional[float] = Field(None, ge=0.0, le=2.0)
    cn_type1: ControlNetType = ControlNetType.IMAGE_PROMPT
    cn_img2: Optional[bytes] = None
    cn_stop2: Optional[float] = Field(None, ge=0.0, le=1.0)
    cn_weight2: Optional[float] = Field(None, ge=0.0, le=2.0)
    cn_type2: ControlNetType = ControlNetType.IMAGE_PROMPT
    cn_img3: Optional[bytes] = None
    cn_stop3: Optional[float] = Field(None, ge=0.0, le=1.0)
    cn_weight3: Optional[float] = Field(None, ge=0.0, le=2.0)
    cn_type3: ControlNetType = ControlNetType.IMAGE_PROMPT
    cn_img4: Optional[bytes] = None
    cn_stop4: Optional[float] = Field(None, ge=0.0, le=1.0)
    cn_weight4: Optional[float] = Field(None, ge=0.0, le=2.0)
    cn_type4: ControlNetType = ControlNetType.IMAGE_PROMPT

    @property
    def image_prompts(self) -> list[ImagePrompt]:
        """The four slots as ImagePrompt items (slots without an image included)."""
        return [
            ImagePrompt(
                cn_img=getattr(self, f"cn_img{slot}"),
                cn_stop=getattr(self, f"cn_stop{slot}"),
                cn_weight=getattr(self, f"cn_weight{slot}"),
                cn_type=getattr(self, f"cn_type{slot}"),
            )
            for slot in range(1, IMAGE_PROMPT_SLOTS + 1)
        ]


# ---------------------------------------------------------------- tools and query parameters


class DescribeImageRequest(BaseModel):
    """POST /v1/tools/describe-image: upload `image`, query `image_type` (old name `type`)."""

    image: bytes
    image_type: DescribeImageType = Field(
        DescribeImageType.PHOTO, validation_alias=AliasChoices("image_type", "type")
    )


class QueryJobRequest(BaseModel):
    """GET /v1/generation/query-job query parameters (old typo alias accepted)."""

    job_id: str
    require_step_preview: bool = Field(
        False, validation_alias=AliasChoices("require_step_preview", "require_step_preivew")
    )


class JobHistoryRequest(BaseModel):
    """GET /v1/generation/job-history query parameters."""

    job_id: Optional[str] = None
    page: int = Field(0, ge=0)
    page_size: int = Field(20, ge=1, le=1000)
    delete: bool = False
