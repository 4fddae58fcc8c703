"""From a validated Fooocus request to workflow runs: presets, performance modes, prompt tasks,
model and LoRA resolution, then `workflows/text_to_image.json` filled once per image."""
from __future__ import annotations

import json
import struct
from dataclasses import dataclass, replace
from pathlib import Path

from pydantic import BaseModel

from graph import NodeRegistry, validate_prompt
from nodes.fooocus.expansion import EXPANSION_FOLDER, missing_expansion_files
from nodes.fooocus.performance import SamplingSettings, StepPlan, apply_performance, performance_mode, plan_steps
from nodes.fooocus.presets import Preset
from nodes.fooocus.prompt_processing import PromptRequest, build_tasks, resolve_seed
from nodes.fooocus.styles import FOOOCUS_V2, StyleLibrary
from nodes.fooocus.wildcards import WildcardLibrary
from server.folders import ModelFolders
from server.queue import RunSpec
from workflows import Workflow

from .jobs import JobPlan
from .requests import CommonRequest

NONE = "None"
SDXL_SECOND_ENCODER_PREFIX = "conditioner.embedders.1."  # CLIP-G next to CLIP-L: an SDXL base
MAX_HEADER_BYTES = 100 * 1024 * 1024


@dataclass
class PreparedJob:
    """A request's models, settings, steps and prompt tasks, ready to fill a workflow with."""

    request: CommonRequest
    base: str
    refiner: str | None
    settings: SamplingSettings
    steps: StepPlan
    tasks: list
    expansion_ok: bool
    warnings: list[str]

    @property
    def use_refiner(self) -> bool:
        return self.refiner is not None and self.steps.switch < self.steps.steps


@dataclass
class FooocusLibraries:
    styles: StyleLibrary
    wildcards: WildcardLibrary
    preset: Preset


class TextToImagePlanner:
    def __init__(self, registry: NodeRegistry, folders: ModelFolders, libraries: FooocusLibraries,
                 fetcher=None) -> None:
        self.registry = registry
        self.folders = folders
        self.libraries = libraries
        self.fetcher = fetcher  # server.downloads.ModelFetcher: first-use downloads (None: never)
        self.workflow = Workflow.load("text_to_image")

    def fetch_later(self, needed) -> None:
        """At a capability's file check, with its missing (folder, name) pairs: raises FilesToFetch
        when downloads can supply them all (the job then waits for them on the worker); returns
        when they cannot, and the caller fails the job naming the files."""
        if self.fetcher is not None:
            self.fetcher.fetch_later(needed)

    # --- request -> stored parameters ---------------------------------------------------------
    def request_params(self, parsed: BaseModel, exclude=()) -> dict:
        """The request as stored on the job: fields the client left out take the preset's values;
        `exclude`: fields not stored (images, stored as files by the route)."""
        params = parsed.model_dump(mode="json", exclude=set(exclude))
        preset, given = self.libraries.preset, parsed.model_fields_set
        defaults = {"base_model_name": preset.base_model, "refiner_model_name": preset.refiner_model,
                    "refiner_switch": preset.refiner_switch, "guidance_scale": preset.cfg_scale,
                    "sharpness": preset.sharpness, "style_selections": list(preset.styles),
                    "aspect_ratios_selection": preset.aspect_ratio, "performance_selection": preset.performance,
                    "loras": [{"enabled": s.enabled, "model_name": s.name, "weight": s.weight} for s in preset.loras]}
        for field, value in defaults.items():
            if field not in given:
                params[field] = value
        advanced = getattr(parsed, "advanced_params", None)
        advanced_given = advanced.model_fields_set if advanced is not None and "advanced_params" in given else set()
        if "sampler_name" not in advanced_given:
            params["advanced_params"]["sampler_name"] = preset.sampler
        if "scheduler_name" not in advanced_given:
            params["advanced_params"]["scheduler_name"] = preset.scheduler
        return params

    # --- stored parameters -> runs ------------------------------------------------------------
    def __call__(self, job_type: str, params: dict, job_id: str) -> JobPlan:
        job = self.prepare(CommonRequest.model_validate(params))
        width, height = job.request.size
        advanced = job.request.advanced_params
        if advanced.overwrite_width > 0:
            width = advanced.overwrite_width
        if advanced.overwrite_height > 0:
            height = advanced.overwrite_height
        runs = []
        for task in job.tasks:
            values, enabled = self.sampling_values(job, task, job_id, width, height)
            values.update({"width": width, "height": height})
            runs.append(self.run_spec(self.workflow, values, enabled))
        return JobPlan(runs, [task.seed for task in job.tasks], job.steps.steps, job.warnings)

    def prepare(self, request: CommonRequest, *, upscale_steps: bool = False) -> "PreparedJob":
        """Models, performance settings, steps and prompt tasks of a request: what every Fooocus
        capability shares. `upscale_steps`: the step count is the mode's upscale count."""
        advanced = request.advanced_params
        warnings: list[str] = []
        checkpoints = self.folders.list("checkpoints")
        lora_files = self.folders.list("loras")

        base = self._base_model(request.base_model_name, checkpoints, warnings)
        refiner = request.refiner_model_name
        if refiner in ("", NONE) or refiner == base:
            refiner = None
        elif refiner not in checkpoints:
            warnings.append(f"refiner {refiner} not found; running without a refiner")
            refiner = None

        settings = apply_performance(SamplingSettings(
            performance=request.performance_selection.value, sampler=advanced.sampler_name,
            scheduler=advanced.scheduler_name, cfg_scale=request.guidance_scale, sharpness=request.sharpness,
            adaptive_cfg=advanced.adaptive_cfg, adm_scaler_positive=advanced.adm_scaler_positive,
            adm_scaler_negative=advanced.adm_scaler_negative, adm_scaler_end=advanced.adm_scaler_end,
            refiner_model=refiner or NONE, refiner_switch=request.refiner_switch))
        refiner = None if settings.refiner_model == NONE else settings.refiner_model
        # overwrite_switch: the document's spelling is a step number (int, -1..200), the reference
        # code's a fraction (-1..1); 1 and above can only be a step.
        switch_fraction = advanced.overwrite_switch if 0 < advanced.overwrite_switch < 1 else -1
        steps = plan_steps(performance_mode(settings.performance), refiner_switch=settings.refiner_switch,
                           upscale=upscale_steps, overwrite_step=advanced.overwrite_step,
                           overwrite_switch=switch_fraction)
        if advanced.overwrite_switch >= 1:
            steps = replace(steps, switch=int(advanced.overwrite_switch))

        user_loras = []
        for name, weight in request.active_loras():
            if name in lora_files:
                user_loras.append((name, weight))
            else:
                warnings.append(f"LoRA {name} not found; skipped")
        performance_lora = settings.performance_lora
        if performance_lora is not None and performance_lora[0] not in lora_files:
            self.fetch_later([("loras", performance_lora[0])])  # downloads on: the job waits for the LoRA
            warnings.append(f"{settings.performance} needs {performance_lora[0]} in loras/; running without it")
            performance_lora = None

        tasks = build_tasks(
            PromptRequest(request.prompt, request.negative_prompt, tuple(request.style_selections), tuple(user_loras),
                          request.read_wildcards_in_order, advanced.disable_seed_increment),
            request.image_number, resolve_seed(request.image_seed), styles=self.libraries.styles,
            wildcards=self.libraries.wildcards, lora_filenames=lora_files, performance_lora=performance_lora)

        expansion_ok = not missing_expansion_files(self.folders.locate(EXPANSION_FOLDER))  # any model root
        if any(task.use_expansion for task in tasks) and not expansion_ok:
            warnings.append("Fooocus V2 expansion model missing; prompts are not expanded")
        return PreparedJob(request, base, refiner, settings, steps, tasks, expansion_ok, warnings)

    def sampling_values(self, job: "PreparedJob", task, job_id: str, width: int, height: int,
                        ) -> tuple[dict, dict[str, bool]]:
        """Slot values and optional pieces every Fooocus sampling workflow shares, for one image
        (`width` x `height`: the size it is generated at, for the metadata)."""
        request, settings, steps, advanced = job.request, job.settings, job.steps, job.request.advanced_params
        expand = task.use_expansion and job.expansion_ok
        use_refiner = job.use_refiner
        metadata = self._metadata(request, task, settings, steps.steps, width, height, job.base, job.refiner, expand)
        values = {
            "base_model": job.base, "loras": json.dumps([list(lora) for lora in task.loras]),
            "expansion_prompt": task.prompt, "seed": task.seed,
            "positive_texts": json.dumps(list(task.positive)), "positive_pool_count": task.positive_pool_count,
            "negative_texts": json.dumps(list(task.negative)), "clip_skip": advanced.clip_skip,
            "steps": steps.steps, "cfg": settings.cfg_scale,
            "sampler_name": settings.sampler, "scheduler": settings.scheduler, "sharpness": settings.sharpness,
            "adaptive_cfg": settings.adaptive_cfg, "adm_scaler_positive": settings.adm_scaler_positive,
            "adm_scaler_negative": settings.adm_scaler_negative, "adm_scaler_end": settings.adm_scaler_end,
            "freeu": advanced.freeu_enabled, "freeu_b1": advanced.freeu_b1, "freeu_b2": advanced.freeu_b2,
            "freeu_s1": advanced.freeu_s1, "freeu_s2": advanced.freeu_s2,
            "refiner_switch_step": steps.switch if use_refiner else 10000,
            "refiner_swap_method": advanced.refiner_swap_method.value,
            "job_id": job_id, "image_index": task.index,
            "metadata": json.dumps(metadata),
            **self.save_values(request),
        }
        if use_refiner:
            values["refiner_model"] = job.refiner
        return values, {"refiner": use_refiner, "expansion": expand}

    @staticmethod
    def save_values(request: CommonRequest) -> dict:
        return {"save_extension": request.save_extension.value, "save_name": request.save_name,
                "meta_scheme": request.meta_scheme.value if request.save_meta else "none"}

    def run_spec(self, workflow: Workflow, values: dict, enabled: dict[str, bool] | None = None) -> RunSpec:
        prompt = workflow.fill(values, enabled)
        result = validate_prompt(prompt, self.registry)
        if not result.ok:
            raise ValueError(_validation_message(result))
        return RunSpec.of(prompt, result)

    def _base_model(self, requested: str, checkpoints: list[str], warnings: list[str]) -> str:
        if requested in checkpoints:
            return requested
        for candidate in (self.libraries.preset.base_model, *self.libraries.preset.previous_base_models):
            if candidate in checkpoints:
                warnings.append(f"base model {requested} not found; using {candidate}")
                return candidate
        usable = [name for name in checkpoints if "refiner" not in name.lower()] or checkpoints
        # Fooocus runs SDXL base models only: an SD1.5 file listed first must not win.
        usable = sorted(usable, key=lambda name: not _is_sdxl_base(self.folders.path("checkpoints", name)))
        if not usable:
            raise ValueError("base_model_name: no checkpoint in the models folder's checkpoints/; "
                             "put an SDXL .safetensors file there")
        warnings.append(f"base model {requested} not found; using {usable[0]}")
        return usable[0]

    @staticmethod
    def _metadata(request: CommonRequest, task, settings, steps: int, width: int, height: int, base: str,
                  refiner: str | None, expand: bool) -> dict:
        return {
            "prompt": task.log_positive_prompt, "negative_prompt": task.log_negative_prompt,
            "styles": ([FOOOCUS_V2] if expand else []) + list(task.styles),
            "performance": settings.performance, "steps": steps, "width": width, "height": height,
            "guidance_scale": settings.cfg_scale, "sharpness": settings.sharpness,
            "adm_guidance": [settings.adm_scaler_positive, settings.adm_scaler_negative, settings.adm_scaler_end],
            "base_model": base, "sampler": settings.sampler, "scheduler": settings.scheduler, "seed": task.seed,
            "refiner_model": refiner or NONE, "refiner_switch": settings.refiner_switch,
            "refiner_swap_method": request.advanced_params.refiner_swap_method.value,
            "adaptive_cfg": settings.adaptive_cfg, "clip_skip": request.advanced_params.clip_skip,
            "freeu": ([request.advanced_params.freeu_b1, request.advanced_params.freeu_b2,
                       request.advanced_params.freeu_s1, request.advanced_params.freeu_s2]
                      if request.advanced_params.freeu_enabled else None),
            "loras": [[name, weight] for name, weight in task.loras],
            "full_prompt": list(task.positive), "full_negative_prompt": list(task.negative),
        }


def checkpoint_keys(path: Path) -> list[str]:
    """Tensor names of a .safetensors checkpoint, read from its header only; other formats (and
    unreadable files) give no names."""
    if path.suffix.lower() != ".safetensors":
        return []
    try:
        with open(path, "rb") as handle:
            (length,) = struct.unpack("<Q", handle.read(8))
            if length > MAX_HEADER_BYTES:
                return []
            header = json.loads(handle.read(length))
    except (OSError, ValueError, struct.error):
        return []
    return list(header) if isinstance(header, dict) else []


def _is_sdxl_base(path: Path) -> bool:
    """Whether a checkpoint holds both SDXL text encoders (CLIP-L and CLIP-G)."""
    return any(key.startswith(SDXL_SECOND_ENCODER_PREFIX) for key in checkpoint_keys(path))


def _validation_message(result) -> str:
    messages = [f"node {node} ({entry['class_type']}): {error['message']}: {error['details']}"
                for node, entry in result.node_errors.items() for error in entry["errors"]]
    return "; ".join(messages) or (result.error or {}).get("message", "invalid workflow")
