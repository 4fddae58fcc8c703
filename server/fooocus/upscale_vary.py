"""Upscale or Vary (specs/fooocus_pipeline.md §8): from a stored request to workflow runs.

Three workflows, one per shape of the work:
* `vary.json`: the input at shape ceil 1024..2048, VAE-encoded, sampled at denoise 0.5 / 0.85;
* `upscale.json`: super-resolution, resized to the factor, tiled VAE, denoise 0.382 with the
  performance mode's upscale step count;
* `upscale_fast.json`: super-resolution resized to the factor and saved, no diffusion ("Upscale
  (Fast 2x)", and results above 2800 px, which Fooocus also returns directly).
The request's `input_image` is the name of the stored input (server.fooocus.input_store).
Image prompts with images are mixed into vary and upscale (`vary_ip.json`, `upscale_ip.json`), as
Fooocus-API's auto-mixing does; "Disabled" goes to text-to-image with its image prompts
(`fallback`).
"""
from __future__ import annotations

from models.image_sizes import size_after_shape_ceil, upscale_target, vary_shape_ceil
from nodes.fooocus.prompt_processing import resolve_seed
from workflows import Workflow

from .image_prompt import ImagePromptSlots, active_image_prompts, mixed_workflow
from .input_store import InputImageStore
from .jobs import JobCannotRun, JobPlan
from .planner import PreparedJob, TextToImagePlanner, checkpoint_keys
from .requests import UpscaleOrVaryMethod as Method
from .requests import UpscaleVaryRequestV2

UPSCALER_FOLDER = "upscale_models"
DEFAULT_UPSCALER = "fooocus_upscaler_s409985e5.bin"
FOOOCUS_UPSCALER_SCALE = 4
VARY_DENOISE = {Method.SUBTLE_VARIATION: 0.5, Method.STRONG_VARIATION: 0.85}
UPSCALE_FACTOR = {Method.UPSCALE_15: 1.5, Method.UPSCALE_2: 2.0, Method.UPSCALE_FAST: 2.0}
UPSCALE_DENOISE = 0.382
# An SD1.5 refiner at partial denoise runs alone or not at all (Fooocus' get_candidate_vae rule).
SD15_REFINER_DENOISE_LIMIT = 0.9
SD15_REFINER_EXPONENT = 0.834
SD15_TEXT_ENCODER_PREFIX = "cond_stage_model."


class UpscaleVaryPlanner:
    def __init__(self, shared: TextToImagePlanner, inputs: InputImageStore, slots: ImagePromptSlots,
                 fallback=None, upscaler_name: str = DEFAULT_UPSCALER) -> None:
        self.shared = shared
        self.inputs = inputs
        self.slots = slots
        self.fallback = fallback or shared
        self.upscaler_name = upscaler_name
        self.vary = Workflow.load("vary")
        self.upscale = Workflow.load("upscale")
        self.upscale_fast = Workflow.load("upscale_fast")
        self.mixed = {"vary": mixed_workflow("vary"), "upscale": mixed_workflow("upscale")}

    def __call__(self, job_type: str, params: dict, job_id: str) -> JobPlan:
        request = UpscaleVaryRequestV2.model_validate(params)
        method = request.uov_method
        if method is Method.DISABLED:  # Fooocus skips the tab: text-to-image (with any image prompts)
            return self.fallback(job_type, params, job_id)
        width, height = self.inputs.size(request.input_image)
        if method in VARY_DENOISE:
            return self._vary(request, job_id, width, height)
        return self._upscale(request, job_id, width, height)

    # --- Vary --------------------------------------------------------------------------------
    def _vary(self, request: UpscaleVaryRequestV2, job_id: str, width: int, height: int) -> JobPlan:
        strength = request.advanced_params.overwrite_vary_strength
        denoise = strength if strength > 0 else VARY_DENOISE[request.uov_method]
        ceil = vary_shape_ceil(height, width)
        h, w = size_after_shape_ceil(height, width, ceil)
        job = self.shared.prepare(request)
        extra = {"input_image": request.input_image, "shape_ceil": ceil}
        return self._sampling_plan("vary", job, job_id, w // 8 * 8, h // 8 * 8, denoise, extra)

    # --- Upscale -----------------------------------------------------------------------------
    def _upscale(self, request: UpscaleVaryRequestV2, job_id: str, width: int, height: int) -> JobPlan:
        method = request.uov_method
        factor = UPSCALE_FACTOR.get(method) or (request.upscale_value or 2.0)
        target = upscale_target(width, height, factor, fast=method is Method.UPSCALE_FAST,
                                sr_scale=FOOOCUS_UPSCALER_SCALE)
        self._require_upscaler()
        extra = {"input_image": request.input_image, "upscale_model": self.upscaler_name, "factor": factor}
        if target.direct_return:
            # One image whatever image_number says, as Fooocus returns the upscaled input and stops.
            seed = resolve_seed(request.image_seed)
            run = self.shared.run_spec(self.upscale_fast, {**extra, "job_id": job_id, "image_index": 0,
                                                           **self.shared.save_values(request), "metadata": "{}"})
            return JobPlan([run], [seed], 0, [])
        strength = request.advanced_params.overwrite_upscale_strength
        denoise = strength if strength > 0 else UPSCALE_DENOISE
        job = self.shared.prepare(request, upscale_steps=True)
        w, h = target.size
        return self._sampling_plan("upscale", job, job_id, w // 8 * 8, h // 8 * 8, denoise, extra)

    def _require_upscaler(self) -> None:
        if self.upscaler_name not in self.shared.folders.list(UPSCALER_FOLDER):
            self.shared.fetch_later([(UPSCALER_FOLDER, self.upscaler_name)])  # downloads on: the job waits for it
            folder = self.shared.folders.directories(UPSCALER_FOLDER)[0]
            raise JobCannotRun(f"the upscaler model {self.upscaler_name} is missing: put it into {folder} "
                               "(Fooocus' file is on Hugging Face, lllyasviel/misc)")

    # --- shared ------------------------------------------------------------------------------
    def _sampling_plan(self, kind: str, job: PreparedJob, job_id: str, width: int, height: int,
                       denoise: float, extra: dict) -> JobPlan:
        request = job.request
        prompts = active_image_prompts(request.image_prompts)
        if prompts and request.advanced_params.debugging_cn_preprocessor:
            return self.slots.debug_plan(request, prompts, job_id, width, height)
        warnings = list(job.warnings)
        links = self._model_links(job, denoise, warnings)
        if prompts and links["refiner_only"]:
            # the adapters and Control-LoRAs are made for the SDXL base, which does not run here
            warnings.append("image prompts are not applied: only the SD1.5 refiner runs at this partial denoise")
            prompts = []
        workflow = self.mixed[kind] if prompts else getattr(self, kind)
        slot_values, slot_enabled = self.slots.values(
            prompts, request.advanced_params, plain_model=links["slots"]["sampler_model"]) if prompts else ({}, {})
        runs = []
        for task in job.tasks:
            values, enabled = self.shared.sampling_values(job, task, job_id, width, height)
            if links["refiner_only"] or links["base_only"]:
                enabled["refiner"] = False  # no swap inside the sampler
            if links["base_only"]:
                values.pop("refiner_model", None)
            values.update({**extra, "denoise": denoise, **links["slots"], **slot_values})
            enabled.update(slot_enabled)
            runs.append(self.shared.run_spec(workflow, values, enabled))
        return JobPlan(runs, [task.seed for task in job.tasks], job.steps.steps, warnings)

    def _model_links(self, job: PreparedJob, denoise: float, warnings: list[str]) -> dict:
        """Which model samples and which VAE encodes/decodes. Fooocus' rule for an SD1.5 refiner at
        denoise <= 0.9: with d > ((steps - switch) / steps) ** 0.834 the base runs alone, otherwise
        the refiner runs alone, with its own VAE and its own prompt encoding."""
        base = {"encode_vae": ["base", 2], "decode_vae": ["base", 2], "sampler_model": ["loras", 0],
                "sampler_positive": ["positive", 0], "sampler_negative": ["negative", 0]}
        plan = {"slots": base, "base_only": False, "refiner_only": False}
        if not job.use_refiner or denoise > SD15_REFINER_DENOISE_LIMIT or not self._is_sd15(job.refiner):
            return plan
        steps, switch = job.steps.steps, job.steps.switch
        if denoise > ((steps - switch) / steps) ** SD15_REFINER_EXPONENT:
            warnings.append("only the base model runs: the SD1.5 refiner is skipped at this partial denoise")
            plan["base_only"] = True
            return plan
        warnings.append("only the SD1.5 refiner runs at this partial denoise")
        plan["refiner_only"] = True
        plan["slots"] = {"encode_vae": ["refiner", 2], "decode_vae": ["refiner", 2], "sampler_model": ["refiner", 0],
                         "sampler_positive": ["refiner_positive", 0], "sampler_negative": ["refiner_negative", 0]}
        return plan

    def _is_sd15(self, checkpoint: str) -> bool:
        keys = checkpoint_keys(self.shared.folders.path("checkpoints", checkpoint))
        return any(key.startswith(SD15_TEXT_ENCODER_PREFIX) for key in keys)

