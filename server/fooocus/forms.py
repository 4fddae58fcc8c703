"""Multipart form -> v1 request model.

The v1 routes receive every CommonRequest field as a form string and images as file parts.
The route reads the form into (name, value) pairs, values being `str` for text parts and
`bytes` for uploaded files (in arrival order, repeats kept), and calls `parse_form`.

How fields map (specs/fooocus_api.md §4):
* `style_selections`, `outpaint_selections`: may repeat, and each value may be comma-separated
  or a JSON list; all values are concatenated.
* `loras`, `advanced_params`: one JSON string; empty / "None" means the default. Undecodable JSON
  is handed to the model as-is, so the 422 names the field.
* `image_prompts`: ignored (v1 uses cn_img1..4 / cn_stop1..4 / cn_weight1..4 / cn_type1..4).
* other fields: the last value wins; an empty string on a non-text field means "use the
  default" (Swagger-style clients send empty parts for untouched fields), as does an empty
  file part. Booleans accept true/false/1/0/on/off/yes/no (pydantic's lax parsing).
"""

from __future__ import annotations

import json
from typing import Any, Iterable, Optional, TypeVar, Union

from pydantic import BaseModel

from server.fooocus.requests import NO_VALUE_STRINGS
from server.fooocus.validation import Vocabulary, validate_request

ModelT = TypeVar("ModelT", bound=BaseModel)
FormValue = Union[str, bytes]

LIST_FIELDS = frozenset({"style_selections", "outpaint_selections"})
JSON_FIELDS = frozenset({"loras", "advanced_params"})
IGNORED_FIELDS = frozenset({"image_prompts"})


def _split_list_value(value: FormValue) -> list[str]:
    text = value.decode("utf-8", "replace") if isinstance(value, bytes) else value
    stripped = text.strip()
    if stripped.startswith("["):
        try:
            decoded = json.loads(stripped)
        except ValueError:
            decoded = None
        if isinstance(decoded, list):
            return [str(item).strip() for item in decoded if str(item).strip()]
    return [part.strip() for part in text.split(",") if part.strip()]


def _is_text_field(model: type[BaseModel], name: str) -> bool:
    field = model.model_fields.get(name)
    return field is not None and field.annotation is str


def form_to_dict(model: type[BaseModel], fields: Iterable[tuple[str, FormValue]]) -> dict[str, Any]:
    """Collapse multipart pairs into the dict `model` validates (see module docstring)."""
    grouped: dict[str, list[FormValue]] = {}
    for name, value in fields:
        grouped.setdefault(name, []).append(value)

    data: dict[str, Any] = {}
    for name, values in grouped.items():
        if name in IGNORED_FIELDS:
            continue
        if name in LIST_FIELDS:
            data[name] = [item for value in values for item in _split_list_value(value)]
            continue
        value = values[-1]
        if isinstance(value, bytes):
            if value:
                data[name] = value
            continue
        if name in JSON_FIELDS:
            if value.strip().lower() not in NO_VALUE_STRINGS:
                data[name] = value
            continue
        if value == "" and not _is_text_field(model, name):
            continue
        data[name] = value
    return data


def parse_form(
    model: type[ModelT],
    fields: Iterable[tuple[str, FormValue]],
    vocabulary: Optional[Vocabulary] = None,
) -> ModelT:
    """Validate a multipart form as `model`; raises pydantic.ValidationError (-> 422)."""
    return validate_request(model, form_to_dict(model, fields), vocabulary)
