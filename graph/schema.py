"""One typed node schema, and the adapter that turns ComfyUI V1 classes into it.

A V1 class declares itself with class attributes (INPUT_TYPES, RETURN_TYPES, FUNCTION, ...).
`NodeSchema.from_v1` reads those once, at registration, so the executor and the validator work
on data and never poke at class attributes again.
"""
from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

from .errors import NodeRegistrationError

PRIMITIVE_TYPES = ("INT", "FLOAT", "STRING", "BOOLEAN")
WILDCARD = "*"
HIDDEN_VALUES = ("PROMPT", "DYNPROMPT", "EXTRA_PNGINFO", "UNIQUE_ID", "AUTH_TOKEN_COMFY_ORG", "API_KEY_COMFY_ORG")


def types_compatible(produced: str, expected: str) -> bool:
    """Socket types match when equal, when either is the `*` wildcard, or when comma unions overlap."""
    if produced == expected or produced == WILDCARD or expected == WILDCARD:
        return True
    return bool(set(str(produced).split(",")) & set(str(expected).split(",")))


@dataclass(frozen=True)
class InputSpec:
    """One declared input: a primitive widget, a combo, or a socket of a named type."""

    name: str
    type: str  # INT, FLOAT, STRING, BOOLEAN, COMBO, or a socket type name
    options: Mapping[str, Any] = field(default_factory=dict)
    required: bool = True
    choices: tuple | None = None  # static COMBO choices
    folder: str | None = None  # COMBO whose choices are the files of a model folder, listed per request
    raw: tuple = ()  # the declaration as written, for /object_info

    @property
    def lazy(self) -> bool:
        return bool(self.options.get("lazy"))

    @property
    def is_combo(self) -> bool:
        return self.type == "COMBO"

    @property
    def is_primitive(self) -> bool:
        return self.type in PRIMITIVE_TYPES

    def combo_choices(self, resolve_folder: Callable[[str], list[str]] | None) -> list | None:
        if self.choices is not None:
            return list(self.choices)
        if self.folder is not None:
            return list(resolve_folder(self.folder)) if resolve_folder else []
        options = self.options.get("options")
        return list(options) if options is not None else None


@dataclass(frozen=True)
class NodeSchema:
    """Everything the engine needs to know about a node class, read once at registration."""

    name: str
    node_class: type
    inputs: tuple[InputSpec, ...]
    hidden: Mapping[str, str]
    outputs: tuple[str, ...]
    output_names: tuple[str, ...]
    output_is_list: tuple[bool, ...]
    function: str
    output_node: bool
    input_is_list: bool
    not_idempotent: bool
    category: str
    display_name: str
    description: str
    python_module: str
    has_is_changed: bool
    validate_inputs: Callable | None
    validate_claims: frozenset  # inputs VALIDATE_INPUTS takes over (skips our range/list checks)
    validate_takes_input_types: bool
    has_lazy_check: bool
    extra_info: Mapping[str, Any] = field(default_factory=dict)

    def input(self, name: str) -> InputSpec | None:
        for spec in self.inputs:
            if spec.name == name:
                return spec
        return None

    @classmethod
    def from_v1(cls, name: str, node_class: type, display_name: str | None = None,
                python_module: str = "nodes") -> "NodeSchema":
        try:
            declared = node_class.INPUT_TYPES()
        except Exception as exc:  # a broken declaration is the node author's error, named as such
            raise NodeRegistrationError(f"node {name}: INPUT_TYPES() failed: {exc}") from exc
        if not isinstance(declared, Mapping):
            raise NodeRegistrationError(f"node {name}: INPUT_TYPES() must return a dict")
        inputs: list[InputSpec] = []
        for section, required in (("required", True), ("optional", False)):
            for input_name, decl in (declared.get(section) or {}).items():
                inputs.append(_input_spec(name, input_name, decl, required))
        hidden = {key: str(value) for key, value in (declared.get("hidden") or {}).items()}

        function = getattr(node_class, "FUNCTION", None)
        if not isinstance(function, str) or not callable(getattr(node_class, function, None)):
            raise NodeRegistrationError(f"node {name}: FUNCTION must name a method of the class")
        outputs = tuple(str(t) if not isinstance(t, (list, tuple)) else "COMBO"
                        for t in getattr(node_class, "RETURN_TYPES", ()))
        output_names = tuple(getattr(node_class, "RETURN_NAMES", None) or outputs)
        if len(output_names) != len(outputs):
            raise NodeRegistrationError(f"node {name}: RETURN_NAMES and RETURN_TYPES differ in length")
        is_list = getattr(node_class, "OUTPUT_IS_LIST", None) or (False,) * len(outputs)
        validate = getattr(node_class, "VALIDATE_INPUTS", None)
        claims: frozenset = frozenset()
        takes_types = False
        if validate is not None:
            parameters = inspect.signature(validate).parameters
            takes_kwargs = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values())
            takes_types = "input_types" in parameters
            claims = frozenset(spec.name for spec in inputs) if takes_kwargs else frozenset(parameters)
        return cls(
            name=name,
            node_class=node_class,
            inputs=tuple(inputs),
            hidden=hidden,
            outputs=outputs,
            output_names=tuple(str(n) for n in output_names),
            output_is_list=tuple(bool(v) for v in is_list) + (False,) * (len(outputs) - len(is_list)),
            function=function,
            output_node=bool(getattr(node_class, "OUTPUT_NODE", False)),
            input_is_list=bool(getattr(node_class, "INPUT_IS_LIST", False)),
            not_idempotent=bool(getattr(node_class, "NOT_IDEMPOTENT", False)) or "UNIQUE_ID" in hidden.values(),
            category=str(getattr(node_class, "CATEGORY", "sd")),
            display_name=display_name or name,
            description=str(getattr(node_class, "DESCRIPTION", "")),
            python_module=python_module,
            has_is_changed=callable(getattr(node_class, "IS_CHANGED", None)),
            validate_inputs=validate,
            validate_claims=claims,
            validate_takes_input_types=takes_types,
            has_lazy_check=callable(getattr(node_class, "check_lazy_status", None)),
            extra_info={key: getattr(node_class, key) for key in
                        ("OUTPUT_TOOLTIPS", "DEPRECATED", "EXPERIMENTAL", "API_NODE") if hasattr(node_class, key)},
        )


def _input_spec(node: str, name: str, decl: Any, required: bool) -> InputSpec:
    if not isinstance(decl, (tuple, list)) or not decl:
        raise NodeRegistrationError(f"node {node}, input {name}: declaration must be (TYPE,) or (TYPE, options)")
    kind = decl[0]
    options = decl[1] if len(decl) > 1 and isinstance(decl[1], Mapping) else {}
    raw = tuple(decl)
    if isinstance(kind, (list, tuple)):
        return InputSpec(name, "COMBO", options, required, choices=tuple(kind), raw=raw)
    if not isinstance(kind, str):
        raise NodeRegistrationError(f"node {node}, input {name}: type must be a string or a list of options")
    folder = options.get("folder") if kind == "COMBO" else None
    return InputSpec(name, kind, options, required, folder=folder, raw=raw)
