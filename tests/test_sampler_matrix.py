"""Every sampler and every scheduler runs through the KSampler NODE: a real workflow
(CheckpointLoaderSimple -> CLIPTextEncode x2 / EmptyLatentImage -> KSampler -> VAEDecode) validated by
graph.validate_prompt and run by the App's graph.Executor over the tiny demo SD1.5 checkpoint.

The maths of each sampler is checked against diffusers and exact ODE solutions in test_samplers.py;
here the point is the wiring: the name reaches the registry through the node, the schedule and the
sampler agree with the model sampling, progress is reported, and a finite image comes out. Every
sampler runs with one scheduler, every scheduler with one sampler, plus cross pairs that take other
code paths (distilled model sampling for lcm/tcd, dropped penultimate sigma, EDM schedule, Brownian
noise on the device). The loaded model and the prompt encodings are reused from the executor's
cache between jobs, as a server would: only KSampler and what follows it re-run.
"""
from __future__ import annotations

import pytest
import torch

from graph import validate_prompt
from models.sampling.registry import EXTRA_SAMPLER_NAMES, EXTRA_SCHEDULER_NAMES, SAMPLER_NAMES, SCHEDULER_NAMES
from nodes import register_builtin_nodes
from server.app import App
from server.config import AppConfig

CHECKPOINT = "tiny-sd15.safetensors"
SIZE = 32  # pixels: 4x4 latents
STEPS = 3
CFG = 2.0  # != 1 so the negative prompt runs too; low enough that dpm_adaptive needs few steps
ALL_SAMPLERS = SAMPLER_NAMES + EXTRA_SAMPLER_NAMES
ALL_SCHEDULERS = SCHEDULER_NAMES + EXTRA_SCHEDULER_NAMES
CROSS_PAIRS = [
    ("lcm", "lcm"), ("tcd", "tcd"), ("dpmpp_2m_sde_gpu", "exponential"), ("uni_pc_bh2", "sgm_uniform"),
    ("dpm_2_ancestral", "ddim_uniform"), ("restart", "align_your_steps"), ("heunpp2", "beta"),
    ("dpmpp_3m_sde", "kl_optimal"), ("ddim", "edm_playground_v2.5"), ("dpm_fast", "turbo"),
    ("dpmpp_sde", "linear_quadratic"), ("ipndm", "simple"),
]
CASES = ([(sampler, "karras") for sampler in ALL_SAMPLERS]
         + [("euler", scheduler) for scheduler in ALL_SCHEDULERS if scheduler != "karras"]
         + CROSS_PAIRS)


class RecordingSink:
    def __init__(self):
        self.events = []

    def send(self, event, data):
        self.events.append((event, data))

    def send_image(self, image, *, prompt_id, node_id, full_size):
        pass


def capture_node(store: dict):
    """A test-only output node handing the decoded image and the latent back to the test."""

    class CaptureMatrixOutputs:
        CATEGORY = "testing"
        RETURN_TYPES = ()
        FUNCTION = "capture"
        OUTPUT_NODE = True

        @classmethod
        def INPUT_TYPES(cls):
            return {"required": {"samples": ("LATENT",), "images": ("IMAGE",)}}

        @classmethod
        def IS_CHANGED(cls, **_):
            return float("nan")  # always run: each job refills the store

        def capture(self, samples, images):
            store.update(samples=samples["samples"], images=images)
            return ()

    return CaptureMatrixOutputs


def workflow(sampler: str, scheduler: str, steps: int = STEPS) -> dict:
    return {
        "4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": CHECKPOINT}},
        "5": {"class_type": "EmptyLatentImage", "inputs": {"width": SIZE, "height": SIZE, "batch_size": 1}},
        "6": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["4", 1], "text": "a photo of a cat"}},
        "7": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["4", 1], "text": "blurry"}},
        "3": {"class_type": "KSampler", "inputs": {
            "model": ["4", 0], "seed": 7, "steps": steps, "cfg": CFG, "sampler_name": sampler,
            "scheduler": scheduler, "positive": ["6", 0], "negative": ["7", 0], "latent_image": ["5", 0],
            "denoise": 1.0}},
        "8": {"class_type": "VAEDecode", "inputs": {"samples": ["3", 0], "vae": ["4", 2]}},
        "9": {"class_type": "CaptureMatrixOutputs", "inputs": {"samples": ["3", 0], "images": ["8", 0]}},
    }


@pytest.fixture(scope="module")
def app_and_store(tmp_path_factory, demo_models_dir):
    root = tmp_path_factory.mktemp("sampler_matrix")
    store: dict = {}

    def register(registry):
        register_builtin_nodes(registry)
        registry.register_mappings({"CaptureMatrixOutputs": capture_node(store)})

    app = App(AppConfig(models_dir=demo_models_dir, output_dir=root / "out", input_dir=root / "in",
                        temp_dir=root / "tmp", custom_nodes_dir=None), register_nodes=register)
    return app, store


def run(app, store, prompt, prompt_id):
    result = validate_prompt(prompt, app.registry)
    assert result.ok, result.response_error()
    store.clear()
    sink = RecordingSink()
    outcome = app.executor.execute(prompt, prompt_id, result.outputs, result.constants, links=result.links,
                                   sink=sink)
    assert outcome.status == "success", outcome.error
    return outcome, sink


def test_cases_cover_every_name():
    assert {sampler for sampler, _ in CASES} == set(ALL_SAMPLERS)
    assert {scheduler for _, scheduler in CASES} == set(ALL_SCHEDULERS)


@pytest.mark.parametrize("sampler,scheduler", CASES)
def test_ksampler_node_runs(sampler, scheduler, app_and_store):
    app, store = app_and_store
    outcome, sink = run(app, store, workflow(sampler, scheduler), f"matrix-{sampler}-{scheduler}")
    assert "3" in outcome.executed
    progress = [data for event, data in sink.events if event == "progress" and data["node"] == "3"]
    assert progress and all(0 < p["value"] <= p["max"] for p in progress)
    latent, image = store["samples"], store["images"]
    assert latent.shape == (1, 4, SIZE // 8, SIZE // 8) and torch.isfinite(latent).all()
    assert latent.abs().max() > 0  # the sampler produced something from the noise
    assert image.shape == (1, SIZE, SIZE, 3) and torch.isfinite(image).all()
    assert 0.0 <= image.min() and image.max() <= 1.0 and image.std() > 0


def test_only_the_sampler_and_its_consumers_rerun(app_and_store):
    """The loaded checkpoint and both prompt encodings come from the cache when only the sampler
    node changes; the same sampler with the same seed gives the same latent again."""
    app, store = app_and_store
    run(app, store, workflow("euler", "normal"), "cache-1")
    first = store["samples"].clone()
    outcome, _ = run(app, store, workflow("dpmpp_2m", "normal"), "cache-2")
    assert {"4", "5", "6", "7"} <= set(outcome.cached)
    assert {"3", "8", "9"} <= set(outcome.executed)
    assert not torch.equal(store["samples"], first)
    run(app, store, workflow("euler", "normal"), "cache-3")
    assert torch.equal(store["samples"], first)


def _node_errors(app, prompt):
    result = validate_prompt(prompt, app.registry)
    assert not result.ok
    return result.node_errors["3"]["errors"]


def test_unknown_scheduler_is_value_not_in_list_with_the_valid_names(app_and_store):
    app, _ = app_and_store
    (error,) = _node_errors(app, workflow("euler", "warp_speed"))
    assert error["type"] == "value_not_in_list"
    assert error["extra_info"]["input_name"] == "scheduler"
    assert error["extra_info"]["received_value"] == "warp_speed"
    assert "'warp_speed' not in" in error["details"]
    for name in ALL_SCHEDULERS:
        assert repr(name) in error["details"]
    assert error["extra_info"]["input_config"][0] == list(ALL_SCHEDULERS)


def test_unknown_sampler_is_value_not_in_list_with_the_valid_names(app_and_store):
    """ComfyUI abbreviates lists over 20 as "(list of length N)"; ours names all 27 samplers."""
    app, _ = app_and_store
    (error,) = _node_errors(app, workflow("euler_warp", "karras"))
    assert error["type"] == "value_not_in_list"
    assert error["extra_info"]["input_name"] == "sampler_name"
    assert error["extra_info"]["received_value"] == "euler_warp"
    assert error["details"] == f"sampler_name: 'euler_warp' not in {list(ALL_SAMPLERS)}"
    assert list(app.registry.get("KSampler").input("sampler_name").choices) == list(ALL_SAMPLERS)


def test_both_unknown_names_are_reported_together(app_and_store):
    app, _ = app_and_store
    errors = _node_errors(app, workflow("nope", "nada"))
    assert sorted(e["extra_info"]["input_name"] for e in errors) == ["sampler_name", "scheduler"]
    assert {e["type"] for e in errors} == {"value_not_in_list"}
