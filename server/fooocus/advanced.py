"""`AdvancedParams`: the "developer debug" knobs of a Fooocus request.

Every field of the user's API document is here with its documented default and range, plus the
later fields the reference server grew (seed increment, CLIP skip, VAE, NSFW, enhance/dino).
Where the document and the reference code disagree the document wins; those spots say so.
Sampler and scheduler ids are checked against the server's lists when the route passes a
`Vocabulary` (see validation.py).
"""

from __future__ import annotations

from enum import Enum

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from server.fooocus.validation import canonical_names, vocabulary_from

DEFAULT_SAMPLER = "dpmpp_2m_sde_gpu"
DEFAULT_SCHEDULER = "karras"
DEFAULT_VAE = "Default (model)"
# The API document says 0.5; the reference code (and Fooocus' UI) use 0.3. The document wins.
DEFAULT_ADM_SCALER_END = 0.5


class RefinerSwapMethod(str, Enum):
    JOINT = "joint"
    SEPARATE = "separate"
    VAE = "vae"


class InpaintEngine(str, Enum):
    NONE = "None"
    V1 = "v1"
    V2_5 = "v2.5"
    V2_6 = "v2.6"


class AdvancedParams(BaseModel):
    model_config = ConfigDict(allow_inf_nan=False, use_enum_values=False)

    disable_preview: bool = False
    disable_intermediate_results: bool = False
    disable_seed_increment: bool = False
    adm_scaler_positive: float = Field(1.5, ge=0.1, le=3.0)
    adm_scaler_negative: float = Field(0.8, ge=0.1, le=3.0)
    adm_scaler_end: float = Field(DEFAULT_ADM_SCALER_END, ge=0.0, le=1.0)
    adaptive_cfg: float = Field(7.0, ge=1.0, le=30.0)
    clip_skip: int = Field(2, ge=1, le=12)
    sampler_name: str = DEFAULT_SAMPLER
    scheduler_name: str = DEFAULT_SCHEDULER
    overwrite_step: int = Field(-1, ge=-1, le=200)
    # The document types it int -1..200 (a step number, older Fooocus); the reference code types
    # it float -1..1 (a fraction). Both spellings are accepted; -1 (or <= 0) means "not set".
    overwrite_switch: float = Field(-1, ge=-1, le=200)
    overwrite_width: int = Field(-1, ge=-1, le=2048)
    overwrite_height: int = Field(-1, ge=-1, le=2048)
    overwrite_vary_strength: float = Field(-1, ge=-1, le=1.0)
    overwrite_upscale_strength: float = Field(-1, ge=-1, le=1.0)
    mixing_image_prompt_and_vary_upscale: bool = False
    mixing_image_prompt_and_inpaint: bool = False
    debugging_cn_preprocessor: bool = False
    skipping_cn_preprocessor: bool = False
    canny_low_threshold: int = Field(64, ge=1, le=255)
    canny_high_threshold: int = Field(128, ge=1, le=255)
    refiner_swap_method: RefinerSwapMethod = RefinerSwapMethod.JOINT
    controlnet_softness: float = Field(0.25, ge=0.0, le=1.0)
    freeu_enabled: bool = False
    freeu_b1: float = 1.01
    freeu_b2: float = 1.02
    freeu_s1: float = 0.99
    freeu_s2: float = 0.95
    debugging_inpaint_preprocessor: bool = False
    inpaint_disable_initial_latent: bool = False
    inpaint_engine: InpaintEngine = InpaintEngine.V2_6
    inpaint_strength: float = Field(1.0, ge=0.0, le=1.0)
    inpaint_respective_field: float = Field(1.0, ge=0.0, le=1.0)
    # The document's name; the reference code's is inpaint_advanced_masking_checkbox (default
    # true). Both are accepted and kept, the pipeline decides which it honours.
    inpaint_mask_upload_checkbox: bool = False
    inpaint_advanced_masking_checkbox: bool = True
    invert_mask_checkbox: bool = False
    inpaint_erode_or_dilate: int = Field(0, ge=-64, le=64)
    black_out_nsfw: bool = False
    vae_name: str = DEFAULT_VAE
    debugging_dino: bool = False
    dino_erode_or_dilate: int = Field(0, ge=-64, le=64)
    debugging_enhance_masks_checkbox: bool = False

    @field_validator("sampler_name")
    @classmethod
    def _known_sampler(cls, value: str, info: ValidationInfo) -> str:
        vocabulary = vocabulary_from(info)
        if vocabulary is None or vocabulary.samplers is None:
            return value
        return canonical_names([value], vocabulary.samplers, "sampler")[0]

    @field_validator("scheduler_name")
    @classmethod
    def _known_scheduler(cls, value: str, info: ValidationInfo) -> str:
        vocabulary = vocabulary_from(info)
        if vocabulary is None or vocabulary.schedulers is None:
            return value
        return canonical_names([value], vocabulary.schedulers, "scheduler")[0]

    @field_validator("refiner_swap_method", "inpaint_engine", mode="before")
    @classmethod
    def _enum_spelling(cls, value):
        # "Joint" / "V2.6" from hand-written clients mean the same thing.
        if isinstance(value, str):
            stripped = value.strip()
            return "None" if stripped.lower() == "none" else stripped.lower()
        return value
