"""Fooocus prompt styles: loading style files and applying their templates.

A style file is a JSON list of ``{"name", "prompt"?, "negative_prompt"?}`` objects whose prompt
template contains ``{prompt}``. Names are normalised the way Fooocus normalises them, so a user
file that says ``"sai-anime"`` addresses the same style as ``"SAI Anime"``.

Two pseudo-styles exist on top of the files: "Fooocus V2" (turns prompt expansion on, it has no
template) and "Random Style" (replaced, per image, by a style drawn with that image's seeded RNG).
"""

from __future__ import annotations

import json
import logging
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

FOOOCUS_V2 = "Fooocus V2"
RANDOM_STYLE = "Random Style"
PSEUDO_STYLES = (FOOOCUS_V2, RANDOM_STYLE)

BUILTIN_STYLES_DIR = Path(__file__).parent / "data" / "styles"
# Our shipped files, in the order Fooocus loads its six shipped files; the order of names
# (what GET /v1/engines/styles returns) follows from it.
BUILTIN_STYLE_FILES = (
    "sdxl_styles_fooocus.json",
    "sdxl_styles_sai.json",
    "sdxl_styles_mre.json",
    "sdxl_styles_twri.json",
    "sdxl_styles_diva.json",
    "sdxl_styles_marc_k3nt3l.json",
)

_log = logging.getLogger(__name__)


def normalize_style_name(name: str) -> str:
    """Fooocus's key normalisation: '-' -> ' ', each word capitalised, then a few fix-ups."""
    words = name.replace("-", " ").split(" ")
    text = " ".join(word[:1].upper() + word[1:].lower() for word in words)
    for before, after in (("3d", "3D"), ("Sai", "SAI"), ("Mre", "MRE"), ("(s", "(S")):
        text = text.replace(before, after)
    return text


class UnknownStylesError(ValueError):
    """Raised for style names that no loaded style file defines."""

    def __init__(self, unknown: Sequence[str]):
        self.unknown = list(unknown)
        super().__init__(
            "unknown style name(s): "
            + ", ".join(repr(n) for n in self.unknown)
            + "; GET /v1/engines/styles lists the valid names"
        )


@dataclass(frozen=True)
class Style:
    name: str
    prompt: str  # template containing "{prompt}", or "" for negative-only styles
    negative_prompt: str

    def apply(self, positive: str) -> tuple[list[str], list[str], bool]:
        """Fill the template: (positive lines, negative lines, whether '{prompt}' was used)."""
        has_placeholder = "{prompt}" in self.prompt
        filled = self.prompt.replace("{prompt}", positive)
        return filled.splitlines(), self.negative_prompt.splitlines(), has_placeholder


class StyleLibrary:
    """The styles known to one server: our files, then any user style folder (later wins)."""

    def __init__(self, styles: Iterable[Style]):
        self._styles: dict[str, Style] = {}
        for style in styles:
            # A later duplicate replaces the content but keeps the first position (dict order).
            self._styles[style.name] = style

    @classmethod
    def load(cls, user_dirs: Iterable[str | Path] = (), *, include_builtin: bool = True) -> "StyleLibrary":
        files: list[Path] = []
        if include_builtin:
            files += [BUILTIN_STYLES_DIR / name for name in BUILTIN_STYLE_FILES]
        for folder in user_dirs:
            folder = Path(folder)
            if folder.is_dir():
                files += sorted(p for p in folder.rglob("*.json") if p.is_file())
        styles: list[Style] = []
        for path in files:
            styles += read_style_file(path)
        return cls(styles)

    # --- queries -------------------------------------------------------------------------
    def names(self) -> list[str]:
        """Every selectable name, in the order GET /v1/engines/styles returns them."""
        return [FOOOCUS_V2, RANDOM_STYLE, *self._styles]

    def style_names(self) -> list[str]:
        """The names of real (template) styles, without the two pseudo-styles."""
        return list(self._styles)

    def __contains__(self, name: object) -> bool:
        return name in self._styles or name in PSEUDO_STYLES

    def __len__(self) -> int:
        return len(self._styles)

    def get(self, name: str) -> Style:
        try:
            return self._styles[name]
        except KeyError:
            raise UnknownStylesError([name]) from None

    def unknown(self, names: Iterable[str]) -> list[str]:
        return [n for n in names if n not in self]

    def check(self, names: Iterable[str]) -> list[str]:
        """Return the names unchanged, or raise UnknownStylesError listing every unknown one."""
        names = list(names)
        bad = self.unknown(names)
        if bad:
            raise UnknownStylesError(bad)
        return names

    def filter_known(self, names: Iterable[str]) -> list[str]:
        """Fooocus-API's lenient behaviour: unknown names are silently dropped."""
        return [n for n in names if n in self]

    # --- application -------------------------------------------------------------------
    def random_style_name(self, rng: random.Random) -> str:
        # One rng.choice over every style, drawn from the image's own seeded RNG.
        return rng.choice(list(self._styles))

    def resolve(self, names: Sequence[str], rng: random.Random) -> list[str]:
        """Replace each "Random Style" by a drawn style name (one draw per occurrence, in order)."""
        return [self.random_style_name(rng) if n == RANDOM_STYLE else n for n in names]

    def apply(self, name: str, positive: str) -> tuple[list[str], list[str]]:
        """Apply one style to a prompt: (positive parts, negative parts)."""
        positive_parts, negative_parts, _ = self.get(name).apply(positive)
        return positive_parts, negative_parts

    def apply_many(self, names: Sequence[str], positive: str) -> tuple[list[str], list[str]]:
        """Apply styles in order as Fooocus does (spec 7.3).

        Each style's filled template lines are appended to the positive parts and its negative
        lines to the negative parts. If no style used "{prompt}", the raw prompt goes first.
        With no styles at all the positive parts are just the prompt.
        """
        if not names:
            return [positive], []
        positive_parts: list[str] = []
        negative_parts: list[str] = []
        placeholder_used = False
        for name in names:
            p, n, used = self.get(name).apply(positive)
            positive_parts += p
            negative_parts += n
            placeholder_used = placeholder_used or used
        if not placeholder_used:
            positive_parts.insert(0, positive)
        return positive_parts, negative_parts


def read_style_file(path: str | Path) -> list[Style]:
    """Read one style file; a broken file is logged and skipped, as Fooocus does."""
    path = Path(path)
    try:
        entries = json.loads(path.read_text(encoding="utf-8"))
        styles = []
        for entry in entries:
            styles.append(
                Style(
                    name=normalize_style_name(str(entry["name"])),
                    prompt=str(entry.get("prompt") or ""),
                    negative_prompt=str(entry.get("negative_prompt") or ""),
                )
            )
        return styles
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        _log.warning("failed to load style file %s: %s", path, exc)
        return []
