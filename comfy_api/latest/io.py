"""V3 `io`: socket types with Input/Output declarations, Schema, ComfyNode, NodeOutput, Hidden.

Each declaration renders to the V1 form our schema reads (`(TYPE, {options})`), with ComfyUI's
option names (display_mode -> display, force_input -> forceInput, ...)."""
from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any

_OPTION_NAMES = {"display_mode": "display", "force_input": "forceInput", "dynamic_prompts": "dynamicPrompts",
                 "image_upload": "image_upload", "default": "default"}


class NumberDisplay(str, enum.Enum):
    number = "number"
    slider = "slider"


class Hidden(str, enum.Enum):
    unique_id = "UNIQUE_ID"
    prompt = "PROMPT"
    extra_pnginfo = "EXTRA_PNGINFO"
    dynprompt = "DYNPROMPT"
    auth_token_comfy_org = "AUTH_TOKEN_COMFY_ORG"
    api_key_comfy_org = "API_KEY_COMFY_ORG"


@dataclass
class HiddenHolder:
    """`cls.hidden` inside execute: the hidden values the schema asked for (None otherwise)."""

    unique_id: Any = None
    prompt: Any = None
    extra_pnginfo: Any = None
    dynprompt: Any = None
    auth_token_comfy_org: Any = None
    api_key_comfy_org: Any = None


class Input:
    io_type = "*"

    def __init__(self, id: str, display_name: str | None = None, optional: bool = False, tooltip: str | None = None,
                 lazy: bool | None = None, extra_dict: dict | None = None, **options) -> None:
        self.id = id
        self.display_name = display_name
        self.optional = optional
        self.options = {"tooltip": tooltip, "lazy": lazy, "display_name": display_name, **options}
        self.extra_dict = dict(extra_dict or {})

    def v1_options(self) -> dict:
        out = {}
        for key, value in self.options.items():
            if value is None or key in ("options",):
                continue
            out[_OPTION_NAMES.get(key, key)] = value.value if isinstance(value, enum.Enum) else value
        out.update(self.extra_dict)
        return out

    def as_v1(self) -> tuple:
        options = self.v1_options()
        return (self.io_type, options) if options else (self.io_type,)


class ComboInput(Input):
    def __init__(self, id: str, options: list | type[enum.Enum] | None = None, **kwargs) -> None:
        if isinstance(options, type) and issubclass(options, enum.Enum):
            options = [member.value for member in options]
        super().__init__(id, **kwargs)
        self.choices = list(options or [])

    def as_v1(self) -> tuple:
        options = self.v1_options()
        return (self.choices, options) if options else (self.choices,)


class Output:
    io_type = "*"

    def __init__(self, id: str | None = None, display_name: str | None = None, tooltip: str | None = None,
                 is_output_list: bool = False, **extra) -> None:
        self.id = id
        self.display_name = display_name
        self.tooltip = tooltip
        self.is_output_list = is_output_list

    @property
    def name(self) -> str:
        return self.display_name or self.id or self.io_type


class ComfyType:
    """A socket type: `X.Input(...)` declares an input of it, `X.Output(...)` an output."""

    io_type = "*"
    Input = Input
    Output = Output


def _comfy_type(io_type: str, input_base: type = Input, name: str | None = None) -> type[ComfyType]:
    namespace = {"io_type": io_type}
    return type(name or io_type.title(), (ComfyType,), {
        "io_type": io_type,
        "Input": type("Input", (input_base,), dict(namespace)),
        "Output": type("Output", (Output,), dict(namespace)),
    })


def Custom(io_type: str) -> type[ComfyType]:
    """A pack's own socket type (ComfyUI's io.Custom("MY_TYPE"))."""
    return _comfy_type(io_type, name=io_type)


Int = _comfy_type("INT", name="Int")
Float = _comfy_type("FLOAT", name="Float")
String = _comfy_type("STRING", name="String")
Boolean = _comfy_type("BOOLEAN", name="Boolean")
Combo = _comfy_type("COMBO", ComboInput, name="Combo")
Image = _comfy_type("IMAGE", name="Image")
Mask = _comfy_type("MASK", name="Mask")
Latent = _comfy_type("LATENT", name="Latent")
Conditioning = _comfy_type("CONDITIONING", name="Conditioning")
Model = _comfy_type("MODEL", name="Model")
Clip = _comfy_type("CLIP", name="Clip")
Vae = _comfy_type("VAE", name="Vae")
ClipVision = _comfy_type("CLIP_VISION", name="ClipVision")
ClipVisionOutput = _comfy_type("CLIP_VISION_OUTPUT", name="ClipVisionOutput")
ControlNet = _comfy_type("CONTROL_NET", name="ControlNet")
UpscaleModel = _comfy_type("UPSCALE_MODEL", name="UpscaleModel")
Sigmas = _comfy_type("SIGMAS", name="Sigmas")
Noise = _comfy_type("NOISE", name="Noise")
Sampler = _comfy_type("SAMPLER", name="Sampler")
Guider = _comfy_type("GUIDER", name="Guider")
AnyType = _comfy_type("*", name="AnyType")


class Schema:
    """A V3 node's declaration. Fields ComfyUI has and we do not use are kept in `extra`."""

    def __init__(self, node_id: str, display_name: str | None = None, category: str = "sd",
                 inputs: list | None = None, outputs: list | None = None, hidden: list | None = None,
                 description: str = "", is_output_node: bool = False, is_deprecated: bool = False,
                 is_experimental: bool = False, is_api_node: bool = False, not_idempotent: bool = False,
                 is_input_list: bool = False, **extra) -> None:
        self.node_id = node_id
        self.display_name = display_name
        self.category = category
        self.inputs = list(inputs or [])
        self.outputs = list(outputs or [])
        self.hidden = list(hidden or [])
        self.description = description
        self.is_output_node = is_output_node
        self.is_deprecated = is_deprecated
        self.is_experimental = is_experimental
        self.is_api_node = is_api_node
        self.not_idempotent = not_idempotent
        self.is_input_list = is_input_list
        self.extra = extra


class NodeOutput:
    """What execute returns: the output values, and optionally a UI payload, an expansion
    (a graph to run in the node's place) or a block of downstream execution."""

    def __init__(self, *args: Any, ui: Any = None, expand: dict | None = None, block_execution: str | None = None):
        self.args = args
        self.ui = ui
        self.expand = expand
        self.block_execution = block_execution

    @property
    def result(self) -> tuple:
        return self.args


class ComfyNode:
    """Base of V3 nodes: classmethods define_schema() and execute(**inputs); optional
    validate_inputs, fingerprint_inputs (IS_CHANGED) and check_lazy_status. `cls.hidden` holds
    the requested hidden values while execute runs."""

    hidden: HiddenHolder = HiddenHolder()

    @classmethod
    def define_schema(cls) -> Schema:
        raise NotImplementedError(f"{cls.__name__}.define_schema must return an io.Schema")

    @classmethod
    def execute(cls, **kwargs) -> NodeOutput:
        raise NotImplementedError(f"{cls.__name__}.execute is not defined")

    @classmethod
    def GET_SCHEMA(cls) -> Schema:
        return cls.define_schema()
