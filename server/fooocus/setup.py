"""Builds the Fooocus API for an App: libraries (styles, wildcards, presets), planner, routes."""
from __future__ import annotations

import logging

from models.sampling.registry import EXTRA_SAMPLER_NAMES, EXTRA_SCHEDULER_NAMES, SAMPLER_NAMES, SCHEDULER_NAMES
from nodes.fooocus.presets import PresetLibrary, startup_preset
from nodes.fooocus.styles import StyleLibrary
from nodes.fooocus.wildcards import WildcardLibrary

from server.jobs import JobType

from .api import FooocusAPI
from .describe import DescribeRoutes
from .image_prompt import ImagePromptJobPlanner, ImagePromptPlanner, ImagePromptSlots
from .image_routes import ImageRoutes
from .inpaint_outpaint import InpaintOutpaintPlanner
from .input_store import InputImageStore
from .upscale_vary import UpscaleVaryPlanner
from .url_fetch import UrlFetcher, UrlFetchLimits
from .planner import FooocusLibraries, TextToImagePlanner
from .validation import Vocabulary

log = logging.getLogger(__name__)

SAMPLER_NODE_IDS = frozenset({"sampler"})


class JobTypePlanner:
    """Plans each job with its capability's planner (text-to-image for the other types)."""

    def __init__(self, default, by_type: dict) -> None:
        self.default = default
        self.by_type = by_type

    def __call__(self, job_type: str, params: dict, job_id: str):
        return self.by_type.get(job_type, self.default)(job_type, params, job_id)


def attach_fooocus_api(app, **webhook_options) -> FooocusAPI:
    config, folders = app.config, app.folders
    styles = StyleLibrary.load([folders.directories("styles")[0]])
    wildcards = WildcardLibrary.load([folders.directories("wildcards")[0]])
    presets = PresetLibrary.load([folders.directories("presets")[0]])
    preset = startup_preset(presets, config.preset, default_model=config.default_model,
                            available_checkpoints=folders.list("checkpoints"))
    log.info("Fooocus preset %s: base model %s", preset.name, preset.base_model)
    planner = TextToImagePlanner(app.registry, folders, FooocusLibraries(styles, wildcards, preset),
                                 fetcher=app.fetcher)
    inputs = InputImageStore(config.input_dir)
    slots = ImagePromptSlots(planner)
    image_prompts = ImagePromptPlanner(planner, slots)
    inpaint = InpaintOutpaintPlanner(planner, inputs, slots, fallback=image_prompts)
    planners = JobTypePlanner(planner, {JobType.TEXT_TO_IMAGE.value: image_prompts,
                                        JobType.IMAGE_UPSCALE_VARY.value: UpscaleVaryPlanner(
                                            planner, inputs, slots, fallback=image_prompts),
                                        JobType.IMAGE_INPAINT_OUTPAINT.value: inpaint,
                                        JobType.IMAGE_PROMPT.value: ImagePromptJobPlanner(image_prompts, inpaint)})
    vocabulary = Vocabulary.of(styles.names(), SAMPLER_NAMES + EXTRA_SAMPLER_NAMES,
                               SCHEDULER_NAMES + EXTRA_SCHEDULER_NAMES)
    api = FooocusAPI(app, planners, vocabulary=lambda: vocabulary, style_names=styles.names,
                     sampler_nodes=lambda node: node in SAMPLER_NODE_IDS, webhook_options=webhook_options,
                     request_params=planner.request_params, inputs=inputs)
    fetcher = UrlFetcher(UrlFetchLimits(timeout_s=config.url_fetch_timeout_s,
                                      allow_private=config.allow_private_urls))
    api.route_packs.append(ImageRoutes(api.routes, inputs, fetcher, lambda: vocabulary))
    api.route_packs.append(DescribeRoutes(app))
    app.extensions.append(api)
    return api
