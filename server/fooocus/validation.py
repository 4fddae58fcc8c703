"""Validation plumbing shared by the Fooocus request models.

Names that only the running server knows (installed styles, sampler and scheduler ids) are not
baked into the models: the route hands a `Vocabulary` to `validate_request`, which passes it to
pydantic as the validation context. Without a vocabulary those names are not checked, so the
models stay usable in tests and tools that have no server.

`validation_error_response` turns a pydantic `ValidationError` into FastAPI's 422 body so a
Fooocus-API client sees the error shape it already parses.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Iterable, Mapping, Optional, Sequence, TypeVar

from pydantic import BaseModel, ValidationError, ValidationInfo

VOCABULARY_KEY = "vocabulary"

ModelT = TypeVar("ModelT", bound=BaseModel)


@dataclass(frozen=True)
class Vocabulary:
    """Runtime lists a request is checked against; `None` means "do not check this list"."""

    styles: Optional[tuple[str, ...]] = None
    samplers: Optional[tuple[str, ...]] = None
    schedulers: Optional[tuple[str, ...]] = None

    @classmethod
    def of(
        cls,
        styles: Optional[Iterable[str]] = None,
        samplers: Optional[Iterable[str]] = None,
        schedulers: Optional[Iterable[str]] = None,
    ) -> "Vocabulary":
        as_tuple = lambda names: None if names is None else tuple(names)  # noqa: E731
        return cls(as_tuple(styles), as_tuple(samplers), as_tuple(schedulers))


def vocabulary_from(info: ValidationInfo) -> Optional[Vocabulary]:
    context = info.context
    if isinstance(context, Mapping):
        vocabulary = context.get(VOCABULARY_KEY)
        if isinstance(vocabulary, Vocabulary):
            return vocabulary
    return None


def canonical_names(requested: Sequence[str], known: Sequence[str], what: str) -> list[str]:
    """Map requested names onto the known spelling (exact first, then case-insensitive).

    Raises ValueError listing every unknown name, so one 422 shows all mistakes at once.
    """
    exact = set(known)
    folded = {name.casefold(): name for name in known}
    result, unknown = [], []
    for name in requested:
        if name in exact:
            result.append(name)
        elif name.casefold() in folded:
            result.append(folded[name.casefold()])
        else:
            unknown.append(name)
    if unknown:
        listed = ", ".join(repr(name) for name in unknown)
        raise ValueError(f"unknown {what}: {listed}")
    return result


def validate_request(
    model: type[ModelT], data: Any, vocabulary: Optional[Vocabulary] = None
) -> ModelT:
    """Validate a decoded body (dict) against `model`; raises pydantic.ValidationError."""
    return model.model_validate(data, context={VOCABULARY_KEY: vocabulary})


def validate_request_json(
    model: type[ModelT], raw: str | bytes, vocabulary: Optional[Vocabulary] = None
) -> ModelT:
    """Validate a raw JSON body. Raises json.JSONDecodeError for malformed JSON (answer it with
    `json_decode_error_response`) and pydantic.ValidationError for invalid fields."""
    if isinstance(raw, (bytes, bytearray)):
        try:
            raw = bytes(raw).decode("utf-8")
        except UnicodeDecodeError as error:
            raise json.JSONDecodeError("body is not UTF-8", "", error.start) from None
    return validate_request(model, json.loads(raw), vocabulary)


def json_decode_error_response(error: json.JSONDecodeError, raw: str | bytes) -> dict[str, Any]:
    """FastAPI's 422 body for a body that is not JSON (loc names the character position)."""
    text = raw.decode("utf-8", "replace") if isinstance(raw, (bytes, bytearray)) else raw
    return {
        "detail": [
            {
                "type": "json_invalid",
                "loc": ["body", error.pos],
                "msg": "JSON decode error",
                "input": {},
                "ctx": {"error": error.msg},
            }
        ],
        "body": text,
    }


def _json_safe(value: Any) -> Any:
    """Error details may hold exceptions, bytes (uploads) or models; keep them printable."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (bytes, bytearray)):
        return f"<{len(value)} bytes>"
    if isinstance(value, Mapping):
        return {str(key): _json_safe(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(item) for item in value]
    if isinstance(value, BaseModel):
        return _json_safe(value.model_dump(mode="json"))
    return str(value)


def validation_error_items(
    exc: ValidationError, loc_prefix: Sequence[str | int] = ("body",)
) -> list[dict[str, Any]]:
    """pydantic's error list in FastAPI's item shape: type, loc (prefixed), msg, input[, ctx]."""
    items = []
    for error in exc.errors(include_url=False):
        item: dict[str, Any] = {
            "type": error["type"],
            "loc": [*loc_prefix, *error["loc"]],
            "msg": error["msg"],
            "input": _json_safe(error.get("input")),
        }
        if error.get("ctx"):
            item["ctx"] = _json_safe(error["ctx"])
        items.append(item)
    return items


def validation_error_response(
    exc: ValidationError,
    body: Any = None,
    loc_prefix: Sequence[str | int] = ("body",),
) -> dict[str, Any]:
    """The 422 JSON body: `{"detail": [...]}` plus `"body"` when the original body is JSON-able.

    Use loc_prefix ("query",) for query-parameter models.
    """
    response: dict[str, Any] = {"detail": validation_error_items(exc, loc_prefix)}
    if body is not None:
        try:
            json.dumps(body)
        except (TypeError, ValueError):
            pass
        else:
            response["body"] = body
    return response
