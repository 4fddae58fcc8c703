"""A toy Fooocus planner over torch-free nodes: exercises the job system without models."""
from __future__ import annotations

from PIL import Image

from graph import context as graph_context
from graph import validate_prompt
from server.fooocus.api import FooocusAPI
from server.fooocus.jobs import JobPlan
from server.fooocus.validation import Vocabulary
from server.queue import RunSpec


class ToySave:
    """Writes a small PNG through the job's output store; reports it as Fooocus images."""
    RETURN_TYPES = ()
    FUNCTION = "run"
    OUTPUT_NODE = True

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"value": ("INT",), "job_id": ("STRING",), "index": ("INT",)}}

    def run(self, value, job_id, index):
        store = graph_context.current().services.extras["fooocus_outputs"]
        saved = store.save(Image.new("RGB", (8, 8), (value * 10 % 255, 0, 0)), job_id=job_id, index=index)
        return {"ui": {"fooocus_images": [{"url": saved.url, "path": str(saved.path)}]}}


def toy_planner(registry):
    def plan(job_type, params, job_id):
        steps = params.get("advanced_params", {}).get("overwrite_step", -1)
        steps = 3 if steps is None or steps < 1 else steps
        seed = params.get("image_seed", -1)
        seed = 1000 if seed == -1 else seed
        # "hold" in the prompt: steps of 0.2 s, so the job holds the worker until it is stopped
        delay = 0.2 if "hold" in params.get("prompt", "") else 0.02
        runs, seeds = [], []
        for index in range(params.get("image_number", 1)):
            producer = "Fail" if "fail" in params.get("prompt", "") and index == 1 else "Slow"
            # the value differs per job, so the executor cache cannot make a job instant
            value = (int(job_id.replace("-", "")[:6], 16) + index) % 1000 if job_id else index
            prompt = {"n": {"class_type": "Number", "inputs": {"value": value}},
                      "sample": {"class_type": producer, "inputs": {"x": ["n", 0], "steps": steps, "delay": delay,
                                                                     "preview": True}},
                      "save": {"class_type": "ToySave", "inputs": {"value": ["sample", 0], "job_id": job_id,
                                                                   "index": index}}}
            if producer == "Fail":
                prompt["sample"]["inputs"] = {"x": ["n", 0]}
            result = validate_prompt(prompt, registry)
            assert result.ok, result.node_errors
            runs.append(RunSpec(prompt, result.outputs, result.constants, result.links))
            seeds.append(seed + index)
        if "unplannable" in params.get("prompt", ""):
            raise ValueError("base_model_name: nothing can run this request")
        return JobPlan(runs, seeds, steps)
    return plan


def attach_toy_fooocus(app, **webhook_options) -> FooocusAPI:
    app.registry.register("ToySave", ToySave)
    api = FooocusAPI(app, toy_planner(app.registry), vocabulary=lambda: Vocabulary.of(),
                     style_names=lambda: ["Fooocus V2", "Fooocus Enhance"],
                     sampler_nodes=lambda node: node == "sample", webhook_options=webhook_options)
    app.services.extras["fooocus_outputs"] = api.outputs
    app.extensions.append(api)
    return api
