"""Describe nodes (Fooocus "Describe", spec §11): BLIP photo captions and WD14 anime tags, image in, text out.

    BLIPLoader -> BLIP_MODEL -> BLIPCaption(image) -> STRING (one caption per image)
    WD14TaggerLoader -> WD14_MODEL -> WD14Tagger(image) -> STRING (one tag list per image)

Both text nodes are output nodes too: their text shows in the prompt's history (`ui.text`), which
is how the describe route reads it. The BLIP network lives under the App's model manager (on the
compute device while it captions, offloaded under its budget); the ONNX tagger runs in
onnxruntime (CUDA when the manager computes on CUDA and onnxruntime-gpu is installed, else CPU).
Loaded models stay in the executor's cache between calls.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path

from graph import context as graph_context
from models.interrogate.blip import BLIP_CAPTION_FILE, CaptionSettings, caption, load_blip, tokenizer_folders
from models.interrogate.wd14 import CHARACTER_THRESHOLD, GENERAL_THRESHOLD, WD14_MODEL_FILE, WD14Tagger as Tagger
from models.interrogate.wd14 import tags_file_for

from .images import tensor_to_pil
from .runtime import manage, services, use

FOLDER = "clip_vision"  # where Fooocus keeps both describe models (spec §13)
# Shared BERT tokenizer folders for real checkpoints, in clip_vision/: Fooocus ships the files as
# extras/BLIP/models/bert_tokenizer; bert-base-uncased is where Hugging Face users have them.
BERT_TOKENIZER_FOLDERS = ("bert_tokenizer", "bert-base-uncased")
TINY_BLIP_FILE = "tiny-blip-caption.pth"  # its tokenizer: tiny-blip-caption_tokenizer/ beside it
TINY_WD14_FILE = "tiny-wd14-tagger.onnx"  # its tags: tiny-wd14-tagger.csv beside it
SEED = ("INT", {"default": 0, "min": 0, "max": 0xFFFFFFFFFFFFFFFF})
UNIT = {"min": 0.0, "max": 1.0, "step": 0.01}


class DescribeModelMissing(FileNotFoundError):
    """A describe model file (or its tokenizer / tag list) is not in the models folder."""


@dataclass
class BlipSocket:
    handle: object  # the network under the model manager
    tokenizer: object
    name: str
    lock: threading.Lock = field(default_factory=threading.Lock)  # one caption at a time per network


def clip_vision_dir() -> Path:
    return services().folders.directories(FOLDER)[0]


def model_path(name: str) -> Path:
    try:
        return services().folders.path(FOLDER, name)
    except FileNotFoundError:
        raise DescribeModelMissing(f"{name} is not in {clip_vision_dir()}") from None


class BLIPLoader:
    CATEGORY = "loaders/interrogate"
    RETURN_TYPES = ("BLIP_MODEL",)
    FUNCTION = "load"
    DESCRIPTION = ("Loads Salesforce's BLIP caption checkpoint (Fooocus' model_base_caption_capfilt_large.pth) and its "
                   "BERT tokenizer (clip_vision/bert_tokenizer/vocab.txt).")

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"blip_name": ("COMBO", {"folder": FOLDER, "default": BLIP_CAPTION_FILE})}}

    def load(self, blip_name):
        path = model_path(blip_name)
        folders = tokenizer_folders(path, [clip_vision_dir() / name for name in BERT_TOKENIZER_FOLDERS])
        try:
            model, tokenizer = load_blip(path, folders)
        except FileNotFoundError as missing:
            raise DescribeModelMissing(f"{blip_name}: {missing}. Put BERT's uncased vocab.txt into "
                                       f"{clip_vision_dir() / BERT_TOKENIZER_FOLDERS[0]}") from None
        return (BlipSocket(manage(model, f"{blip_name} (BLIP)"), tokenizer, blip_name),)


class BLIPCaption:
    CATEGORY = "image/interrogate"
    RETURN_TYPES = ("STRING",)
    OUTPUT_IS_LIST = (True,)
    OUTPUT_NODE = True
    FUNCTION = "describe"
    DESCRIPTION = "A caption per image by BLIP's nucleus sampling, as Fooocus' Describe (Photograph); same seed, same text."

    @classmethod
    def INPUT_TYPES(cls):
        defaults = CaptionSettings()
        return {"required": {"image": ("IMAGE",), "blip_model": ("BLIP_MODEL",), "seed": SEED},
                "optional": {
                    "max_length": ("INT", {"default": defaults.max_length, "min": 2, "max": 512}),
                    "min_length": ("INT", {"default": defaults.min_length, "min": 0, "max": 512}),
                    "top_p": ("FLOAT", {"default": defaults.top_p, **UNIT}),
                    "repetition_penalty": ("FLOAT", {"default": defaults.repetition_penalty, "min": 1.0, "max": 3.0,
                                                     "step": 0.01})}}

    def describe(self, image, blip_model, seed, max_length=75, min_length=10, top_p=0.9, repetition_penalty=1.1):
        context = graph_context.current()
        settings = CaptionSettings(max_length=max_length, min_length=min_length, top_p=top_p,
                                   repetition_penalty=repetition_penalty)
        with blip_model.lock, use(blip_model.handle) as (model,):
            captions = [caption(model, blip_model.tokenizer, picture, seed=seed, settings=settings,
                                check=context.check_interrupt) for picture in image]
        return {"ui": {"text": captions}, "result": (captions,)}


class WD14TaggerLoader:
    CATEGORY = "loaders/interrogate"
    RETURN_TYPES = ("WD14_MODEL",)
    FUNCTION = "load"
    DESCRIPTION = ("Loads a WD14 tagger (ONNX) from clip_vision/ with its tag list beside it (<name>.csv or "
                   "selected_tags.csv).")

    @classmethod
    def INPUT_TYPES(cls):
        # a file name, not a folder list: the clip_vision listing shows model weight files only
        return {"required": {"model_name": ("STRING", {"default": WD14_MODEL_FILE})}}

    def load(self, model_name):
        path = model_path(model_name)
        tags = tags_file_for(path)
        if not tags.is_file():
            raise DescribeModelMissing(f"{tags.name} (the tag list of {model_name}) is not in {tags.parent}")
        manager = services().models
        use_cuda = manager is not None and manager.device.type == "cuda"
        return (Tagger.load(path, tags, use_cuda=use_cuda),)


class WD14Tagger:
    CATEGORY = "image/interrogate"
    RETURN_TYPES = ("STRING",)
    OUTPUT_IS_LIST = (True,)
    OUTPUT_NODE = True
    FUNCTION = "describe"
    DESCRIPTION = "Danbooru tags per image, as Fooocus' Describe (Art/Anime): characters, then general tags."

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"image": ("IMAGE",), "tagger": ("WD14_MODEL",),
                             "general_threshold": ("FLOAT", {"default": GENERAL_THRESHOLD, **UNIT}),
                             "character_threshold": ("FLOAT", {"default": CHARACTER_THRESHOLD, **UNIT})},
                "optional": {"exclude_tags": ("STRING", {"default": "", "tooltip": "comma-separated tags to leave out"})}}

    def describe(self, image, tagger, general_threshold, character_threshold, exclude_tags=""):
        context = graph_context.current()
        texts = []
        for picture in image:
            context.check_interrupt()
            texts.append(tagger.tag(tensor_to_pil(picture), general_threshold=general_threshold,
                                    character_threshold=character_threshold, exclude=exclude_tags.split(",")))
        return {"ui": {"text": texts}, "result": (texts,)}


def write_demo_describe_models(models_dir: str | Path) -> None:
    """The tiny BLIP (with its tokenizer) and WD14 tagger (with its tags) of the offline demo."""
    from models.interrogate.tiny import write_tiny_blip, write_tiny_wd14

    folder = Path(models_dir) / FOLDER
    blip = folder / TINY_BLIP_FILE
    write_tiny_blip(blip, tokenizer_folders(blip)[0])
    tagger = folder / TINY_WD14_FILE
    write_tiny_wd14(tagger, tags_file_for(tagger))


NODE_CLASS_MAPPINGS = {"BLIPLoader": BLIPLoader, "BLIPCaption": BLIPCaption, "WD14TaggerLoader": WD14TaggerLoader,
                       "WD14Tagger": WD14Tagger}
NODE_DISPLAY_NAME_MAPPINGS = {"BLIPLoader": "Load BLIP Caption Model", "BLIPCaption": "BLIP Caption (Describe Photo)",
                              "WD14TaggerLoader": "Load WD14 Tagger", "WD14Tagger": "WD14 Tagger (Describe Anime)"}
