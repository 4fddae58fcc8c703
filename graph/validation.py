"""API-format workflow validation with ComfyUI's error types and response shapes.

Walks upstream from the output nodes without recursion (1000-node chains are fine), checks each
reachable node's own inputs, finds dependency cycles explicitly, and keeps the outputs whose whole
upstream is valid. Constants are coerced here, once, so the executor receives clean values.
"""
from __future__ import annotations

import math
import traceback
from dataclasses import dataclass, field
from typing import Any, Iterable

from .registry import NodeRegistry
from .schema import NodeSchema, InputSpec, types_compatible

# ComfyUI abbreviates option lists over 20 as "(list of length N)"; we name up to 64 valid values
# (every sampler and scheduler), so the error says what would have been accepted.
LIST_DISPLAY_LIMIT = 64


def is_link(value: Any) -> bool:
    return (isinstance(value, list) and len(value) == 2 and isinstance(value[0], str)
            and isinstance(value[1], (int, float)) and not isinstance(value[1], bool))


def unwrap_constant(value: Any) -> Any:
    """`{"__value__": [...]}` is how a workflow passes a list constant (a bare list is a link)."""
    if isinstance(value, dict) and set(value) == {"__value__"}:
        return value["__value__"]
    return value


@dataclass
class ValidationResult:
    ok: bool
    error: dict | None
    outputs: list[str]
    node_errors: dict[str, dict]
    constants: dict[str, dict[str, Any]] = field(default_factory=dict)  # node -> coerced constants
    links: dict[str, dict[str, tuple[str, int]]] = field(default_factory=dict)  # node -> input -> (source, index)
    order: list[str] | None = None  # every checked node after the nodes it links to (when all are valid)

    def response_error(self) -> dict:
        return {"error": self.error, "node_errors": self.node_errors}


def _error(kind: str, message: str, details: str = "", **extra: Any) -> dict:
    return {"type": kind, "message": message, "details": details, "extra_info": extra}


def validate_prompt(prompt: Any, registry: NodeRegistry, partial_targets: Iterable[str] | None = None) -> ValidationResult:
    if not isinstance(prompt, dict):
        return ValidationResult(False, _error("invalid_prompt", "Prompt must be an object of node id -> node",
                                              f"got {type(prompt).__name__}"), [], {})
    for node_id, node in prompt.items():
        class_type = node.get("class_type") if isinstance(node, dict) else None
        if class_type is None:
            return ValidationResult(False, _error(
                "invalid_prompt", "Cannot execute because a node is missing the class_type property.",
                f"Node ID '#{node_id}'"), [], {})
        if class_type not in registry:
            return ValidationResult(False, _error(
                "invalid_prompt", f"Cannot execute because node {class_type} does not exist.",
                f"Node ID '#{node_id}'"), [], {})
        if not isinstance(node.get("inputs", {}), dict):
            return ValidationResult(False, _error(
                "invalid_prompt", "Node inputs must be an object of input name -> value",
                f"Node ID '#{node_id}'"), [], {})

    targets = set(partial_targets) if partial_targets is not None else None
    outputs = [nid for nid, node in prompt.items()
               if registry.get(node["class_type"]).output_node and (targets is None or nid in targets)]
    if not outputs:
        return ValidationResult(False, _error("prompt_no_outputs", "Prompt has no outputs", ""), [], {})

    checker = _NodeChecker(prompt, registry)
    upstream = {out: checker.upstream_of(out) for out in outputs}
    for node_id, cycle in checker.find_cycles(set().union(*upstream.values())).items():
        checker.errors.setdefault(node_id, []).append(_error(
            "dependency_cycle", "Dependency cycle detected", " -> ".join(cycle + [cycle[0]]),
            cycle=cycle))

    valid_outputs, node_errors, failure_messages = [], {}, []
    for out in outputs:
        bad = [nid for nid in upstream[out] if checker.errors.get(nid)]
        if not bad:
            valid_outputs.append(out)
            continue
        for nid in bad:
            entry = node_errors.setdefault(nid, {"errors": checker.errors[nid], "dependent_outputs": [],
                                                 "class_type": prompt[nid]["class_type"]})
            entry["dependent_outputs"].append(out)
        failure_messages.append(f"Output {out} failed validation")
    for errors in node_errors.values():
        failure_messages.extend(f"{e['message']}: {e['details']}" for e in errors["errors"])

    if not valid_outputs:
        return ValidationResult(False, _error("prompt_outputs_failed_validation",
                                              "Prompt outputs failed validation", "\n".join(failure_messages)),
                                [], node_errors)
    order = checker.order if not node_errors else None
    return ValidationResult(True, None, valid_outputs, node_errors, checker.constants, checker.links, order)


class _NodeChecker:
    def __init__(self, prompt: dict, registry: NodeRegistry) -> None:
        self.prompt = prompt
        self.registry = registry
        self.errors: dict[str, list[dict]] = {}
        self.constants: dict[str, dict[str, Any]] = {}
        self._links: dict[str, list[str]] = {}
        self.links: dict[str, dict[str, tuple[str, int]]] = {}
        self.order: list[str] = []  # post-order of the cycle search: sources before their consumers

    def upstream_of(self, output: str) -> set[str]:
        """All nodes `output` depends on (itself included), each checked once."""
        seen, stack = set(), [output]
        while stack:
            node_id = stack.pop()
            if node_id in seen:
                continue
            seen.add(node_id)
            if node_id not in self._links:
                self._links[node_id] = self._check(node_id)
            stack.extend(self._links[node_id])
        return seen

    def find_cycles(self, nodes: set[str]) -> dict[str, list[str]]:
        """Iterative three-colour DFS; returns node -> the cycle it lies on."""
        colour: dict[str, int] = {}
        on_cycle: dict[str, list[str]] = {}
        for start in nodes:
            if colour.get(start):
                continue
            path: list[str] = []
            stack: list[tuple[str, Iterable]] = [(start, iter(self._links.get(start, ())))]
            colour[start] = 1
            path.append(start)
            while stack:
                node_id, children = stack[-1]
                child = next(children, None)
                if child is None:
                    colour[node_id] = 2
                    self.order.append(node_id)
                    stack.pop()
                    path.pop()
                    continue
                state = colour.get(child, 0)
                if state == 1:
                    cycle = path[path.index(child):]
                    for member in cycle:
                        on_cycle.setdefault(member, list(cycle))
                elif state == 0 and child in self._links:
                    colour[child] = 1
                    path.append(child)
                    stack.append((child, iter(self._links[child])))
        return on_cycle

    def _add(self, node_id: str, error: dict) -> None:
        self.errors.setdefault(node_id, []).append(error)

    def _check(self, node_id: str) -> list[str]:
        """Checks one node's own inputs; returns the ids of the nodes it links to."""
        node = self.prompt[node_id]
        schema = self.registry.get(node["class_type"])
        inputs = node.get("inputs") or {}
        linked: list[str] = []
        constants: dict[str, Any] = {}
        links: dict[str, tuple[str, int]] = {}
        linked_types: dict[str, str] = {}
        for spec in schema.inputs:
            if spec.name not in inputs:
                if spec.required:
                    self._add(node_id, _error("required_input_missing", "Required input is missing",
                                              spec.name, input_name=spec.name))
                continue
            value = inputs[spec.name]
            if isinstance(value, list):
                source = self._check_link(node_id, schema, spec, value)
                if source is not None:
                    linked.append(source)
                    links[spec.name] = (source, int(value[1]))
                    linked_types[spec.name] = self.registry.get(self.prompt[source]["class_type"]).outputs[int(value[1])]
                continue
            try:
                constants[spec.name] = self._check_constant(node_id, schema, spec, unwrap_constant(value))
            except _InputRejected:
                pass
        for name, value in inputs.items():  # undeclared links are still resolved and passed on
            if schema.input(name) is None and is_link(value) and value[0] in self.prompt:
                linked.append(value[0])
                links[name] = (value[0], int(value[1]))
        self._custom_validation(node_id, schema, inputs, constants, linked_types)
        self.constants[node_id] = constants
        self.links[node_id] = links
        return linked

    def _check_link(self, node_id: str, schema: NodeSchema, spec: InputSpec, value: list) -> str | None:
        if not is_link(value):
            self._add(node_id, _error("bad_linked_input", "Bad linked input, must be a length-2 list of [string, int]",
                                      f"{spec.name}: {value!r}", input_name=spec.name, received_value=value))
            return None
        source_id, index = value[0], int(value[1])
        if source_id not in self.prompt:
            self._add(node_id, _error("bad_linked_input", f"Linked node {source_id} does not exist",
                                      f"{spec.name}: {value!r}", input_name=spec.name, linked_node=value))
            return None
        source = self.registry.get(self.prompt[source_id]["class_type"])
        if not 0 <= index < len(source.outputs):
            self._add(node_id, _error("bad_linked_input", f"Node {source_id} has no output {index}",
                                      f"{spec.name}: {value!r}", input_name=spec.name, linked_node=value))
            return None
        produced = source.outputs[index]
        expected = "COMBO" if spec.is_combo else spec.type
        if not schema.validate_takes_input_types and not types_compatible(produced, expected):
            self._add(node_id, _error("return_type_mismatch", "Return type mismatch between linked nodes",
                                      f"{spec.name}, received_type({produced}) mismatch input_type({expected})",
                                      input_name=spec.name, input_config=list(spec.raw), received_type=produced,
                                      linked_node=value))
        return source_id

    def _check_constant(self, node_id: str, schema: NodeSchema, spec: InputSpec, value: Any) -> Any:
        config = list(spec.raw)
        if spec.is_primitive:
            try:
                value = _coerce(spec.type, value)
            except (TypeError, ValueError, OverflowError) as exc:
                self._add(node_id, _error("invalid_input_type",
                                          f"Failed to convert an input value to a {spec.type} value",
                                          f"{spec.name}, {value!r}, {exc}", input_name=spec.name,
                                          input_config=config, received_value=value, exception_message=str(exc)))
                raise _InputRejected from exc
        elif not spec.is_combo and spec.type != "*":
            self._add(node_id, _error("invalid_input_type", f"Input {spec.name} of type {spec.type} must be a link "
                                      "[node_id, output_index] to another node's output",
                                      f"{spec.name}: {value!r}", input_name=spec.name, input_config=config,
                                      received_value=value))
            raise _InputRejected
        if spec.name in schema.validate_claims:
            return value
        if spec.is_primitive and spec.type in ("INT", "FLOAT"):
            low, high = spec.options.get("min"), spec.options.get("max")
            if low is not None and value < low:
                self._add(node_id, _error("value_smaller_than_min", f"Value {value} smaller than min of {low}",
                                          f"{spec.name}", input_name=spec.name, input_config=config,
                                          received_value=value))
                raise _InputRejected
            if high is not None and value > high:
                self._add(node_id, _error("value_bigger_than_max", f"Value {value} bigger than max of {high}",
                                          f"{spec.name}", input_name=spec.name, input_config=config,
                                          received_value=value))
                raise _InputRejected
        if spec.is_combo and (spec.choices is not None or spec.folder is not None):
            choices = spec.combo_choices(self.registry.resolve_folder) or []
            if value not in choices:
                shown = f"(list of length {len(choices)})" if len(choices) > LIST_DISPLAY_LIMIT else choices
                self._add(node_id, _error("value_not_in_list", "Value not in list",
                                          f"{spec.name}: '{value}' not in {shown}", input_name=spec.name,
                                          input_config=None if len(choices) > LIST_DISPLAY_LIMIT else config,
                                          received_value=value))
                raise _InputRejected
        return value

    def _custom_validation(self, node_id: str, schema: NodeSchema, inputs: dict, constants: dict,
                           linked_types: dict) -> None:
        if schema.validate_inputs is None:
            return
        kwargs: dict[str, Any] = {}
        for name in schema.validate_claims:
            if name == "input_types":
                continue
            if name in constants:
                kwargs[name] = constants[name]
            elif name in inputs:
                kwargs[name] = None if isinstance(inputs[name], list) else unwrap_constant(inputs[name])
        if schema.validate_takes_input_types:
            kwargs["input_types"] = linked_types
        try:
            result = schema.validate_inputs(**kwargs)
        except Exception as exc:  # third-party validation code: report, never crash the request
            self._add(node_id, _error("exception_during_validation", "Exception when validating node",
                                      str(exc), exception_type=type(exc).__name__,
                                      traceback=traceback.format_tb(exc.__traceback__)))
            return
        if result is not True:
            details = f"{result}" if isinstance(result, str) else ""
            self._add(node_id, _error("custom_validation_failed", "Custom validation failed for node",
                                      details, input_config=None, received_value=kwargs and str(kwargs)))


class _InputRejected(Exception):
    pass


def _coerce(kind: str, value: Any) -> Any:
    if kind == "INT":
        if isinstance(value, float) and not math.isfinite(value):
            raise ValueError("not a finite number")
        return int(value)
    if kind == "FLOAT":
        result = float(value)
        if not math.isfinite(result):
            raise ValueError("not a finite number")
        return result
    if kind == "STRING":
        if isinstance(value, (dict, list)):
            raise TypeError("expected text")
        return str(value)
    if kind == "BOOLEAN":
        if isinstance(value, str):
            lowered = value.strip().lower()
            if lowered in ("true", "1", "yes"):
                return True
            if lowered in ("false", "0", "no", ""):
                return False
            raise ValueError(f"not a boolean: {value!r}")
        return bool(value)
    return value
