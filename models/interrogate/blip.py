"""BLIP photo captions (Fooocus "Describe: Photograph", spec §11) on transformers' BlipForConditionalGeneration.

The network is Salesforce's caption checkpoint (`model_base_caption_capfilt_large.pth`), renamed into
transformers' layout at load (blip_keys.py) and loaded strictly. Its tokenizer is BERT's uncased
WordPiece vocabulary plus the two tokens BLIP adds, `[DEC]` (the decoder's start) and `[ENC]`.

Captioning follows BLIP_Decoder.generate with `sample=True` as Fooocus calls it:
* pixels: bicubic resize to the model's side (384) without antialiasing (torchvision's tensor
  `Resize` in the versions Fooocus pins), then CLIP's mean/std;
* text: "a picture of " tokenized, its [CLS] replaced by [DEC] and its [SEP] dropped; then nucleus
  sampling (top_p 0.9 after transformers' default top_k 50), repetition penalty 1.1, at least 10
  and at most 75 tokens counting the prompt's, ending at [SEP]; the decoded text loses its first
  len("a picture of ") characters.
Sampling draws from an explicit `torch.Generator` (never the global RNG), through transformers'
own logits processors, one token at a time with the key/value cache: the same tokens as
transformers' `generate` under the same seed (tested).
"""
from __future__ import annotations

import inspect
import os
import pickle
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Optional

import torch
import torch.nn.functional as F

from .blip_keys import BlipCheckpointError, BlipShape, convert_state_dict

BLIP_CAPTION_FILE = "model_base_caption_capfilt_large.pth"
BOS_TOKEN = "[DEC]"
ENCODER_TOKEN = "[ENC]"
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


class BlipTokenizerMissing(FileNotFoundError):
    """No BERT vocabulary that fits the checkpoint was found."""


@dataclass(frozen=True)
class CaptionSettings:
    """BLIP_Decoder.generate(sample=True) as Fooocus calls it."""

    prompt: str = "a picture of "  # decoder prompt; its characters are cut from the caption
    max_length: int = 75  # most tokens, the prompt's included (Fooocus passes 75)
    min_length: int = 10  # fewest tokens before [SEP] may end the caption, the prompt's included
    top_p: float = 0.9  # nucleus sampling
    top_k: int = 50  # transformers' default, which BLIP's call leaves in place
    repetition_penalty: float = 1.1  # BLIP hard-codes 1.1 for sampling


# --- files --------------------------------------------------------------------------------------
def read_blip_state(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The tensors of a Salesforce BLIP file (`{"model": state_dict, ...}` or a bare state dict),
    unpickled weights-only: a file that needs code to load is refused."""
    path = Path(path)
    try:
        loaded = torch.load(path, map_location="cpu", weights_only=True, mmap=zipfile.is_zipfile(path))
    except pickle.UnpicklingError as error:
        raise BlipCheckpointError(f"{path.name}: refused to load: the pickle needs code beyond plain tensors "
                                  f"({str(error).splitlines()[0]})") from None
    except (RuntimeError, EOFError, ValueError, OSError) as error:
        raise BlipCheckpointError(f"{path.name}: corrupt or truncated checkpoint ({error})") from None
    if isinstance(loaded, dict) and isinstance(loaded.get("model"), dict):
        loaded = loaded["model"]
    if not isinstance(loaded, dict):
        raise BlipCheckpointError(f"{path.name}: holds a {type(loaded).__name__}, not a state dict")
    return {key: value for key, value in loaded.items() if isinstance(value, torch.Tensor)}


def load_bert_tokenizer(folder: str | os.PathLike):
    """transformers' BertTokenizer from a folder with `vocab.txt` (or `tokenizer.json`), with BLIP's
    two added tokens."""
    from transformers import BertTokenizer

    tokenizer = BertTokenizer.from_pretrained(str(folder), local_files_only=True)
    tokenizer.add_special_tokens({"bos_token": BOS_TOKEN})
    tokenizer.add_special_tokens({"additional_special_tokens": [ENCODER_TOKEN]})
    return tokenizer


def has_tokenizer_files(folder: Path) -> bool:
    return (folder / "vocab.txt").is_file() or (folder / "tokenizer.json").is_file()


def find_tokenizer(folders: Iterable[Path], vocab_size: int):
    """The first tokenizer of `folders` whose vocabulary (with BLIP's two tokens) has `vocab_size`
    entries, as the checkpoint's embedding table has rows."""
    folders = list(folders)
    seen = []
    for folder in folders:
        if not has_tokenizer_files(folder):
            continue
        tokenizer = load_bert_tokenizer(folder)
        if len(tokenizer) == vocab_size:
            return tokenizer
        seen.append(f"{folder} ({len(tokenizer)} tokens)")
    where = ", ".join(str(folder) for folder in folders)
    found = f"; tokenizers found do not fit: {', '.join(seen)}" if seen else ""
    raise BlipTokenizerMissing(f"no BERT uncased tokenizer (vocab.txt) for a BLIP checkpoint with {vocab_size} "
                               f"token rows in {where}{found}")


def tokenizer_folders(checkpoint: str | os.PathLike, shared: Iterable[str | os.PathLike] = ()) -> list[Path]:
    """Where a checkpoint's tokenizer may be: `<file stem>_tokenizer/` beside it, then `shared` folders."""
    checkpoint = Path(checkpoint)
    return [checkpoint.with_name(checkpoint.stem + "_tokenizer"), *(Path(folder) for folder in shared)]


def load_blip(path: str | os.PathLike, folders: Iterable[str | os.PathLike]):
    """(BlipForConditionalGeneration, tokenizer) of a Salesforce BLIP caption file, the tokenizer
    being the first of `folders` that fits the checkpoint's vocabulary."""
    state = read_blip_state(path)
    tokenizer = find_tokenizer((Path(folder) for folder in folders), BlipShape.of(state).vocab_size)
    return build_blip(state, tokenizer, name=Path(path).name), tokenizer


def build_blip(state: dict[str, torch.Tensor], tokenizer, name: str = "BLIP checkpoint"):
    """BlipForConditionalGeneration (float32, CPU, eval) with the weights of a Salesforce state dict."""
    from transformers import BlipForConditionalGeneration

    shape = BlipShape.of(state)
    if len(tokenizer) != shape.vocab_size:
        raise BlipCheckpointError(f"{name}: {shape.vocab_size} token rows, but the tokenizer has "
                                  f"{len(tokenizer)} tokens")
    config = shape.transformers_config(bos_token_id=tokenizer.bos_token_id, sep_token_id=tokenizer.sep_token_id,
                                       pad_token_id=tokenizer.pad_token_id)
    with torch.device("meta"):  # no random initialisation of weights that are overwritten at once
        model = BlipForConditionalGeneration(config)
    weights = {key: value.float() if value.is_floating_point() else value
               for key, value in convert_state_dict(state).items()}
    try:
        model.load_state_dict(weights, strict=True, assign=True)
    except RuntimeError as error:  # missing, unexpected or mis-shaped tensors
        raise BlipCheckpointError(f"{name}: not a BLIP caption checkpoint in Salesforce's layout: {error}") from None
    _rebuild_buffers(model, shape)
    _tie_head(model)
    return model.eval()


def _rebuild_buffers(model, shape: BlipShape) -> None:
    embeddings = model.text_decoder.bert.embeddings
    embeddings.position_ids = torch.arange(shape.max_positions).expand((1, -1))
    left = [name for name, tensor in model.state_dict(keep_vars=True).items() if tensor.is_meta]
    left += [name for name, tensor in model.named_buffers() if tensor.is_meta]
    if left:
        raise BlipCheckpointError(f"BLIP tensors not filled by the checkpoint: {left}")


def _tie_head(model) -> None:
    """One tensor for the word embeddings and the output projection when the file has them equal
    (Salesforce ties them), so a device move copies it once."""
    head = model.text_decoder.cls.predictions
    words = model.text_decoder.bert.embeddings.word_embeddings
    if torch.equal(head.decoder.weight, words.weight):
        head.decoder.weight = words.weight
    if torch.equal(head.decoder.bias, head.bias):
        head.decoder.bias = head.bias


# --- captions -----------------------------------------------------------------------------------
def pixel_values(images: torch.Tensor, size: int) -> torch.Tensor:
    """[B, H, W, 3] RGB in 0..1 -> [B, 3, size, size], CLIP-normalised."""
    pixels = images.permute(0, 3, 1, 2).float()
    pixels = F.interpolate(pixels, size=(size, size), mode="bicubic", align_corners=False, antialias=False)
    mean = torch.tensor(CLIP_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(CLIP_STD).view(1, 3, 1, 1)
    return (pixels - mean) / std


def prompt_ids(tokenizer, prompt: str) -> torch.Tensor:
    """[1, n]: the prompt's tokens with [CLS] replaced by [DEC] and the final [SEP] dropped."""
    ids = tokenizer(prompt, return_tensors="pt").input_ids
    ids[:, 0] = tokenizer.bos_token_id
    return ids[:, :-1]


def logits_processors(tokenizer, settings: CaptionSettings, device: torch.device):
    """transformers' processors in the order `generate` applies them for these settings."""
    from transformers import (LogitsProcessorList, MinLengthLogitsProcessor, RepetitionPenaltyLogitsProcessor,
                              TopKLogitsWarper, TopPLogitsWarper)

    return LogitsProcessorList([RepetitionPenaltyLogitsProcessor(settings.repetition_penalty),
                                MinLengthLogitsProcessor(settings.min_length, tokenizer.sep_token_id, device=device),
                                TopKLogitsWarper(settings.top_k), TopPLogitsWarper(settings.top_p)])


def _cache_argument(decoder) -> str:
    # transformers 5.24 renamed the key/value cache argument "past_key_values" to "cache"
    return "cache" if "cache" in inspect.signature(decoder.forward).parameters else "past_key_values"


@torch.no_grad()
def sample_caption_ids(model, tokenizer, pixels: torch.Tensor, *, seed: int,
                       settings: CaptionSettings = CaptionSettings(),
                       check: Optional[Callable[[], None]] = None) -> torch.Tensor:
    """[1, n] token ids: the prompt and the sampled caption (ending with [SEP] unless cut at max_length).

    `pixels` is one image ([1, 3, S, S]) on the model's device and dtype; `check` runs before every
    token (it raises to stop)."""
    if pixels.shape[0] != 1:
        raise ValueError(f"one image at a time: got a batch of {pixels.shape[0]}")
    device = pixels.device
    image_embeds = model.vision_model(pixel_values=pixels)[0]
    image_mask = torch.ones(image_embeds.shape[:-1], dtype=torch.long, device=device)
    ids = prompt_ids(tokenizer, settings.prompt).to(device)
    processors = logits_processors(tokenizer, settings, device)
    generator = torch.Generator(device=device).manual_seed(int(seed))
    decoder = model.text_decoder
    cache_arg = _cache_argument(decoder)
    cache, step = None, ids
    while ids.shape[1] < settings.max_length:
        if check is not None:
            check()
        out = decoder(input_ids=step, encoder_hidden_states=image_embeds, encoder_attention_mask=image_mask,
                      use_cache=True, **{cache_arg: cache})
        cache = out[cache_arg]
        scores = processors(ids, out.logits[:, -1, :].float())
        next_id = torch.multinomial(torch.softmax(scores, dim=-1), 1, generator=generator)
        ids = torch.cat([ids, next_id], dim=1)
        if int(next_id) == tokenizer.sep_token_id:
            break
        step = next_id
    return ids


def decode_caption(tokenizer, ids: torch.Tensor, prompt: str) -> str:
    """The caption text: special tokens dropped, the prompt's characters cut (as BLIP does)."""
    return tokenizer.decode(ids[0].tolist(), skip_special_tokens=True)[len(prompt):].strip()


def caption(model, tokenizer, image: torch.Tensor, *, seed: int, settings: CaptionSettings = CaptionSettings(),
            check: Optional[Callable[[], None]] = None) -> str:
    """The caption of one [H, W, 3] RGB image in 0..1; the model computes where its weights are."""
    weight = model.vision_model.embeddings.patch_embedding.weight
    size = int(model.config.vision_config.image_size)
    pixels = pixel_values(image[None].cpu(), size).to(weight.device, weight.dtype)
    ids = sample_caption_ids(model, tokenizer, pixels, seed=seed, settings=settings, check=check)
    return decode_caption(tokenizer, ids, settings.prompt)
