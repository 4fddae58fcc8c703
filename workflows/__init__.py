"""Capabilities as data: an API-format workflow JSON plus a map of its parameter slots.

`<name>.json` is plain ComfyUI API format (submit it to POST /prompt as it is);
`<name>.params.json` names which node inputs each request parameter fills (`slots`) and which
links an optional piece removes when it is off (`optional`). Python fills values; it never
builds graphs.
"""
from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

WORKFLOW_DIR = Path(__file__).resolve().parent


@dataclass(frozen=True)
class Workflow:
    name: str
    graph: dict
    slots: dict[str, list[tuple[str, str]]]
    optional: dict[str, list[tuple[str, str]]]

    @classmethod
    def load(cls, name: str, directory: Path = WORKFLOW_DIR) -> "Workflow":
        graph = json.loads((directory / f"{name}.json").read_text())
        params = json.loads((directory / f"{name}.params.json").read_text())
        slots = {key: [tuple(target) for target in targets] for key, targets in params["slots"].items()}
        optional = {key: [tuple(target) for target in targets] for key, targets in params.get("optional", {}).items()}
        for targets in list(slots.values()) + list(optional.values()):
            for node, field in targets:
                if node not in graph or field not in graph[node]["inputs"]:
                    raise ValueError(f"workflow {name}: slot target {node}.{field} does not exist")
        return cls(name, graph, slots, optional)

    def fill(self, values: dict[str, Any], enabled: dict[str, bool] | None = None) -> dict:
        """A new prompt with `values` written into their slots and disabled optional links removed."""
        unknown = set(values) - set(self.slots)
        if unknown:
            raise KeyError(f"workflow {self.name} has no parameter slot(s) {sorted(unknown)}")
        prompt = copy.deepcopy(self.graph)
        for key, value in values.items():
            for node, field in self.slots[key]:
                prompt[node]["inputs"][field] = value
        for piece, on in (enabled or {}).items():
            if piece not in self.optional:
                raise KeyError(f"workflow {self.name} has no optional piece {piece!r}")
            if not on:
                for node, field in self.optional[piece]:
                    prompt[node]["inputs"].pop(field, None)
        return prompt
