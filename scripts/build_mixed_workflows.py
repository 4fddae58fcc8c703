"""Writes the image-prompt mixes of the image workflows: `vary_ip`, `upscale_ip` and
`inpaint_outpaint_ip` (Fooocus' "Mixing Image Prompt and Vary/Upscale" and "... and Inpaint").

The image-prompt block is the part of `text_to_image_ip.json` that `text_to_image.json` does not
have (CLIP vision, IP-Adapters, Control-LoRAs, four slots). It is spliced in front of the base
workflow's sampler: the sampler's model goes through the four FooocusImagePrompt slots and its
conditionings through the four FooocusControlNetApply slots. The hints of the structural slots
are sized to the sampler's latent (FooocusImageScaleToLatent), because in these workflows the
generation size comes out of the graph.

The JSON files are data checked into workflows/ and loaded at run time; this script is how they
are made and kept in step with their sources (tests/test_mixed_workflows.py checks that running it
would change nothing). Run: .venv/bin/python scripts/build_mixed_workflows.py
"""
from __future__ import annotations

import copy
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
WORKFLOW_DIR = ROOT / "workflows"
BASES = ("vary", "upscale", "inpaint_outpaint")
SLOTS = 4
# where the base workflow's sampler inputs go once the block is in front of the sampler
ENTRY = {("sampler", "model"): ("ip_1", "model"), ("sampler", "positive"): ("cn_1", "positive"),
         ("sampler", "negative"): ("cn_1", "negative")}
BLOCK_OUTPUT_SLOT = "model_after_image_prompts"  # the IP block's own slot on sampler.model


def _read(name: str) -> tuple[dict, dict]:
    graph = json.loads((WORKFLOW_DIR / f"{name}.json").read_text())
    params = json.loads((WORKFLOW_DIR / f"{name}.params.json").read_text())
    return graph, params


def image_prompt_block() -> tuple[dict, dict]:
    """(nodes, params) of the image-prompt block, as text_to_image_ip.json has them."""
    with_ip, ip_params = _read("text_to_image_ip")
    plain, _ = _read("text_to_image")
    nodes = {node_id: node for node_id, node in with_ip.items() if node_id not in plain}
    return nodes, ip_params


def _retarget(targets: list) -> list:
    return [list(ENTRY.get(tuple(target), tuple(target))) for target in targets]


def build(base_name: str) -> tuple[dict, dict]:
    """The mixed workflow and its params for one base workflow."""
    graph, params = _read(base_name)
    block, ip_params = image_prompt_block()
    clash = sorted(set(block) & set(graph))
    if clash:
        raise ValueError(f"{base_name}: node ids of the image-prompt block already used: {clash}")
    mixed = copy.deepcopy(graph)
    sampler = mixed["sampler"]["inputs"]
    for node_id, node in copy.deepcopy(block).items():
        mixed[node_id] = node
    for (_, field), (node_id, entry_field) in ENTRY.items():
        mixed[node_id]["inputs"][entry_field] = sampler[field]
    sampler["model"], sampler["positive"], sampler["negative"] = ["ip_4", 0], ["cn_4", 0], ["cn_4", 1]
    for slot in range(1, SLOTS + 1):
        hint = mixed[f"cn_hint_{slot}"]
        image = hint["inputs"]["image"]
        mixed[f"cn_hint_{slot}"] = {
            "class_type": "FooocusImageScaleToLatent",
            "inputs": {"image": image, "latent": sampler["latent_image"], "upscale_method": "lanczos",
                       "crop": "center"},
            "_meta": {"title": f"Image prompt {slot} at the generation size"}}

    slots = {key: _retarget(targets) for key, targets in params["slots"].items()}
    for key, targets in ip_params["slots"].items():
        if key == BLOCK_OUTPUT_SLOT:
            slots[key] = targets
            continue
        inside = [target for target in targets if target[0] in block and mixed[target[0]]["class_type"] != (
            "FooocusImageScaleToLatent")]
        if not inside:
            continue
        if key in slots:
            raise ValueError(f"{base_name}: slot {key!r} exists in the base workflow and in the block")
        slots[key] = inside
    optional = {key: _retarget(targets) for key, targets in params.get("optional", {}).items()}
    for key, targets in ip_params.get("optional", {}).items():
        if all(target[0] in block for target in targets):
            optional[key] = targets
    return mixed, {"slots": slots, "optional": optional}


def _entries(mapping: dict, indent: str) -> str:
    return ",\n".join(f"{indent}{json.dumps(key)}: {json.dumps(value)}" for key, value in mapping.items())


def render_graph(graph: dict) -> str:
    """One node per line, as the hand-written workflows are laid out."""
    return "{\n" + _entries(graph, "  ") + "\n}\n"


def render_params(params: dict) -> str:
    sections = [f'  {json.dumps(name)}: {{\n{_entries(params[name], "    ")}\n  }}' for name in ("slots", "optional")]
    return "{\n" + ",\n".join(sections) + "\n}\n"


def main() -> int:
    for base in BASES:
        graph, params = build(base)
        (WORKFLOW_DIR / f"{base}_ip.json").write_text(render_graph(graph))
        (WORKFLOW_DIR / f"{base}_ip.params.json").write_text(render_params(params))
        print(f"wrote workflows/{base}_ip.json ({len(graph)} nodes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
