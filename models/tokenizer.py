"""CLIP's byte-level BPE tokenizer, dependency-free.

Produces the same ids as transformers' (tokenizers-backed) `CLIPTokenizer` on the same files:

1. The exact special strings `<|startoftext|>` / `<|endoftext|>` in the raw text become their ids
   (transformers extracts added tokens before normalising).
2. Text cleaning = transformers' normaliser: Unicode NFC, every run of whitespace -> one space,
   lower-case character by character (so a final capital sigma becomes "σ", not "ς").
   The original OpenAI code also runs `ftfy.fix_text` and `html.unescape`; transformers does not,
   and neither do we, so mojibake and `&amp;` are tokenized as written.
3. Pre-tokenization = CLIP's regex `'s|'t|'re|'ve|'m|'ll|'d|\\p{L}+|\\p{N}|[^\\s\\p{L}\\p{N}]+`,
   implemented as a small scanner over `unicodedata` categories (Python's `re` has no `\\p{..}`).
4. Each piece: UTF-8 bytes -> GPT-2 printable byte characters, `</w>` appended to the last one,
   then the merges applied in rank order.

Files: `vocab.json` + `merges.txt` (Hugging Face layout), or open_clip's
`bpe_simple_vocab_16e6.txt.gz`, whose vocabulary CLIP builds from the merges (see
`vocab_from_merges`).
"""
from __future__ import annotations

import gzip
import importlib.util
import json
import unicodedata
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

START_OF_TEXT = "<|startoftext|>"
END_OF_TEXT = "<|endoftext|>"
END_OF_WORD = "</w>"
BPE_GZ_NAME = "bpe_simple_vocab_16e6.txt.gz"
# The merges CLIP keeps from the gz file (49152 - 256 bytes - 2 specials); the rest are unused.
CLIP_GZ_MERGE_COUNT = 49152 - 256 - 2

# Unicode White_Space, what `\s` matches in the tokenizers library (Python's str.isspace() differs:
# it also accepts the ASCII separators U+001C..U+001F).
_WHITESPACE = frozenset(
    "\t\n\x0b\x0c\r \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009"
    "\u200a\u2028\u2029\u202f\u205f\u3000"
)
_CONTRACTIONS = ("'s", "'t", "'re", "'ve", "'m", "'ll", "'d")


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible map from each byte to a printable character.

    Printable Latin-1 bytes map to themselves; the others (controls, space, ...) are shifted to
    code points 256 and up, in byte order, so BPE never sees whitespace or control characters.
    """
    printable = (
        list(range(ord("!"), ord("~") + 1))
        + list(range(ord("\xa1"), ord("\xac") + 1))
        + list(range(ord("\xae"), ord("\xff") + 1))
    )
    mapping = {b: chr(b) for b in printable}
    shifted = 0
    for b in range(256):
        if b not in mapping:
            mapping[b] = chr(256 + shifted)
            shifted += 1
    return mapping  # insertion order (printable bytes first) is the order of CLIP's vocabulary


def vocab_from_merges(merges: Sequence[tuple[str, str]]) -> dict[str, int]:
    """CLIP's vocabulary: 256 byte symbols, their `</w>` forms, one entry per merge, then the
    two special tokens (so `<|endoftext|>` has the highest id, which pooling relies on)."""
    byte_symbols = list(bytes_to_unicode().values())
    symbols = byte_symbols + [s + END_OF_WORD for s in byte_symbols]
    symbols += [a + b for a, b in merges]
    symbols += [START_OF_TEXT, END_OF_TEXT]
    return {s: i for i, s in enumerate(symbols)}


def parse_merges(lines: Iterable[str]) -> list[tuple[str, str]]:
    """Merge pairs from merges.txt lines; skips the `#version` header and blank lines."""
    merges = []
    for line in lines:
        line = line.rstrip("\r\n")
        if not line or line.startswith("#version"):
            continue
        left, right = line.split(" ")
        merges.append((left, right))
    return merges


def _is_letter(char: str) -> bool:
    return unicodedata.category(char).startswith("L")


def _is_number(char: str) -> bool:
    return unicodedata.category(char).startswith("N")


def normalize_text(text: str) -> str:
    """NFC, whitespace runs -> one space, per-character lower case (transformers' normaliser)."""
    text = unicodedata.normalize("NFC", text)
    out = []
    in_space = False
    for char in text:
        if char in _WHITESPACE:
            if not in_space:
                out.append(" ")
            in_space = True
        else:
            out.append(char.lower())
            in_space = False
    return "".join(out)


def split_words(text: str) -> list[str]:
    """CLIP's pre-tokenizer regex as a scanner; whitespace separates pieces and is dropped."""
    pieces = []
    i, n = 0, len(text)
    while i < n:
        char = text[i]
        if char in _WHITESPACE:
            i += 1
            continue
        # Contractions are tried first at every piece start, as the regex alternation is ordered.
        if char == "'":
            contraction = next((c for c in _CONTRACTIONS if text.startswith(c, i)), None)
            if contraction is not None:
                pieces.append(contraction)
                i += len(contraction)
                continue
        j = i + 1
        if _is_letter(char):
            while j < n and _is_letter(text[j]):
                j += 1
        elif not _is_number(char):  # a number is always a piece of one character
            while j < n and not (text[j] in _WHITESPACE or _is_letter(text[j]) or _is_number(text[j])):
                j += 1
        pieces.append(text[i:j])
        i = j
    return pieces


class CLIPTokenizer:
    """Text -> CLIP token ids (without the start/end tokens; callers frame windows themselves)."""

    def __init__(self, vocab: dict[str, int], merges: Sequence[tuple[str, str]], cache_size: int = 20000):
        self.vocab = dict(vocab)
        self.merge_ranks = {pair: rank for rank, pair in enumerate(merges)}
        self.start_token_id = self.vocab[START_OF_TEXT]
        self.end_token_id = self.vocab[END_OF_TEXT]
        self._byte_chars = bytes_to_unicode()
        self._cache: dict[str, list[int]] = {}
        self._cache_size = cache_size

    @classmethod
    def from_files(cls, vocab_path: str | Path, merges_path: str | Path) -> "CLIPTokenizer":
        vocab = json.loads(Path(vocab_path).read_text(encoding="utf-8"))
        merges = parse_merges(Path(merges_path).read_text(encoding="utf-8").splitlines())
        return cls(vocab, merges)

    @classmethod
    def from_bpe_gz(cls, path: str | Path, merge_count: int = CLIP_GZ_MERGE_COUNT) -> "CLIPTokenizer":
        """open_clip's gz merges file: line 1 is a header, CLIP uses the next `merge_count` lines."""
        with gzip.open(path, "rt", encoding="utf-8") as f:
            lines = f.read().split("\n")
        merges = [tuple(line.split()) for line in lines[1 : merge_count + 1] if line.strip()]
        return cls(vocab_from_merges(merges), merges)

    @classmethod
    def from_located(cls, files: "TokenizerFiles") -> "CLIPTokenizer":
        if files.bpe_gz is not None:
            return cls.from_bpe_gz(files.bpe_gz)
        return cls.from_files(files.vocab, files.merges)

    @property
    def vocab_size(self) -> int:
        return len(self.vocab)

    def encode(self, text: str) -> list[int]:
        """Token ids of `text`, exactly `CLIPTokenizer(text)["input_ids"][1:-1]` of transformers."""
        ids: list[int] = []
        for segment, special_id in self._split_specials(text):
            if special_id is not None:
                ids.append(special_id)
                continue
            for piece in split_words(normalize_text(segment)):
                ids.extend(self._encode_piece(piece))
        return ids

    def _split_specials(self, text: str) -> list[tuple[str, int | None]]:
        if "<|" not in text:  # the common case, checked once per word of a long prompt
            return [(text, None)] if text else []
        specials = {START_OF_TEXT: self.start_token_id, END_OF_TEXT: self.end_token_id}
        parts: list[tuple[str, int | None]] = []
        start = 0
        while True:
            hits = [(text.find(s, start), s) for s in specials]
            hits = [(pos, s) for pos, s in hits if pos >= 0]
            if not hits:
                break
            pos, special = min(hits)
            if pos > start:
                parts.append((text[start:pos], None))
            parts.append((special, specials[special]))
            start = pos + len(special)
        if start < len(text):
            parts.append((text[start:], None))
        return parts

    def _encode_piece(self, piece: str) -> list[int]:
        cached = self._cache.get(piece)
        if cached is not None:
            return cached
        symbols = [self._byte_chars[b] for b in piece.encode("utf-8")]
        symbols[-1] += END_OF_WORD
        symbols = self._apply_merges(symbols)
        unknown = self.end_token_id  # transformers' CLIP unk token is <|endoftext|>
        ids = [self.vocab.get(s, unknown) for s in symbols]
        if len(self._cache) >= self._cache_size:
            self._cache.clear()
        self._cache[piece] = ids
        return ids

    def _apply_merges(self, symbols: list[str]) -> list[str]:
        """Repeatedly merge every occurrence of the lowest-ranked adjacent pair."""
        ranks = self.merge_ranks
        while len(symbols) > 1:
            pairs = {(a, b) for a, b in zip(symbols, symbols[1:])}
            best = min(pairs, key=lambda p: ranks.get(p, float("inf")))
            if best not in ranks:
                break
            merged: list[str] = []
            i = 0
            while i < len(symbols):
                if i + 1 < len(symbols) and (symbols[i], symbols[i + 1]) == best:
                    merged.append(symbols[i] + symbols[i + 1])
                    i += 2
                else:
                    merged.append(symbols[i])
                    i += 1
            symbols = merged
        return symbols


# ---------------------------------------------------------------------------------------------
# Locating the files

TOKENIZER_SUBDIRS = ("", "clip_tokenizer", "text_encoders/clip_tokenizer", "tokenizer")


@dataclass(frozen=True)
class TokenizerFiles:
    """Either `vocab` + `merges` (Hugging Face layout) or `bpe_gz` (open_clip layout)."""

    vocab: Path | None = None
    merges: Path | None = None
    bpe_gz: Path | None = None


class TokenizerFilesMissing(FileNotFoundError):
    """No CLIP vocabulary was found; the message says where to put one and where to get it."""

    def __init__(self, searched: Sequence[Path]):
        self.searched = list(searched)
        where = ", ".join(str(p) for p in self.searched) or "(no folders given)"
        super().__init__(
            "CLIP tokenizer files not found. Put `vocab.json` and `merges.txt` in "
            "`<models-dir>/text_encoders/clip_tokenizer/` (copy them from the `tokenizer/` folder of "
            "the stable-diffusion-v1-5 or stable-diffusion-xl-base-1.0 repositories on Hugging Face), "
            f"or put open_clip's `{BPE_GZ_NAME}` there instead. Searched: {where}."
        )


# Packages that carry OpenAI's CLIP BPE vocabulary file (the one every SD text encoder uses):
# clip-anytorch (a dependency of this project; its package is `clip`) and open_clip.
BUNDLED_VOCABULARY_PACKAGES = ("clip", "open_clip")


def _open_clip_bundled_bpe() -> Path | None:
    """The gz vocabulary shipped inside an installed package (see BUNDLED_VOCABULARY_PACKAGES).

    Found through the import system's spec, without importing the package (they import torch and more).
    """
    for package in BUNDLED_VOCABULARY_PACKAGES:
        try:
            spec = importlib.util.find_spec(package)
        except (ImportError, ValueError):
            continue
        for location in (spec.submodule_search_locations or ()) if spec is not None else ():
            candidate = Path(location) / BPE_GZ_NAME
            if candidate.is_file():
                return candidate
    return None


def find_tokenizer_files(search_dirs: Iterable[str | Path], use_open_clip_package: bool = True) -> TokenizerFiles:
    """First folder (in order) holding vocab.json + merges.txt or the bpe gz, looking in each
    search dir itself and in its `clip_tokenizer/`, `text_encoders/clip_tokenizer/` and
    `tokenizer/` subfolders; then open_clip's bundled file. Raises `TokenizerFilesMissing`."""
    searched: list[Path] = []
    for base in search_dirs:
        for sub in TOKENIZER_SUBDIRS:
            folder = Path(base) / sub if sub else Path(base)
            searched.append(folder)
            vocab, merges, gz = folder / "vocab.json", folder / "merges.txt", folder / BPE_GZ_NAME
            if vocab.is_file() and merges.is_file():
                return TokenizerFiles(vocab=vocab, merges=merges)
            if gz.is_file():
                return TokenizerFiles(bpe_gz=gz)
    if use_open_clip_package:
        bundled = _open_clip_bundled_bpe()
        if bundled is not None:
            return TokenizerFiles(bpe_gz=bundled)
    raise TokenizerFilesMissing(searched)


def load_clip_tokenizer(search_dirs: Iterable[str | Path], use_open_clip_package: bool = True) -> CLIPTokenizer:
    return CLIPTokenizer.from_located(find_tokenizer_files(search_dirs, use_open_clip_package))
