"""Our API-format workflows (workflows/*.json) as the frontend's graph format (LiteGraph v0.4), so
they can be offered as templates: the frontend loads templates with `loadGraphData`, which takes
only its own format (it converts API format only for files a user opens).

A node's widgets are its widget-typed inputs (INT, FLOAT, STRING, BOOLEAN, combos) in
`input_order`, not `forceInput`; `widgets_values` lists their values in that order, with the
frontend's "control after generate" value ("fixed", so a queued template runs the file's seed)
after every input whose spec asks for one and after every INT named seed or noise_seed. Socket inputs and links keep the API graph's edges. The
browser test checks that each converted template serialises back to the API graph it came from.
"""
from __future__ import annotations

from typing import Callable

WIDGET_TYPES = {"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"}
SEED_NAMES = ("seed", "noise_seed")  # INT inputs the frontend gives a control widget whatever their spec says
COLUMN_WIDTH, ROW_GAP, NODE_WIDTH = 380, 30, 320


def _spec(info: dict, name: str):
    inputs = info.get("input", {})
    return inputs.get("required", {}).get(name) or inputs.get("optional", {}).get(name)


def _ordered_inputs(info: dict) -> list[str]:
    order = info.get("input_order") or {}
    names = list(order.get("required", [])) + list(order.get("optional", []))
    if not names:
        inputs = info.get("input", {})
        names = list(inputs.get("required", {})) + list(inputs.get("optional", {}))
    return names


def _is_widget(spec) -> bool:
    if not spec:
        return False
    kind = spec[0]
    options = spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {}
    if options.get("forceInput"):
        return False
    return isinstance(kind, list) or kind in WIDGET_TYPES


def _type_name(spec) -> str:
    kind = spec[0] if spec else "*"
    return "COMBO" if isinstance(kind, list) else str(kind)


def _depths(prompt: dict) -> dict[str, int]:
    """Column of each node: one more than its deepest source (a valid API graph has no cycles)."""
    depth: dict[str, int] = {}

    def visit(node_id: str, seen: tuple = ()) -> int:
        if node_id in depth:
            return depth[node_id]
        if node_id in seen:
            return 0
        sources = [value[0] for value in prompt[node_id].get("inputs", {}).values()
                   if isinstance(value, list) and len(value) == 2 and str(value[0]) in prompt]
        depth[node_id] = 1 + max((visit(str(s), seen + (node_id,)) for s in sources), default=-1)
        return depth[node_id]

    for node_id in prompt:
        visit(node_id)
    return depth


def api_to_ui(prompt: dict, object_info: Callable[[str], dict]) -> dict:
    """The frontend's graph of an API-format prompt; object_info(class) gives each node's schema."""
    ids = list(prompt)
    numeric = {node_id: index + 1 for index, node_id in enumerate(ids)}  # LiteGraph ids are numbers
    depth = _depths(prompt)
    rows: dict[int, int] = {}
    nodes, links = [], []
    outputs_of: dict[str, list[dict]] = {}
    infos = {node_id: object_info(prompt[node_id]["class_type"]) for node_id in ids}
    for node_id in ids:
        info = infos[node_id]
        outputs_of[node_id] = [{"name": name, "type": kind, "links": [], "slot_index": index}
                               for index, (name, kind) in enumerate(zip(info.get("output_name", info.get("output", [])),
                                                                        info.get("output", [])))]
    for order, node_id in enumerate(ids):
        node = prompt[node_id]
        info = infos[node_id]
        values = node.get("inputs", {})
        inputs, widgets_values = [], []
        for name in _ordered_inputs(info):
            spec = _spec(info, name)
            value = values.get(name)
            linked = isinstance(value, list) and len(value) == 2 and str(value[0]) in prompt
            options = spec[1] if spec and len(spec) > 1 and isinstance(spec[1], dict) else {}
            slot = {"name": name, "type": _type_name(spec), "link": None}
            if _is_widget(spec):
                default = options.get("default")
                if default is None and isinstance(spec[0], list) and spec[0]:
                    default = spec[0][0]
                widgets_values.append(default if linked or name not in values else value)
                if options.get("control_after_generate") or (name in SEED_NAMES and spec[0] == "INT"):
                    widgets_values.append("fixed")
                slot["widget"] = {"name": name}
            if linked:  # every input is a slot (widgets too), so the slot index is the list position
                source, index = str(value[0]), int(value[1])
                link_id = len(links) + 1
                source_outputs = outputs_of[source]
                kind = source_outputs[index]["type"] if index < len(source_outputs) else slot["type"]
                links.append([link_id, numeric[source], index, numeric[node_id], len(inputs), kind])
                if index < len(source_outputs):
                    source_outputs[index]["links"].append(link_id)
                slot["link"] = link_id
            inputs.append(slot)
        column = depth.get(node_id, 0)
        height = 46 + 24 * max(len(inputs), len(outputs_of[node_id]))
        top = rows.get(column, 0)
        rows[column] = top + height + ROW_GAP
        entry = {"id": numeric[node_id], "type": node["class_type"], "pos": [column * COLUMN_WIDTH, top],
                 "size": [NODE_WIDTH, height], "flags": {}, "order": order, "mode": 0, "inputs": inputs,
                 "outputs": outputs_of[node_id], "properties": {"Node name for S&R": node["class_type"]},
                 "widgets_values": widgets_values}
        title = (node.get("_meta") or {}).get("title")
        if title:
            entry["title"] = title
        nodes.append(entry)
    return {"last_node_id": len(ids), "last_link_id": len(links), "nodes": nodes, "links": links, "groups": [],
            "config": {}, "extra": {"ds": {"scale": 0.6, "offset": [40, 40]}}, "version": 0.4}
