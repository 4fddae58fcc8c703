"""The "Fooocus V2" prompt expansion (spec 7.4): a GPT-2 that appends style words to a prompt.

The model folder has Fooocus's layout (``models/prompt_expansion/fooocus_expansion``):
``config.json``, ``pytorch_model.bin`` or ``model.safetensors``, GPT-2 tokenizer files
(``tokenizer.json`` or ``vocab.json`` + ``merges.txt``) and ``positive.txt`` (the allowed words).

Decoding: the prompt (cleaned, plus ",") is extended to the next multiple of 75 tokens by
top-k (100) sampling at temperature 1 where every token that is not an allowed word, and every
token already present, gets a -8192 logit bias; "," is always allowed. Sampling uses its own
``torch.Generator`` seeded with ``seed mod 2^32``, which draws the same numbers as Fooocus's
global ``transformers.set_seed`` + ``generate`` (tested against ``generate``).

Prompts longer than the model's context (GPT-2: 1024 positions; Fooocus itself fails on them):
the continuation is still as long as the whole prompt asks for, but the model reads only the
prompt's last tokens that leave room for it; every prompt token still counts as "already
present". The result's message says so, for the job's status.

transformers is imported only inside functions: without it, or without the model files,
expansion degrades to "prompt unchanged + a status message" and the job continues.
"""

from __future__ import annotations

import inspect
import json
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence

import torch

EXPANSION_FOLDER = "prompt_expansion/fooocus_expansion"  # relative to the models directory
SEED_LIMIT = 2**32  # Fooocus SEED_LIMIT_NUMPY: expansion seeds wrap here
NEG_INF = -8192.0  # Fooocus's "forbidden" logit bias (finite, not -inf)
TOP_K = 100
CHUNK_TOKENS = 75  # one CLIP chunk: expansion fills the prompt up to a multiple of it
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")


def _safe_str(text: str) -> str:
    # Same cleaning as prompt_processing.safe_str (kept local: this module stands alone).
    return re.sub(r" {2,}", " ", str(text)).strip(",. \r\n")


class ExpansionUnavailable(RuntimeError):
    """The expansion model cannot be used (files or transformers missing)."""


@dataclass(frozen=True)
class ExpansionResult:
    text: str  # the expanded prompt, or the prompt unchanged when not expanded
    expanded: bool
    # status line for the job: why it was not expanded, or what part of the prompt the model read
    message: Optional[str] = None


def missing_expansion_files(folder: str | Path) -> list[str]:
    """Names of required files absent from an expansion model folder."""
    folder = Path(folder)
    missing = [name for name in ("config.json", "positive.txt") if not (folder / name).is_file()]
    if not any((folder / name).is_file() for name in WEIGHT_FILES):
        missing.append(" or ".join(WEIGHT_FILES))
    has_tokenizer = (folder / "tokenizer.json").is_file() or (
        (folder / "vocab.json").is_file() and (folder / "merges.txt").is_file()
    )
    if not has_tokenizer:
        missing.append("tokenizer.json or vocab.json + merges.txt")
    return missing


def read_positive_words(path: str | Path) -> list[str]:
    lines = Path(path).read_text(encoding="utf-8").splitlines()
    return [line.lower() for line in lines if line != ""]


class PromptExpander:
    """A loaded expansion model. ``expand(prompt, seed)`` is deterministic per seed."""

    def __init__(self, model: Any, tokenizer: Any, allowed_words: Sequence[str], *, device: str | torch.device = "cpu"):
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.device = torch.device(device)
        vocab = tokenizer.get_vocab()
        vocab_size = int(model.config.vocab_size)
        # GPT-2 marks a leading space with "Ġ": allowed words are whole words after a space.
        allowed = sorted({vocab[t] for t in ("Ġ" + w for w in allowed_words) if t in vocab and vocab[t] < vocab_size})
        self.allowed_token_ids = allowed
        bias = torch.full((1, vocab_size), NEG_INF)
        bias[0, allowed] = 0.0
        self._word_bias = bias
        comma = vocab.get(",")
        if comma is None:
            raise ExpansionUnavailable("the expansion tokenizer has no ',' token")
        self.comma_id = int(comma)
        # transformers 5 renamed the KV-cache argument "past_key_values" to "cache".
        params = inspect.signature(model.forward).parameters
        self._cache_arg = "cache" if "cache" in params else "past_key_values"

    @classmethod
    def load(cls, folder: str | Path, *, device: str | torch.device = "cpu", dtype: Optional[torch.dtype] = None) -> "PromptExpander":
        """Load a Fooocus expansion folder; raises ExpansionUnavailable with the reason."""
        folder = Path(folder)
        missing = missing_expansion_files(folder)
        if missing:
            raise ExpansionUnavailable(f"expansion model files missing in {folder}: {', '.join(missing)}")
        try:
            from transformers import GPT2LMHeadModel, GPT2Tokenizer
        except ImportError as exc:  # transformers is optional at runtime
            raise ExpansionUnavailable(f"transformers is not installed ({exc})") from exc
        device = torch.device(device)
        if dtype is None:
            dtype = torch.float16 if device.type == "cuda" else torch.float32
        tokenizer = GPT2Tokenizer.from_pretrained(str(folder), local_files_only=True)
        model = GPT2LMHeadModel.from_pretrained(str(folder), local_files_only=True, dtype=dtype)
        model.to(device)
        return cls(model, tokenizer, read_positive_words(folder / "positive.txt"), device=device)

    def _logits_bias(self, token_ids: torch.Tensor) -> torch.Tensor:
        bias = self._word_bias.clone()
        bias[0, token_ids[0].cpu().long()] = NEG_INF  # no token twice (prompt included)
        bias[0, self.comma_id] = 0.0
        return bias

    def process_logits(self, token_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        """The word filter, shaped as a transformers logits processor ``(input_ids, scores)``."""
        return scores + self._logits_bias(token_ids).to(scores)

    @property
    def context_tokens(self) -> int:
        """Positions the model can attend over (prompt read + tokens generated)."""
        return int(self.model.config.n_positions)

    def expand(self, prompt: str, seed: int) -> str:
        return self.run(prompt, seed).text

    @torch.no_grad()
    def run(self, prompt: str, seed: int) -> ExpansionResult:
        """The expanded prompt, with a message when the model could read only part of it."""
        if prompt == "":
            return ExpansionResult("", True)
        text = _safe_str(prompt) + ","
        # verbose=False: a prompt longer than the model's context is expected here (see below)
        ids = self.tokenizer(text, return_tensors="pt", verbose=False).input_ids.to(self.device)
        length = int(ids.shape[1])
        new_tokens = CHUNK_TOKENS * math.ceil(length / CHUNK_TOKENS) - length
        if new_tokens == 0:
            return ExpansionResult(text[:-1], True)
        window = self.context_tokens - new_tokens
        if window < 1:
            return ExpansionResult(prompt, False, (
                f"Fooocus V2 prompt expansion skipped: its model's context ({self.context_tokens} tokens) "
                f"has no room for {new_tokens} new tokens"))
        message = None
        if length > window:
            message = (f"Fooocus V2 prompt expansion read only the last {window} of the prompt's {length} "
                       f"tokens (its model's context is {self.context_tokens} tokens)")
        continuation = self._sample(ids, ids[:, -window:], new_tokens, seed)
        decoded = self.tokenizer.decode(torch.cat([ids, continuation], dim=1)[0].tolist(), skip_special_tokens=True)
        return ExpansionResult(_safe_str(decoded), True, message)

    def _sample(self, ids: torch.Tensor, visible: torch.Tensor, new_tokens: int, seed: int) -> torch.Tensor:
        """`new_tokens` ids continuing `visible` (the tail of `ids` the model reads); no token of
        `ids` or of the continuation repeats."""
        generator = torch.Generator(device=self.device).manual_seed(int(seed) % SEED_LIMIT)
        cache = None
        step_input = visible
        start = ids.shape[1]
        for _ in range(new_tokens):
            out = self.model(input_ids=step_input, use_cache=True, **{self._cache_arg: cache})
            cache = out.get(self._cache_arg)
            scores = self.process_logits(ids, out.logits[:, -1, :].float())
            kth_best = torch.topk(scores, min(TOP_K, scores.shape[-1])).values[..., -1:]
            scores = scores.masked_fill(scores < kth_best, float("-inf"))
            next_id = torch.multinomial(torch.softmax(scores, dim=-1), 1, generator=generator)
            ids = torch.cat([ids, next_id], dim=1)
            step_input = next_id
        return ids[:, start:]


class FooocusExpansion:
    """Expansion that never fails a job: with no usable model it returns the prompt unchanged."""

    def __init__(self, expander: Optional[PromptExpander], unavailable_reason: Optional[str] = None):
        self.expander = expander
        self.unavailable_reason = unavailable_reason

    @classmethod
    def from_folder(cls, folder: str | Path, *, device: str | torch.device = "cpu", dtype: Optional[torch.dtype] = None) -> "FooocusExpansion":
        try:
            return cls(PromptExpander.load(folder, device=device, dtype=dtype))
        except ExpansionUnavailable as exc:
            return cls(None, str(exc))

    @property
    def available(self) -> bool:
        return self.expander is not None

    def expand(self, prompt: str, seed: int) -> ExpansionResult:
        if self.expander is None:
            return ExpansionResult(
                prompt, False, f"Fooocus V2 prompt expansion skipped, prompt used unchanged: {self.unavailable_reason}"
            )
        return self.expander.run(prompt, seed)


# --- a tiny random model in the same folder format (tests and offline demos) ----------------

TINY_POSITIVE_WORDS = (
    "detailed", "intricate", "elegant", "sharp", "cinematic", "vivid", "glowing", "beautiful", "dramatic",
    "atmospheric", "luminous", "serene", "epic", "delicate", "radiant", "moody", "colorful", "soft",
    "crisp", "stunning", "majestic", "dreamy", "ornate", "rich", "gorgeous", "polished", "balanced",
    "dynamic", "subtle", "warm", "cool", "bright", "textured", "refined", "magical", "peaceful",
    "striking", "graceful", "vibrant", "highly", "professional", "artistic", "lighting", "focus",
)


def _byte_symbols() -> list[str]:
    """GPT-2's byte-level alphabet, in its vocabulary order (printable bytes first)."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    symbol = {b: chr(b) for b in printable}
    others = [b for b in range(256) if b not in symbol]
    for n, b in enumerate(others):
        symbol[b] = chr(256 + n)  # bytes without a visible glyph get code points from 256 up
    return [symbol[b] for b in printable] + [symbol[b] for b in others]


def _tiny_bpe(words: Sequence[str]) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """Byte-level BPE where each "Ġword" is one token, built by left-to-right merges."""
    vocab = {s: i for i, s in enumerate(_byte_symbols())}
    merges: list[tuple[str, str]] = []
    for word in words:
        token = "Ġ" + word
        for end in range(2, len(token) + 1):
            left, right = token[: end - 1], token[end - 1]
            if token[:end] not in vocab:
                merges.append((left, right))
                vocab[token[:end]] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    return vocab, merges


def write_tiny_expansion_model(
    folder: str | Path,
    *,
    words: Sequence[str] = TINY_POSITIVE_WORDS,
    n_layer: int = 2,
    n_embd: int = 32,
    n_head: int = 2,
    n_positions: int = 256,
    seed: int = 0,
    weights: str = "safetensors",
) -> Path:
    """Write a random-weight GPT-2 expansion folder in Fooocus's format; returns the folder.

    ``weights`` is "safetensors" (model.safetensors) or "bin" (pytorch_model.bin, the name
    Fooocus gives its downloaded fooocus_expansion.bin).
    """
    from transformers import GPT2Config, GPT2LMHeadModel, GPT2Tokenizer

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    words = [w.lower() for w in words]
    vocab, merges = _tiny_bpe(words)
    eot = vocab["<|endoftext|>"]
    config = GPT2Config(
        vocab_size=len(vocab), n_positions=n_positions, n_embd=n_embd, n_layer=n_layer, n_head=n_head,
        bos_token_id=eot, eos_token_id=eot,
    )
    model = GPT2LMHeadModel(config)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith("bias"):
                param.zero_()
            elif ".ln_" in name or name.startswith("transformer.ln_f"):
                param.fill_(1.0)
            else:  # a wide spread so different seeds give visibly different expansions
                param.copy_(torch.randn(param.shape, generator=generator) * 0.3)

    if weights == "safetensors":
        model.save_pretrained(str(folder))
    elif weights == "bin":
        config.save_pretrained(str(folder))
        torch.save(model.state_dict(), folder / "pytorch_model.bin")
    else:
        raise ValueError(f"weights must be 'safetensors' or 'bin', not {weights!r}")

    tokenizer = GPT2Tokenizer(vocab=vocab, merges=merges)
    tokenizer.save_pretrained(str(folder))
    # The classic slow-tokenizer files too, as in Fooocus's shipped folder.
    (folder / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    (folder / "merges.txt").write_text(
        "#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges), encoding="utf-8"
    )
    (folder / "positive.txt").write_text("\n".join(words) + "\n", encoding="utf-8")
    return folder
