"""Inpaint or Outpaint (specs/fooocus_pipeline.md §9, specs/fooocus_api.md §5): from a stored
request to runs of `workflows/inpaint_outpaint.json`.

The graph does the image work (mask rules, outpaint, crop, fill, engine, composite); this module
decides what the request means: no input image, or neither a mask with something to repaint nor
an outpaint side, is plain text-to-image (as Fooocus-API answers it); the additional prompt goes
first; an inpaint engine forces the refiner switch to 80 % of the steps and, without a refiner,
runs the base model unpatched for those last steps (Fooocus' "synthetic refiner").
With image prompts (the image-prompt route, or any v2 request whose `image_prompts` have images)
they are mixed in, as Fooocus-API's auto-mixing does: `inpaint_outpaint_ip.json`; a request
with nothing to inpaint then goes to text-to-image with its image prompts (`fallback`).
"""
from __future__ import annotations

import numpy as np
from PIL import Image

from models.inpaint.engine import HEAD_FILE, patch_file_for
from models.inpaint.masks import needs_inpaint, parse_outpaint_sides, prepare_mask
from workflows import Workflow

from .image_prompt import ImagePromptSlots, active_image_prompts, mixed_workflow
from .input_store import InputImageStore
from .jobs import JobCannotRun, JobPlan
from .planner import TextToImagePlanner
from .requests import InpaintOutpaintRequestV2
from .upscale_vary import DEFAULT_UPSCALER, UPSCALER_FOLDER

INPAINT_FOLDER = "inpaint"
ENGINE_REFINER_SWITCH = 0.8
NO_ENGINE = "None"


class InpaintOutpaintPlanner:
    def __init__(self, shared: TextToImagePlanner, inputs: InputImageStore, slots: ImagePromptSlots,
                 fallback=None, upscaler_name: str = DEFAULT_UPSCALER) -> None:
        self.shared = shared
        self.inputs = inputs
        self.slots = slots
        self.fallback = fallback or shared
        self.upscaler_name = upscaler_name
        self.workflow = Workflow.load("inpaint_outpaint")
        self.mixed = mixed_workflow("inpaint_outpaint")

    def __call__(self, job_type: str, params: dict, job_id: str) -> JobPlan:
        request = InpaintOutpaintRequestV2.model_validate(params)
        sides = parse_outpaint_sides([side.value for side in request.outpaint_selections])
        if not request.input_image or not self._has_work(request, sides):
            return self.fallback(job_type, params, job_id)
        advanced = request.advanced_params
        prompts = active_image_prompts(request.image_prompts)
        width, height = self.inputs.size(request.input_image)
        if prompts and advanced.debugging_cn_preprocessor:
            return self.slots.debug_plan(request, prompts, job_id, width, height)
        workflow, slot_values, slot_enabled = self.workflow, {}, {}
        if prompts:
            workflow = self.mixed
            slot_values, slot_enabled = self.slots.values(prompts, advanced,
                                                          plain_model=workflow.graph["ip_1"]["inputs"]["model"])
        if request.inpaint_additional_prompt.strip():
            request = request.model_copy(update={
                "prompt": f"{request.inpaint_additional_prompt}\n{request.prompt}"})
        job = self.shared.prepare(request)
        engine = advanced.inpaint_engine.value
        self._require_engine(engine)
        warnings = job.warnings
        use_upscaler = self.upscaler_name in self.shared.folders.list(UPSCALER_FOLDER)
        if not use_upscaler:
            warnings.append(f"the upscaler {self.upscaler_name} is missing from {UPSCALER_FOLDER}/: small "
                            "inpaint regions are enlarged without super-resolution")
        steps = job.steps.steps
        runs = []
        for task in job.tasks:
            values, enabled = self.shared.sampling_values(job, task, job_id, width, height)
            if engine != NO_ENGINE:
                # Fooocus forces the switch to 80 % with an engine: the refiner, or the unpatched
                # base model when there is none, finishes the image.
                values["refiner_switch_step"] = int(round(steps * ENGINE_REFINER_SWITCH))
            values.update({
                "input_image": request.input_image, "upscale_model": self.upscaler_name,
                "outpaint_selections": ",".join(sides),
                "outpaint_distance_left": request.outpaint_distance_left,
                "outpaint_distance_right": request.outpaint_distance_right,
                "outpaint_distance_top": request.outpaint_distance_top,
                "outpaint_distance_bottom": request.outpaint_distance_bottom,
                "inpaint_respective_field": advanced.inpaint_respective_field,
                "inpaint_erode_or_dilate": advanced.inpaint_erode_or_dilate,
                "invert_mask_checkbox": advanced.invert_mask_checkbox,
                "inpaint_strength": advanced.inpaint_strength,
                "inpaint_disable_initial_latent": advanced.inpaint_disable_initial_latent,
                "inpaint_engine": engine,
                "debugging_inpaint_preprocessor": advanced.debugging_inpaint_preprocessor,
            })
            if request.input_mask:
                values["input_mask"] = request.input_mask
            enabled.update({"mask": bool(request.input_mask), "upscaler": use_upscaler})
            values.update(slot_values)
            enabled.update(slot_enabled)
            runs.append(self.shared.run_spec(workflow, values, enabled))
        return JobPlan(runs, [task.seed for task in job.tasks], steps, warnings)

    def _has_work(self, request: InpaintOutpaintRequestV2, sides) -> bool:
        """Fooocus inpaints only when a mask pixel ends above 127 (after the mask rules) or an
        outpaint side is chosen; otherwise the request is text-to-image."""
        if sides:
            return True
        if not request.input_mask:
            return False
        width, height = self.inputs.size(request.input_image)
        with Image.open(self.inputs.path(request.input_mask)) as mask:
            uploaded = np.asarray(mask.convert("RGB"))
        advanced = request.advanced_params
        mask = prepare_mask(height, width, uploaded=uploaded, erode_dilate=advanced.inpaint_erode_or_dilate,
                            invert_mask=advanced.invert_mask_checkbox)
        return needs_inpaint(mask, sides)

    def _require_engine(self, engine: str) -> None:
        if engine == NO_ENGINE:
            return
        present = set(self.shared.folders.list(INPAINT_FOLDER))
        missing = [name for name in (HEAD_FILE, patch_file_for(engine)) if name not in present]
        if missing:
            self.shared.fetch_later([(INPAINT_FOLDER, name) for name in missing])  # downloads on: the job waits
            folder = self.shared.folders.directories(INPAINT_FOLDER)[0]
            raise JobCannotRun(f"the inpaint engine {engine} needs {' and '.join(missing)} in {folder} "
                               "(Fooocus' files are on Hugging Face, lllyasviel/fooocus_inpaint); "
                               "or send advanced_params.inpaint_engine \"None\"")
