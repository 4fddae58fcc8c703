"""Builds the Fooocus API for an App: libraries (styles, wildcards, presets), planner, routes."""
from __future__ import annotations

import logging

from models.sampling.registry import EXTRA_SAMPLER_NAMES, EXTRA_SCHEDULER_NAMES, SAMPLER_NAMES, SCHEDULER_NAMES
from nodes.fooocus.presets import PresetLibrary, startup_preset
from nodes.fooocus.styles import StyleLibrary
from nodes.fooocus.wildcards import WildcardLibrary

from .api import FooocusAPI
from .describe import DescribeRoutes
from .planner import FooocusLibraries, TextToImagePlanner
from .validation import Vocabulary

log = logging.getLogger(__name__)

SAMPLER_NODE_IDS = frozenset({"sampler"})


def attach_fooocus_api(app, **webhook_options) -> FooocusAPI:
    config, folders = app.config, app.folders
    styles = StyleLibrary.load([folders.directories("styles")[0]])
    wildcards = WildcardLibrary.load([folders.directories("wildcards")[0]])
    presets = PresetLibrary.load([folders.directories("presets")[0]])
    preset = startup_preset(presets, config.preset, default_model=config.default_model,
                            available_checkpoints=folders.list("checkpoints"))
    log.info("Fooocus preset %s: base model %s", preset.name, preset.base_model)
    planner = TextToImagePlanner(app.registry, folders, FooocusLibraries(styles, wildcards, preset))
    vocabulary = Vocabulary.of(styles.names(), SAMPLER_NAMES + EXTRA_SAMPLER_NAMES,
                               SCHEDULER_NAMES + EXTRA_SCHEDULER_NAMES)
    api = FooocusAPI(app, planner, vocabulary=lambda: vocabulary, style_names=styles.names,
                     sampler_nodes=lambda node: node in SAMPLER_NODE_IDS, webhook_options=webhook_options,
                     request_params=planner.request_params)
    api.route_packs.append(DescribeRoutes(app))
    app.extensions.append(api)
    return api
