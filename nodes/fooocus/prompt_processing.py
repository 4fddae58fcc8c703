"""Fooocus prompt processing (spec 7.1-7.3): from request text to one prompt task per image.

Order of operations, as Fooocus runs it:
1. "Fooocus V2" is taken out of the style list and turns expansion on.
2. Prompt and negative are split into lines, each line cleaned (``safe_str``), empty lines
   dropped; line 1 is the main prompt, the rest are extra prompts. An empty main prompt turns
   expansion off.
3. Inline ``<lora:name:weight>`` tags are taken out of the main prompt (once, for all images).
4. Per image i: seed_i = (seed + i) mod 2^63 (or seed when increment is disabled) and
   rng_i = random.Random(seed_i); wildcards in the main prompt, then arrays in it, then
   wildcards in the negative, the extra positive and extra negative lines (one rng, in that
   order); "Random Style" entries are drawn from the same rng; styles are applied; the user
   negative and the extra lines are appended; empty parts are removed.
5. Expansion (if on) is computed later from ``PromptTask.prompt`` and ``seed`` and appended as
   the last positive part (``PromptTask.with_expansion``).
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass, field, replace
from pathlib import PurePath
from typing import Optional, Sequence

from .styles import FOOOCUS_V2, StyleLibrary
from .wildcards import WildcardLibrary, apply_arrays

MAX_SEED = 2**63 - 1  # Fooocus constants.MAX_SEED; task seeds wrap modulo MAX_SEED + 1
DEFAULT_MAX_LORAS = 5  # Fooocus default_max_lora_number

Lora = tuple[str, float]  # (file name relative to the loras folder, weight)

_INLINE_LORA = re.compile(r"(<lora:([^:]+):([+-]?(?:\d+(?:\.\d*)?|\.\d+))>)")


def safe_str(text: str) -> str:
    """Collapse repeated spaces and strip commas, dots, spaces and line breaks at both ends."""
    return re.sub(r" {2,}", " ", str(text)).strip(",. \r\n")


def remove_empty_str(items: Sequence[str], default: Optional[str] = None) -> list[str]:
    kept = [x for x in items if x != ""]
    if not kept and default is not None:
        return [default]
    return kept


def split_prompt_lines(text: str) -> tuple[str, list[str]]:
    """(main line, extra lines) of a prompt after per-line cleaning; main may be ''."""
    lines = remove_empty_str([safe_str(line) for line in str(text).splitlines()], default="")
    return lines[0], lines[1:]


def cleanup_prompt(prompt: str) -> str:
    """Comma normalisation: single spaces, no empty comma items, items joined by ', '."""
    prompt = re.sub(" +", " ", prompt)
    prompt = re.sub(",+", ",", prompt)
    return ", ".join(item.strip() for item in prompt.split(",") if item.strip() != "")


def _lora_by_stem(stem: str, lora_filenames: Sequence[str]) -> Optional[str]:
    for filename in lora_filenames:
        if PurePath(filename).stem == stem:
            return filename
    return None


def extract_inline_loras(
    prompt: str,
    loras: Sequence[Lora] = (),
    *,
    lora_filenames: Sequence[str] = (),
    limit: int = DEFAULT_MAX_LORAS,
) -> tuple[list[Lora], str]:
    """Take ``<lora:NAME:WEIGHT>`` tags out of a prompt.

    NAME is matched against the stems of ``lora_filenames`` (tags naming no file are dropped
    from the text but add nothing). New LoRAs already among ``loras`` (by file name) or
    repeated are skipped; when any is added the result is ``loras + new`` without "None"
    entries, capped at ``limit``. The returned prompt is always comma-normalised.
    Returns (loras, cleaned prompt).
    """
    loras = list(loras)
    found: list[Lora] = []
    kept_items: list[str] = []
    for item in prompt.split(","):
        for whole, name, weight in _INLINE_LORA.findall(item):
            filename = _lora_by_stem(name, lora_filenames)
            if filename is not None:
                found.append((filename, float(weight)))
            item = item.replace(whole, "")
        kept_items.append(item)
    cleaned = cleanup_prompt(", ".join(kept_items))

    known_names = [name for name, _ in loras]
    new: list[Lora] = []
    for lora in found:
        if lora[0] in known_names or lora in new:
            continue
        new.append(lora)
    if not new:
        return loras, cleaned
    merged = [lora for lora in loras + new if lora[0] != "None"]
    return merged[:limit], cleaned


def resolve_seed(seed: int, rng: Optional[random.Random] = None) -> int:
    """-1 (or anything outside [0, 2^63-1]) means a random seed, as in Fooocus-API."""
    seed = int(seed)
    if 0 <= seed <= MAX_SEED:
        return seed
    return (rng or random.Random()).randint(0, MAX_SEED)


def task_seed(seed: int, index: int, disable_seed_increment: bool = False) -> int:
    return seed % (MAX_SEED + 1) if disable_seed_increment else (seed + index) % (MAX_SEED + 1)


@dataclass(frozen=True)
class PromptRequest:
    """The prompt-related fields of a Fooocus request."""

    prompt: str = ""
    negative_prompt: str = ""
    style_selections: tuple[str, ...] = ()
    loras: tuple[Lora, ...] = ()  # enabled, non-"None" UI LoRAs, in order
    read_wildcards_in_order: bool = False
    disable_seed_increment: bool = False


@dataclass(frozen=True)
class PromptTask:
    """Everything one image needs from prompt processing."""

    index: int
    seed: int
    prompt: str  # main prompt after LoRA tags, wildcards and arrays (the expansion input)
    negative_prompt: str
    positive: tuple[str, ...]  # text workloads to encode, in order
    negative: tuple[str, ...]
    styles: tuple[str, ...]  # applied styles ("Random Style" resolved; "Fooocus V2" excluded)
    use_expansion: bool
    loras: tuple[Lora, ...]  # user + inline LoRAs, then the performance LoRA
    extra_positive: tuple[str, ...] = ()
    extra_negative: tuple[str, ...] = ()
    expansion: str = ""
    # Number of positive workloads whose pooled outputs are summed: the expansion adds
    # tokens but no pooled vector (spec 7.5).
    positive_pool_count: int = field(default=0)

    @property
    def negative_pool_count(self) -> int:
        return len(self.negative)

    @property
    def log_positive_prompt(self) -> str:
        return "\n".join([self.prompt, *self.extra_positive])

    @property
    def log_negative_prompt(self) -> str:
        return "\n".join([self.negative_prompt, *self.extra_negative])

    @property
    def log_styles(self) -> list[str]:
        """Styles as the metadata logs them: "Fooocus V2" first when expansion was used."""
        return ([FOOOCUS_V2] if self.use_expansion else []) + list(self.styles)

    def with_expansion(self, expansion: str) -> "PromptTask":
        """Append the expanded prompt as the last positive workload."""
        return replace(self, expansion=expansion, positive=self.positive + (expansion,))


def split_expansion_flag(style_selections: Sequence[str]) -> tuple[bool, list[str]]:
    """(expansion requested, the other styles in order)."""
    styles = [s for s in style_selections if s != FOOOCUS_V2]
    return len(styles) != len(style_selections), styles


def _without_file(filenames: Sequence[str], lora: Optional[Lora]) -> list[str]:
    # The performance LoRA cannot be picked by an inline tag (Fooocus remove_performance_lora).
    if lora is None:
        return list(filenames)
    target = PurePath(lora[0]).name
    return [f for f in filenames if PurePath(f).name != target]


def build_tasks(
    request: PromptRequest,
    image_number: int,
    seed: int,
    *,
    styles: StyleLibrary,
    wildcards: WildcardLibrary,
    lora_filenames: Sequence[str] = (),
    performance_lora: Optional[Lora] = None,
    max_loras: int = DEFAULT_MAX_LORAS,
) -> list[PromptTask]:
    """One PromptTask per image (spec 7.1-7.3). ``seed`` must already be resolved (>= 0).

    Raises styles.UnknownStylesError when a selected style name is unknown; callers that want
    Fooocus-API's lenient behaviour filter with ``StyleLibrary.filter_known`` first.
    """
    use_expansion, style_names = split_expansion_flag(request.style_selections)
    styles.check(style_names)

    prompt, extra_positive = split_prompt_lines(request.prompt)
    negative_prompt, extra_negative = split_prompt_lines(request.negative_prompt)
    if prompt == "":
        use_expansion = False  # expanding nothing only adds noise

    loras, prompt = extract_inline_loras(
        prompt,
        request.loras,
        lora_filenames=_without_file(lora_filenames, performance_lora),
        limit=max_loras,
    )
    if performance_lora is not None:
        loras = loras + [performance_lora]

    in_order = request.read_wildcards_in_order
    tasks = []
    for i in range(int(image_number)):
        seed_i = task_seed(seed, i, request.disable_seed_increment)
        rng = random.Random(seed_i)
        task_prompt = apply_arrays(wildcards.apply(prompt, rng, i, in_order), i)
        task_negative = wildcards.apply(negative_prompt, rng, i, in_order)
        task_extra_pos = [wildcards.apply(p, rng, i, in_order) for p in extra_positive]
        task_extra_neg = [wildcards.apply(p, rng, i, in_order) for p in extra_negative]

        task_styles = styles.resolve(style_names, rng)
        positive, negative = styles.apply_many(task_styles, task_prompt)
        negative = negative + [task_negative]  # the user negative is always its own workload
        positive = remove_empty_str(positive + task_extra_pos, default=task_prompt)
        negative = remove_empty_str(negative + task_extra_neg, default=task_negative)

        tasks.append(
            PromptTask(
                index=i,
                seed=seed_i,
                prompt=task_prompt,
                negative_prompt=task_negative,
                positive=tuple(positive),
                negative=tuple(negative),
                styles=tuple(task_styles),
                use_expansion=use_expansion,
                loras=tuple(loras),
                extra_positive=tuple(task_extra_pos),
                extra_negative=tuple(task_extra_neg),
                positive_pool_count=len(positive),
            )
        )
    return tasks
