"""Image prompts (specs/fooocus_pipeline.md §10, specs/fooocus_api.md §5): up to four IP-Adapter
and Control-LoRA image prompts on text-to-image (`workflows/text_to_image_ip.json`), and mixed
into vary, upscale and inpaint/outpaint (`workflows/<base>_ip.json`, made by
scripts/build_mixed_workflows.py) as Fooocus-API's auto-mixing does.

Stored requests carry `image_prompts` as [{cn_img: stored input name, cn_stop, cn_weight,
cn_type}]; only entries with an image count (at most four: the request layer refuses more), and a
stop or weight of 0/null takes the type's default (ImagePrompt 0.5/0.6, FaceSwap 0.9/0.75,
PyraCanny and CPDS 0.5/1.0). ImagePrompt and FaceSwap patch the model through IP-Adapter plus;
PyraCanny and CPDS resize the image to the generation size (cover, centre crop), preprocess it and
apply their Control-LoRA to both conditionings with `controlnet_softness`. Each slot of a
workflow has both paths; the planner connects the one its type needs and leaves the other passing
through. `debugging_cn_preprocessor` returns the first preprocessed image prompt (Fooocus' order:
PyraCanny, CPDS, ImagePrompt, FaceSwap) instead of generating (`workflows/image_prompt_debug.json`).
"""
from __future__ import annotations

from nodes.face_detection import DETECTOR_FILE
from nodes.fooocus.image_prompt import FACE_SWAP_FILE, IMAGE_PROMPT_FILE, NEGATIVE_FILE
from nodes.fooocus.prompt_processing import resolve_seed
from workflows import Workflow

from .jobs import JobCannotRun, JobPlan
from .planner import TextToImagePlanner
from .requests import MAX_IMAGE_PROMPTS, ControlNetType, ImagePrompt, TextToImageWithIPRequest

IP_ADAPTER_NODE = {ControlNetType.IMAGE_PROMPT: "ip_adapter_image", ControlNetType.FACE_SWAP: "ip_adapter_face"}
# structural types: (control file loader node, preprocessor node prefix)
CLIP_VISION_FILE = "clip_vision_vit_h.safetensors"
CONTROL_FILES = {ControlNetType.PYRA_CANNY: "control-lora-canny-rank128.safetensors",
                 ControlNetType.CPDS: "fooocus_xl_cpds_128.safetensors"}
CONTROL_NODES = {ControlNetType.PYRA_CANNY: ("control_canny", "cn_pyracanny"),
                 ControlNetType.CPDS: ("control_cpds", "cn_cpds")}
# Fooocus preprocesses (and, debugging, returns the first of) the image prompts type by type in this order
DEBUG_ORDER = (ControlNetType.PYRA_CANNY, ControlNetType.CPDS, ControlNetType.IMAGE_PROMPT, ControlNetType.FACE_SWAP)
DEBUG_VIEW = {ControlNetType.PYRA_CANNY: ["pyracanny", 0], ControlNetType.CPDS: ["cpds", 0],
              ControlNetType.IMAGE_PROMPT: ["clip_vision_view", 0], ControlNetType.FACE_SWAP: ["clip_vision_view", 0]}
MODEL_SLOT = "model_after_image_prompts"  # the sampler's model: the last IP slot, or the plain model


def active_image_prompts(prompts: list[ImagePrompt]) -> list[ImagePrompt]:
    """The entries with an image, at most four, as Fooocus-API keeps them."""
    return [prompt for prompt in prompts if prompt.cn_img][:MAX_IMAGE_PROMPTS]


class ImagePromptSlots:
    """Fills the image-prompt slots of any workflow that has the block, and plans the debug view."""

    def __init__(self, shared: TextToImagePlanner) -> None:
        self.shared = shared
        self.debug_workflow = Workflow.load("image_prompt_debug")

    def values(self, prompts: list[ImagePrompt], advanced, plain_model: list) -> tuple[dict, dict[str, bool]]:
        """Slot values and optional pieces for `prompts`; `plain_model` is the link the sampler
        takes when no slot is an IP-Adapter slot (then no CLIP vision or adapter is loaded)."""
        self._require_files(prompts, advanced.skipping_cn_preprocessor)
        values: dict = {"controlnet_softness": advanced.controlnet_softness,
                        "canny_low_threshold": advanced.canny_low_threshold,
                        "canny_high_threshold": advanced.canny_high_threshold,
                        "skipping_cn_preprocessor": advanced.skipping_cn_preprocessor}
        skip = advanced.skipping_cn_preprocessor
        # FaceSwap's face crop; not loaded when no slot needs it
        enabled: dict[str, bool] = {"face_detector": _crops_faces(prompts, skip)}
        adapter_types = [p.cn_type for p in prompts if p.cn_type in IP_ADAPTER_NODE]
        idle_adapter = [IP_ADAPTER_NODE[adapter_types[0] if adapter_types else ControlNetType.IMAGE_PROMPT], 0]
        values[MODEL_SLOT] = ["ip_4", 0] if adapter_types else plain_model
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
                    f"ip_weight_{slot}": prompt.resolved_weight, f"ip_skip_{slot}": skip,
                    f"ip_adapter_of_{slot}": [IP_ADAPTER_NODE[prompt.cn_type], 0]})
            if structural:
                loader, preprocessor = CONTROL_NODES[prompt.cn_type]
                values.update({
                    f"cn_stop_{slot}": prompt.resolved_stop, f"cn_weight_{slot}": prompt.resolved_weight,
                    f"cn_control_of_{slot}": [loader, 0], f"cn_hint_of_{slot}": [f"{preprocessor}_{slot}", 0]})
        return values, enabled

    def debug_plan(self, request, prompts: list[ImagePrompt], job_id: str, width: int, height: int) -> JobPlan:
        """Fooocus' "Debug Preprocessors": the first image prompt in its preprocessing order,
        preprocessed as its type does it, is the job's one result; nothing is generated."""
        first = min(prompts, key=lambda prompt: DEBUG_ORDER.index(prompt.cn_type))
        advanced = request.advanced_params
        values = {"input_image": first.cn_img, "width": width, "height": height,
                  "canny_low_threshold": advanced.canny_low_threshold,
                  "canny_high_threshold": advanced.canny_high_threshold,
                  "skipping_cn_preprocessor": advanced.skipping_cn_preprocessor,
                  "cn_type": first.cn_type.value if first.cn_type in IP_ADAPTER_NODE else "ImagePrompt",
                  "debug_view": DEBUG_VIEW[first.cn_type], "job_id": job_id, "image_index": 0,
                  "metadata": "{}", **self.shared.save_values(request)}
        crop = _crops_faces([first], advanced.skipping_cn_preprocessor)
        if crop:
            self._require_files([first])  # the crop needs the detector (and the slot's files, as a real run)
        run = self.shared.run_spec(self.debug_workflow, values, {"face_detector": crop})
        return JobPlan([run], [resolve_seed(request.image_seed)], 0,
                       [f"debugging_cn_preprocessor: the preprocessed {first.cn_type.value} image prompt "
                        "is returned instead of a generated image"])

    def _require_files(self, prompts: list[ImagePrompt], skip_preprocessors: bool = False) -> None:
        """The model files the chosen types need, named with their folders when missing."""
        needed = {("controlnet", DETECTOR_FILE)} if _crops_faces(prompts, skip_preprocessors) else set()
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
                               " (Fooocus' files are on Hugging Face, lllyasviel/misc; the face detector "
                               "from facexlib's GitHub releases)")


def _crops_faces(prompts: list[ImagePrompt], skip_preprocessors: bool) -> bool:
    return not skip_preprocessors and any(prompt.cn_type is ControlNetType.FACE_SWAP for prompt in prompts)


def mixed_workflow(name: str) -> Workflow:
    """The image-prompt mix of a base workflow (vary, upscale, inpaint_outpaint)."""
    return Workflow.load(f"{name}_ip")


class ImagePromptPlanner:
    """Text to image (and text-to-image-with-ip): with image prompts over text_to_image_ip.json,
    without them the plain text-to-image planner."""

    def __init__(self, shared: TextToImagePlanner, slots: ImagePromptSlots) -> None:
        self.shared = shared
        self.slots = slots
        self.workflow = Workflow.load("text_to_image_ip")

    def __call__(self, job_type: str, params: dict, job_id: str) -> JobPlan:
        request = TextToImageWithIPRequest.model_validate(params)
        prompts = active_image_prompts(request.image_prompts)
        if not prompts:
            return self.shared(job_type, params, job_id)
        width, height = request.size
        advanced = request.advanced_params
        if advanced.overwrite_width > 0:
            width = advanced.overwrite_width
        if advanced.overwrite_height > 0:
            height = advanced.overwrite_height
        if advanced.debugging_cn_preprocessor:
            return self.slots.debug_plan(request, prompts, job_id, width, height)
        slot_values, slot_enabled = self.slots.values(prompts, advanced, plain_model=["loras", 0])
        job = self.shared.prepare(request)
        runs = []
        for task in job.tasks:
            values, enabled = self.shared.sampling_values(job, task, job_id, width, height)
            values.update({"width": width, "height": height, **slot_values})
            enabled.update(slot_enabled)
            runs.append(self.shared.run_spec(self.workflow, values, enabled))
        return JobPlan(runs, [task.seed for task in job.tasks], job.steps.steps, job.warnings)


class ImagePromptJobPlanner:
    """The image-prompt route: its inpaint/outpaint half (with the image prompts mixed in) when
    it has an input image, else text-to-image with the image prompts."""

    def __init__(self, image_prompts: ImagePromptPlanner, inpaint) -> None:
        self.image_prompts = image_prompts
        self.inpaint = inpaint

    def __call__(self, job_type: str, params: dict, job_id: str) -> JobPlan:
        if params.get("input_image"):
            return self.inpaint(job_type, params, job_id)
        return self.image_prompts(job_type, params, job_id)
