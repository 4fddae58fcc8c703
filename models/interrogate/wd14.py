"""The WD14 tagger (Fooocus "Describe: Art/Anime", spec §11): an ONNX classifier run by onnxruntime.

Files: `wd-v1-4-moat-tagger-v2.onnx` and its `selected_tags.csv` (Fooocus keeps it as
`wd-v1-4-moat-tagger-v2.csv`): a header `tag_id,name,category,count`, then one row per model
output in output order; category 9 = rating, 0 = general, 4 = character.

* input: the image fitted into a white square of the model's input side (Lanczos, centred; the
  side is the ONNX input's dimension 1), float32 0..255, RGB -> BGR, NHWC with a batch of one;
* selection: general tags with probability > 0.35, character tags > 0.85, ratings never;
  characters first, then general tags, each in CSV order;
* text: `(` and `)` escaped as `\\(` and `\\)`, joined with ", ", then underscores -> spaces.
"""
from __future__ import annotations

import csv
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
from PIL import Image

WD14_MODEL_FILE = "wd-v1-4-moat-tagger-v2.onnx"
GENERAL_THRESHOLD = 0.35
CHARACTER_THRESHOLD = 0.85
RATING, GENERAL, CHARACTER = 9, 0, 4


class WD14Error(ValueError):
    """A tagger file that cannot be used (bad CSV, model and CSV disagree)."""


@dataclass(frozen=True)
class Tag:
    name: str
    category: int


def tags_file_for(model_path: str | os.PathLike) -> Path:
    """The CSV beside a tagger model: `<stem>.csv` as Fooocus names it, else `selected_tags.csv`."""
    model_path = Path(model_path)
    own = model_path.with_suffix(".csv")
    shared = model_path.parent / "selected_tags.csv"
    return shared if shared.is_file() and not own.is_file() else own


def read_tags(path: str | os.PathLike) -> list[Tag]:
    path = Path(path)
    with open(path, newline="", encoding="utf-8") as handle:
        rows = list(csv.reader(handle))
    if not rows or [cell.strip().lower() for cell in rows[0][:3]] != ["tag_id", "name", "category"]:
        raise WD14Error(f"{path.name}: expected a header 'tag_id,name,category,count'")
    tags = []
    for number, row in enumerate(rows[1:], start=2):
        try:
            tags.append(Tag(row[1], int(row[2])))
        except (IndexError, ValueError):
            raise WD14Error(f"{path.name}, line {number}: expected 'tag_id,name,category,count', got {row}") from None
    return tags


def fit_white_square(image: Image.Image, side: int) -> Image.Image:
    """`image` (RGB) scaled so its longer side is `side` (Lanczos), centred on a white square."""
    ratio = side / max(image.size)
    size = tuple(max(1, int(edge * ratio)) for edge in image.size)  # a 1-pixel edge stays 1 pixel
    resized = image.convert("RGB").resize(size, Image.LANCZOS)
    square = Image.new("RGB", (side, side), (255, 255, 255))
    square.paste(resized, ((side - size[0]) // 2, (side - size[1]) // 2))
    return square


def model_input(image: Image.Image, side: int) -> np.ndarray:
    """[1, side, side, 3] float32 BGR in 0..255."""
    pixels = np.asarray(fit_white_square(image, side), dtype=np.float32)[:, :, ::-1]
    return np.ascontiguousarray(pixels[None])


def select_tags(tags: Sequence[Tag], probabilities: Iterable[float], *, general_threshold: float = GENERAL_THRESHOLD,
                character_threshold: float = CHARACTER_THRESHOLD, exclude: Iterable[str] = ()) -> list[str]:
    """Names of the kept tags: characters above their threshold, then general tags above theirs."""
    probabilities = list(probabilities)
    if len(probabilities) != len(tags):
        raise WD14Error(f"the model gives {len(probabilities)} probabilities for {len(tags)} tags in the CSV")
    excluded = {name.strip().lower() for name in exclude if name.strip()}
    scored = [(tag, float(p)) for tag, p in zip(tags, probabilities) if tag.name.lower() not in excluded]
    characters = [tag.name for tag, p in scored if tag.category == CHARACTER and p > character_threshold]
    general = [tag.name for tag, p in scored if tag.category == GENERAL and p > general_threshold]
    return characters + general


def format_tags(names: Iterable[str]) -> str:
    escaped = (name.replace("(", "\\(").replace(")", "\\)") for name in names)
    return ", ".join(escaped).replace("_", " ")


def execution_providers(use_cuda: bool) -> list[str]:
    import onnxruntime

    available = onnxruntime.get_available_providers()
    wanted = (["CUDAExecutionProvider"] if use_cuda else []) + ["CPUExecutionProvider"]
    return [provider for provider in wanted if provider in available]


class WD14Tagger:
    """A loaded tagger: an onnxruntime session and the tags of its outputs."""

    def __init__(self, session, tags: Sequence[Tag]) -> None:
        self.session = session
        self.tags = list(tags)
        model_input_spec = session.get_inputs()[0]
        self.input_name = model_input_spec.name
        self.side = model_input_spec.shape[1]
        if not isinstance(self.side, int) or model_input_spec.shape[2] != self.side:
            raise WD14Error(f"the tagger's input must be [batch, side, side, 3], not {model_input_spec.shape}")
        self.output_name = session.get_outputs()[0].name

    @classmethod
    def load(cls, model_path: str | os.PathLike, tags_path: str | os.PathLike | None = None, *,
             use_cuda: bool = False) -> "WD14Tagger":
        import onnxruntime

        model_path = Path(model_path)
        tags = read_tags(tags_path or tags_file_for(model_path))
        try:
            session = onnxruntime.InferenceSession(str(model_path), providers=execution_providers(use_cuda))
        except Exception as error:  # onnxruntime raises its own exception types for unreadable models
            raise WD14Error(f"{model_path.name}: not a usable ONNX model ({error})") from None
        return cls(session, tags)

    def probabilities(self, image: Image.Image) -> np.ndarray:
        return self.session.run([self.output_name], {self.input_name: model_input(image, self.side)})[0][0]

    def tag(self, image: Image.Image, *, general_threshold: float = GENERAL_THRESHOLD,
            character_threshold: float = CHARACTER_THRESHOLD, exclude: Iterable[str] = ()) -> str:
        names = select_tags(self.tags, self.probabilities(image), general_threshold=general_threshold,
                            character_threshold=character_threshold, exclude=exclude)
        return format_tags(names)
