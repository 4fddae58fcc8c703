"""Prompt emphasis syntax and 77-token windows with per-token weights (ComfyUI/A1111 style).

Syntax, as ComfyUI and Fooocus parse it:
- `(text)` multiplies the weight by 1.1; nesting multiplies: `((text))` = 1.21.
- `(text:1.3)` sets the weight to 1.3 (the last `:` inside the parentheses; it replaces the
  product of the enclosing parentheses rather than multiplying it, as ComfyUI does). A suffix
  that is not a number leaves the text as written, with the 1.1 factor.
- `\\(` and `\\)` are literal parentheses. There is no `[text]` de-emphasis.
- Unmatched parentheses never raise: an unclosed `(` stays literal text at the current weight; a
  stray `)` is kept as text, and (like ComfyUI) the parentheses after it are read as text
  until the nesting count is balanced again.
"""
from __future__ import annotations

import re
from typing import Callable, Protocol

MAX_LENGTH = 77  # tokens per window: start + 75 + end
MAX_WORD_LENGTH = 8  # a word of this many tokens or more may be split across windows
EMPHASIS = 1.1

# Escaped parentheses are swapped for private-use characters while parsing, then restored.
_ESCAPED_OPEN, _ESCAPED_CLOSE = "\ue000", "\ue001"
_PARENTHESIS = re.compile(r"[()]")

WeightedToken = tuple[int, float]
Window = list[WeightedToken]


class TokenEncoder(Protocol):
    start_token_id: int
    end_token_id: int

    def encode(self, text: str) -> list[int]: ...


def _top_level_groups(text: str) -> list[str]:
    """Split into plain runs and outermost `( ... )` groups (parentheses included).

    Tracks a nesting count like ComfyUI: it may go negative after a stray `)`, and a group only
    closes when the count returns to zero. Only the parentheses are visited (prompts may be
    100,000 characters long).
    """
    groups: list[str] = []
    begin = 0  # where the group being read starts
    depth = 0
    for match in _PARENTHESIS.finditer(text):
        at = match.start()
        if match.group() == "(":
            if depth == 0 and at > begin:
                groups.append(text[begin:at])
                begin = at
            depth += 1
        else:
            depth -= 1
            if depth == 0:
                groups.append(text[begin:at + 1])
                begin = at + 1
    if begin < len(text):
        groups.append(text[begin:])
    return groups


def _parse(text: str, weight: float) -> list[tuple[str, float]]:
    out: list[tuple[str, float]] = []
    for group in _top_level_groups(text):
        if len(group) >= 2 and group[0] == "(" and group[-1] == ")":
            inner = group[1:-1]
            inner_weight = weight * EMPHASIS
            colon = inner.rfind(":")
            if colon > 0:
                try:
                    inner_weight = float(inner[colon + 1:])
                    inner = inner[:colon]
                except ValueError:
                    pass
            out.extend(_parse(inner, inner_weight))
        else:
            out.append((group, weight))
    return out


def parse_prompt_weights(text: str) -> list[tuple[str, float]]:
    """Text -> [(segment, weight)], escapes resolved to literal parentheses."""
    text = text.replace("\\(", _ESCAPED_OPEN).replace("\\)", _ESCAPED_CLOSE)
    return [
        (segment.replace(_ESCAPED_OPEN, "(").replace(_ESCAPED_CLOSE, ")"), weight)
        for segment, weight in _parse(text, 1.0)
    ]


def chunk_tokens(
    tokenizer: TokenEncoder,
    text: str,
    max_length: int = MAX_LENGTH,
    max_word_length: int = MAX_WORD_LENGTH,
    embedding_lookup: Callable[[str], tuple[list | None, str]] | None = None,
) -> list[Window]:
    """Prompt -> the (token id, weight) bodies of its windows, `max_length - 2` tokens at most.

    The rule of ComfyUI (the version Fooocus ships) and Fooocus: words (split on spaces and
    newlines) are tokenized one by one; a word that does not fit in the current window moves
    whole to the next, unless it has `max_word_length` tokens or more, in which case it fills
    the window and goes on in the next. Every token is kept, however long the prompt. An empty
    prompt gives one empty body.

    embedding_lookup: for words starting with "embedding:", `word -> (placeholder tokens or None,
    leftover text)` (models/textual_inversion.py); the placeholders count as one word.
    """
    encoded: dict[str, list[int]] = {}  # long prompts repeat their words
    words: list[list[WeightedToken]] = []
    for segment, weight in parse_prompt_weights(text):
        for word in segment.replace("\n", " ").split(" "):
            if word and embedding_lookup is not None and word.startswith("embedding:"):
                placeholders, word = embedding_lookup(word)
                if placeholders:
                    words.append([(token, weight) for token in placeholders])
            if word:
                if word not in encoded:
                    encoded[word] = tokenizer.encode(word)
                words.append([(token, weight) for token in encoded[word]])

    capacity = max_length - 2
    bodies: list[Window] = []
    body: Window = []
    for word in words:
        cuttable = len(word) >= max_word_length
        while word:
            room = capacity - len(body)
            if len(word) <= room:
                body.extend(word)
                break
            if cuttable:
                body.extend(word[:room])
                word = word[room:]
            bodies.append(body)
            body = []
    bodies.append(body)
    return bodies


def frame_windows(bodies: list[Window], start: int, end: int, pad: int, max_length: int = MAX_LENGTH) -> list[Window]:
    """Each body as a window: start token, body, end token, then `pad` up to `max_length`
    (special tokens and padding have weight 1)."""
    return [[(start, 1.0), *body, (end, 1.0)] + [(pad, 1.0)] * (max_length - 2 - len(body)) for body in bodies]


def tokenize_weighted(
    tokenizer: TokenEncoder,
    text: str,
    pad_with_end: bool = True,
    max_length: int = MAX_LENGTH,
    max_word_length: int = MAX_WORD_LENGTH,
) -> list[Window]:
    """Prompt -> windows of exactly `max_length` (token id, weight) pairs (see chunk_tokens).

    Padding is the end token (CLIP-L) or 0 (SDXL's CLIP-G, `pad_with_end=False`).
    """
    pad = tokenizer.end_token_id if pad_with_end else 0
    bodies = chunk_tokens(tokenizer, text, max_length, max_word_length)
    return frame_windows(bodies, tokenizer.start_token_id, tokenizer.end_token_id, pad, max_length)


def empty_window(tokenizer: TokenEncoder, pad_with_end: bool = True, max_length: int = MAX_LENGTH) -> Window:
    """The empty prompt's window: start, end, padding (the reference for weighting)."""
    return tokenize_weighted(tokenizer, "", pad_with_end, max_length)[0]
