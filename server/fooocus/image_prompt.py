"""Image prompts (specs/fooocus_pipeline.md §10, specs/fooocus_api.md §5): text-to-image with up to
four IP-Adapter image prompts, `workflows/text_to_image_ip.json`.

Stored requests carry `image_prompts` as [{cn_img: stored input name, cn_stop, cn_weight,
cn_type}]; only entries with an image count, the first four are used, and a stop or weight of
0/null takes the type's default (ImagePrompt 0.5/0.6, FaceSwap 0.9/0.75, PyraCanny and CPDS
0.5/1.0). ImagePrompt and FaceSwap patch the model through IP-Adapter plus; PyraCanny and CPDS
resize the image to the generation size (cover, centre crop), preprocess it and apply their
Control-LoRA to both conditionings with `controlnet_softness`. Each slot of the workflow has both
paths; the planner connects the one its type needs and leaves the other passing through.
"""
from __future__ import annotations

from nodes.fooocus.image_prompt import FACE_SWAP_FILE, IMAGE_PROMPT_FILE, NEGATIVE_FILE
from workflows import Workflow

from .jobs import JobCannotRun, JobPlan
from .planner import TextToImagePlanner
from .requests import ControlNetType, ImagePrompt, TextToImageWithIPRequest

MAX_IMAGE_PROMPTS = 4
IP_ADAPTER_NODE = {ControlNetType.IMAGE_PROMPT: "ip_adapter_image", ControlNetType.FACE_SWAP: "ip_adapter_face"}
# structural types: (control file loader node, preprocessor node prefix)
CLIP_VISION_FILE = "clip_vision_vit_h.safetensors"
CONTROL_FILES = {ControlNetType.PYRA_CANNY: "control-lora-canny-rank128.safetensors",
                 ControlNetType.CPDS: "fooocus_xl_cpds_128.safetensors"}
CONTROL_NODES = {ControlNetType.PYRA_CANNY: ("control_canny", "cn_pyracanny"),
                 ControlNetType.CPDS: ("control_cpds", "cn_cpds")}


def active_image_prompts(prompts: list[ImagePrompt]) -> list[ImagePrompt]:
    """The entries with an image, at most four, as Fooocus-API keeps them."""
    return [prompt for prompt in prompts if prompt.cn_img][:MAX_IMAGE_PROMPTS]


class ImagePromptPlanner:
    def __init__(self, shared: TextToImagePlanner) -> None:
        self.shared = shared
        self.workflow = Workflow.load("text_to_image_ip")

    def __call__(self, job_type: str, params: dict, job_id: str) -> JobPlan:
        request = TextToImageWithIPRequest.model_validate(params)
        prompts = active_image_prompts(request.image_prompts)
        if not prompts:
            return self.shared(job_type, params, job_id)
        self._require_files(prompts)
        job = self.shared.prepare(request)
        width, height = request.size
        advanced = request.advanced_params
        if advanced.overwrite_width > 0:
            width = advanced.overwrite_width
        if advanced.overwrite_height > 0:
            height = advanced.overwrite_height
        slot_values, slot_enabled = self._slots(prompts, advanced.skipping_cn_preprocessor)
        slot_values.update({"controlnet_softness": advanced.controlnet_softness,
                            "canny_low_threshold": advanced.canny_low_threshold,
                            "canny_high_threshold": advanced.canny_high_threshold,
                            "skipping_cn_preprocessor": advanced.skipping_cn_preprocessor})
        runs = []
        for task in job.tasks:
            values, enabled = self.shared.sampling_values(job, task, job_id, width, height)
            values.update({"width": width, "height": height, **slot_values})
            enabled.update(slot_enabled)
            runs.append(self.shared.run_spec(self.workflow, values, enabled))
        return JobPlan(runs, [task.seed for task in job.tasks], job.steps.steps, job.warnings)

    @staticmethod
    def _slots(prompts: list[ImagePrompt], skip_preprocessors: bool) -> tuple[dict, dict[str, bool]]:
        values: dict = {}
        enabled: dict[str, bool] = {}
        adapter_types = [p.cn_type for p in prompts if p.cn_type in IP_ADAPTER_NODE]
        idle_adapter = [IP_ADAPTER_NODE[adapter_types[0] if adapter_types else ControlNetType.IMAGE_PROMPT], 0]
        # without adapter slots the sampler takes the LoRA'd model directly: no CLIP vision, no adapter loaded
        values["sampler_model"] = ["ip_4", 0] if adapter_types else ["loras", 0]
        for slot in range(1, MAX_IMAGE_PROMPTS + 1):
            prompt = prompts[slot - 1] if slot <= len(prompts) else None
            adapter = prompt is not None and prompt.cn_type in IP_ADAPTER_NODE
            structural = prompt is not None and prompt.cn_type in CONTROL_NODES
            enabled[f"ip_image_{slot}"] = adapter
            enabled[f"cn_{slot}"] = structural
            values[f"ip_stop_{slot}"] = 0.0  # idle unless this slot is an adapter slot
            values[f"ip_adapter_of_{slot}"] = idle_adapter
            if prompt is not None:
                values[f"ip_image_{slot}"] = prompt.cn_img
            if adapter:
                values.update({
                    f"ip_type_{slot}": prompt.cn_type.value, f"ip_stop_{slot}": prompt.resolved_stop,
                    f"ip_weight_{slot}": prompt.resolved_weight, f"ip_skip_{slot}": skip_preprocessors,
                    f"ip_adapter_of_{slot}": [IP_ADAPTER_NODE[prompt.cn_type], 0]})
            if structural:
                loader, preprocessor = CONTROL_NODES[prompt.cn_type]
                values.update({
                    f"cn_stop_{slot}": prompt.resolved_stop, f"cn_weight_{slot}": prompt.resolved_weight,
                    f"cn_control_of_{slot}": [loader, 0], f"cn_hint_of_{slot}": [f"{preprocessor}_{slot}", 0]})
        return values, enabled

    def _require_files(self, prompts: list[ImagePrompt]) -> None:
        """The model files the chosen types need, named with their folders when missing."""
        needed = set()
        for prompt in prompts:
            if prompt.cn_type in IP_ADAPTER_NODE:
                needed |= {("clip_vision", CLIP_VISION_FILE), ("controlnet", NEGATIVE_FILE),
                           ("controlnet", FACE_SWAP_FILE if prompt.cn_type is ControlNetType.FACE_SWAP
                            else IMAGE_PROMPT_FILE)}
            else:
                needed.add(("controlnet", CONTROL_FILES[prompt.cn_type]))
        folders = self.shared.folders
        missing = [f"{name} in {folders.directories(folder)[0]}" for folder, name in sorted(needed)
                   if name not in folders.list(folder)]
        if missing:
            self.shared.fetch_later(sorted(needed))  # downloads on: the job waits for the files
            raise JobCannotRun("image prompts need " + "; ".join(missing) +
                               " (Fooocus' files are on Hugging Face, lllyasviel/misc)")


class ImagePromptJobPlanner:
    """The image-prompt route: image prompts when any has an image, else the inpaint/outpaint
    half of the route (its input image and mask), else text-to-image."""

    def __init__(self, image_prompts: ImagePromptPlanner, inpaint) -> None:
        self.image_prompts = image_prompts
        self.inpaint = inpaint

    def __call__(self, job_type: str, params: dict, job_id: str) -> JobPlan:
        if any(slot.get("cn_img") for slot in params.get("image_prompts") or []):
            plan = self.image_prompts(job_type, params, job_id)
            if params.get("input_image"):
                plan.warnings.append("input_image is not used together with image prompts yet (Fooocus' "
                                     "mixing of image prompt and inpaint is not supported)")
            return plan
        return self.inpaint(job_type, params, job_id)
