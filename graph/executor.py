"""Runs a validated workflow: demand-driven from its output nodes, in dependency order.

Cached nodes are skipped by never being scheduled; lazy inputs are pulled in only when the node's
`check_lazy_status` asks for them; a node exception becomes one `execution_error` record and the
executor stays usable; interrupts are checked before every node call and inside nodes through
their context.

Node expansion (`{"expand": graph, "result": ...}`): the new nodes join a copy of the graph, are keyed
and cached like any node, and run; then the expanding node resolves its result links to their values.
Expansion is supported only when the node is called once (no list mapping over its inputs).
"""
from __future__ import annotations

import logging
import math
import time
import traceback
from dataclasses import dataclass, field
from typing import Any, Mapping

from . import context as node_context
# the key format of compute_keys, reused for the keys of nodes added by expansion
from .cache import CachedOutput, NodeInstances, compute_keys
from .context import EventSink, InterruptFlag, NodeContext, NullSink
from .errors import DependencyCycleError, Interrupted
from .registry import NodeRegistry
from .schema import NodeSchema
from .validation import _coerce, is_link, unwrap_constant

log = logging.getLogger(__name__)


class ExecutionBlocker:
    """An output value that blocks its consumers; with a message, the first block is reported."""

    def __init__(self, message: str | None = None) -> None:
        self.message = message


def now_ms() -> int:
    return int(time.time() * 1000)


@dataclass
class ExecutionOutcome:
    status: str  # "success" | "error" | "interrupted"
    outputs: dict[str, dict] = field(default_factory=dict)  # node id -> ui dict
    messages: list[tuple[str, dict]] = field(default_factory=list)
    executed: list[str] = field(default_factory=list)
    cached: list[str] = field(default_factory=list)
    error: dict | None = None
    meta: dict[str, dict] = field(default_factory=dict)
    node_seconds: float = 0.0  # wall time spent inside node functions (the rest is engine overhead)

    @property
    def completed(self) -> bool:
        return self.status == "success"


class _NodeFailed(Exception):
    def __init__(self, node_id: str, error: BaseException, inputs: dict) -> None:
        self.node_id, self.error, self.inputs = node_id, error, inputs


class ExpansionError(ValueError):
    """A node returned an expansion the engine cannot add (duplicate id, unknown class, bad link)."""


class Executor:
    """One per App. Holds the output cache and the V1 node instances between prompts."""

    def __init__(self, registry: NodeRegistry, cache, services: Any = None) -> None:
        self.registry = registry
        self.cache = cache
        self.services = services
        self._instances = NodeInstances()
        # keys of nodes the last prompt's expansions added, kept one more prompt (a changed expander reuses them)
        self._expansion_keys: set = set()
        self.last_run_stats: dict[str, int] = {}

    def reset(self) -> None:
        """Drop cached outputs and node instances (POST /free)."""
        self.cache.clear()
        self._instances.clear()

    # ------------------------------------------------------------------------------------------
    def execute(self, prompt: Mapping[str, dict], prompt_id: str, outputs: list[str],
                constants: Mapping[str, Mapping[str, Any]] | None = None, *,
                links: Mapping[str, Mapping[str, tuple[str, int]]] | None = None,
                order: list[str] | None = None, extra_data: dict | None = None,
                sink: EventSink | None = None, interrupt: InterruptFlag | None = None,
                job_log: logging.Logger | None = None) -> ExecutionOutcome:
        run = _Run(self, prompt, prompt_id, outputs, constants or {}, extra_data or {}, sink or NullSink(),
                   interrupt or InterruptFlag(), job_log or log, links, order)
        return run.go()


class _Run:
    """The state of one prompt's execution."""

    def __init__(self, executor: Executor, prompt, prompt_id, outputs, constants, extra_data, sink, interrupt,
                 job_log, known_links=None, known_order=None) -> None:
        self.x = executor
        self.prompt = prompt  # replaced by a copy when the first expansion adds nodes
        self.original_prompt = prompt
        self.prompt_id = prompt_id
        self.outputs = list(outputs)
        self.constants = constants
        self.extra_data = extra_data
        self.sink = sink
        self.interrupt = interrupt
        self.log = job_log
        self.outcome = ExecutionOutcome("success")
        self.results: dict[str, CachedOutput] = {}
        self.schemas: dict[str, NodeSchema] = {nid: executor.registry.get(n["class_type"]) for nid, n in prompt.items()}
        self.reported_blockers: set[int] = set()
        self.links: dict[str, dict[str, tuple[str, int]]] = {}
        wants = getattr(sink, "wants", None)
        # per-node state snapshots (ComfyUI's progress_state) only when someone listens
        self.node_states: dict[str, dict] | None = {} if wants is not None and wants("progress_state") else None
        self.known_links = known_links or {}
        self.known_order = known_order
        self.expansions: dict[str, tuple] = {}  # expanding node -> (its "result" with links, its ui)
        self.parents: dict[str, str] = {}  # expanded node -> the node that expanded it
        self.expansion_keys: set = set()

    def emit(self, event: str, data: dict) -> None:
        self.outcome.messages.append((event, data))
        self.sink.send(event, data)

    # ---- planning -----------------------------------------------------------------------------
    def _order(self) -> list[str]:
        """Every node reachable from the outputs, each after the nodes it links to (iterative).

        Also parses each reached node's links once: `self.links[node] = {input: (source, index)}`.
        """
        order, state, links = [], {}, self.links
        for root in self.outputs:
            stack = [(root, False)]
            while stack:
                node_id, expanded = stack.pop()
                if expanded:
                    if state.get(node_id) != 2:
                        state[node_id] = 2
                        order.append(node_id)
                    continue
                if state.get(node_id):
                    continue
                state[node_id] = 1
                stack.append((node_id, True))
                node_links = self.known_links.get(node_id)
                if node_links is None:
                    node_links = {name: (value[0], int(value[1])) for name, value in self.prompt[node_id]["inputs"].items()
                                  if is_link(value) and value[0] in self.prompt}
                links[node_id] = node_links
                for source, _ in node_links.values():
                    if not state.get(source):
                        stack.append((source, False))
        return order

    def _node_constants(self, node_id: str) -> dict[str, Any]:
        known = self.constants.get(node_id)
        if known is not None:
            return known
        schema = self.schemas[node_id]
        return {name: unwrap_constant(value) for name, value in self.prompt[node_id]["inputs"].items()
                if not is_link(value) and schema.input(name) is not None}

    def _fingerprints(self, order: list[str]) -> dict[str, Any]:
        fingerprints = {}
        for node_id in order:
            schema = self.schemas[node_id]
            if not schema.has_is_changed:
                continue
            kwargs = dict(self._node_constants(node_id))
            kwargs.update((name, None) for name in self.links[node_id])
            token = node_context.activate(self._context(node_id))
            try:
                fingerprints[node_id] = schema.node_class.IS_CHANGED(**kwargs)
            except Exception:  # a failing fingerprint means "always run", as ComfyUI does
                fingerprints[node_id] = math.nan
            finally:
                node_context.deactivate(token)
        return fingerprints

    # ---- the run ------------------------------------------------------------------------------
    def go(self) -> ExecutionOutcome:
        self.emit("execution_start", {"prompt_id": self.prompt_id, "timestamp": now_ms()})
        if self.known_order is not None and self.known_links:
            order = self.known_order  # validation already walked the graph in dependency order
            self.links = self.known_links
        else:
            order = self._order()
        class_types = {nid: self.prompt[nid]["class_type"] for nid in order}
        constants = {nid: self._node_constants(nid) for nid in order}
        self.constants = constants
        keys = compute_keys(order, class_types, constants, self.links, self._fingerprints(order),
                            lambda nid: self.schemas[nid].not_idempotent, self.x.cache.canonical)
        self.keys = keys
        cache = self.x.cache
        cache.begin_prompt(set(keys.values()).union(self.x._expansion_keys))
        for node_id in order:
            hit = cache.get(keys[node_id])
            if hit is not None:
                self.results[node_id] = hit
                self.outcome.cached.append(node_id)
        self.emit("execution_cached", {"nodes": list(self.outcome.cached), "prompt_id": self.prompt_id,
                                       "timestamp": now_ms()})
        for node_id in self.outcome.cached:
            ui = self.results[node_id].ui
            if ui:
                self.outcome.outputs[node_id] = ui
                self.outcome.meta[node_id] = self._meta(node_id)
                if node_id in self.outputs:
                    self.emit("executed", {"node": node_id, "display_node": node_id, "output": ui,
                                           "prompt_id": self.prompt_id})
        try:
            self._schedule()
        except Interrupted as exc:
            self.outcome.status = "interrupted"
            self.emit("execution_interrupted", {"prompt_id": self.prompt_id, "node_id": self.current,
                                                "node_type": self._class_of(self.current),
                                                "executed": list(self.outcome.executed), "timestamp": now_ms()})
            self.log.info("prompt %s interrupted at node %s: %s", self.prompt_id, self.current, exc)
        except _NodeFailed as failure:
            self._fail(failure.node_id, failure.error, failure.inputs)
        except DependencyCycleError as exc:
            self._fail(exc.node_ids[0], exc, {})
        else:
            self.emit("execution_success", {"prompt_id": self.prompt_id, "timestamp": now_ms()})
        finally:
            self.x._expansion_keys = self.expansion_keys
            self.x.last_run_stats = {"executed": len(self.outcome.executed), "cached": len(self.outcome.cached)}
        return self.outcome

    def _class_of(self, node_id: str | None) -> str | None:
        return self.prompt[node_id]["class_type"] if node_id in self.prompt else None

    def _display(self, node_id: str) -> str:
        """Expanded nodes show as the top-level node that expanded them (ComfyUI's display node)."""
        while node_id in self.parents:
            node_id = self.parents[node_id]
        return node_id

    def _meta(self, node_id: str) -> dict:
        return {"node_id": node_id, "display_node": self._display(node_id), "parent_node": self.parents.get(node_id),
                "real_node_id": node_id}

    def _fail(self, node_id: str, error: BaseException, inputs: dict) -> None:
        self.outcome.status = "error"
        kind = type(error)
        record = {
            "prompt_id": self.prompt_id,
            "node_id": node_id,
            "node_type": self._class_of(node_id),
            "executed": list(self.outcome.executed),
            "exception_message": str(error),
            "exception_type": f"{kind.__module__}.{kind.__qualname__}" if kind.__module__ != "builtins" else kind.__qualname__,
            "traceback": traceback.format_exception(kind, error, error.__traceback__),
            "current_inputs": {name: [v if isinstance(v, (int, float, str, bool, type(None))) else str(v) for v in values]
                               for name, values in inputs.items()},
            "current_outputs": list(self.outcome.cached),
            "timestamp": now_ms(),
        }
        self.outcome.error = record
        self.log.error("node %s (%s) failed: %s", node_id, record["node_type"], error)
        self.emit("execution_error", record)

    def _schedule(self) -> None:
        self.current: str | None = None
        waiting_on: dict[str, set[str]] = {}
        dependents: dict[str, set[str]] = {}
        pending: set[str] = set()
        output_set = set(self.outputs)
        ready_outputs: list[str] = []
        ready_others: list[str] = []

        def need(node_id: str, requester: str | None) -> None:
            added = []
            stack = [(node_id, requester)]
            while stack:
                nid, req = stack.pop()
                if nid in self.results:
                    continue
                if req is not None:
                    waiting_on.setdefault(req, set()).add(nid)
                    dependents.setdefault(nid, set()).add(req)
                if nid in pending:
                    continue
                pending.add(nid)
                added.append(nid)
                schema = self.schemas[nid]
                for name, (source, _) in self.links[nid].items():
                    spec = schema.input(name)
                    if spec is None or not spec.lazy:
                        stack.append((source, nid))
            for nid in added:
                if not waiting_on.get(nid):
                    (ready_outputs if nid in output_set else ready_others).append(nid)

        for output in self.outputs:
            need(output, None)
        while pending:
            if not ready_outputs and not ready_others:
                raise DependencyCycleError(sorted(pending))
            node_id = ready_outputs.pop() if ready_outputs else ready_others.pop()
            self.current = node_id
            requested = self._run_node(node_id)
            if requested:
                for source in requested:
                    need(source, node_id)
                if not waiting_on.get(node_id):
                    ready_others.append(node_id)
                continue
            pending.discard(node_id)
            for dependent in dependents.pop(node_id, ()):
                remaining = waiting_on[dependent]
                remaining.discard(node_id)
                if not remaining:
                    (ready_outputs if dependent in output_set else ready_others).append(dependent)

    # ---- one node -----------------------------------------------------------------------------
    def _resolve(self, node_id: str) -> tuple[dict[str, list], list[str]]:
        """Input lists of a node, and the lazy links that are not evaluated yet."""
        schema = self.schemas[node_id]
        values: dict[str, list] = {name: [value] for name, value in self.constants[node_id].items()}
        unevaluated: list[str] = []
        for name, (source, index) in self.links[node_id].items():
            result = self.results.get(source)
            if result is None:
                unevaluated.append(name)
                values[name] = [None]
            else:
                values[name] = result.values[index]
        for name, kind in schema.hidden.items():
            if kind == "PROMPT":
                values[name] = [self.original_prompt]
            elif kind == "DYNPROMPT":
                values[name] = [self.prompt]
            elif kind == "EXTRA_PNGINFO":
                values[name] = [self.extra_data.get("extra_pnginfo")]
            elif kind == "UNIQUE_ID":
                values[name] = [node_id]
        return values, unevaluated

    def _run_node(self, node_id: str) -> list[str]:
        """Runs a node; returns the producers of lazy inputs it still needs (then it runs again)."""
        if self.interrupt.is_set_for(self.prompt_id):
            raise Interrupted()
        if self.expansions and node_id in self.expansions:
            return self._finish_expansion(node_id)
        schema = self.schemas[node_id]
        inputs, unevaluated = self._resolve(node_id)
        blocker = self._find_blocker(inputs)
        if blocker is not None:
            self._store(node_id, CachedOutput([[blocker] for _ in schema.outputs], None), cache=False)
            if blocker.message and id(blocker) not in self.reported_blockers:
                self.reported_blockers.add(id(blocker))
                self._fail_blocked(node_id, blocker)
            return []
        self._node_state(node_id, "running", 0, 1)
        self.emit("executing", {"node": node_id, "display_node": self._display(node_id) if self.parents else node_id,
                                "prompt_id": self.prompt_id})
        instance = self._instance(node_id, schema)
        token = node_context.activate(self._context(node_id))
        try:
            if schema.has_lazy_check and unevaluated:
                wanted = self._call_lists(instance.check_lazy_status, inputs, schema.input_is_list)
                names = {n for result in wanted for n in (result or ())}
                missing = [n for n in unevaluated if n in names]
                if missing:
                    return [self.links[node_id][n][0] for n in missing]
            started = time.perf_counter()
            try:
                results = self._call_lists(getattr(instance, schema.function), inputs, schema.input_is_list)
            finally:
                self.outcome.node_seconds += time.perf_counter() - started
            if len(results) == 1 and isinstance(results[0], dict) and "expand" in results[0]:
                return self._expand(node_id, schema, results)
            output = self._collect(schema, results)
        except Interrupted:
            raise
        except Exception as exc:
            raise _NodeFailed(node_id, exc, inputs) from exc
        finally:
            node_context.deactivate(token)
        self._finish(node_id, output)
        return []

    def _finish(self, node_id: str, output: CachedOutput) -> None:
        self._store(node_id, output, cache=True)
        self.outcome.executed.append(node_id)
        self._node_state(node_id, "finished")
        if output.ui:
            self._report_ui(node_id, output.ui)

    def _report_ui(self, node_id: str, ui: dict) -> None:
        self.outcome.outputs[node_id] = ui
        self.outcome.meta[node_id] = self._meta(node_id)
        self.emit("executed", {"node": node_id, "display_node": self._display(node_id) if self.parents else node_id,
                               "output": ui, "prompt_id": self.prompt_id})

    # ---- node expansion -----------------------------------------------------------------------
    def _expand(self, node_id: str, schema: NodeSchema, results: list) -> list[str]:
        """Adds a returned expansion to this run; returns the nodes to run before `node_id` resolves."""
        returned = results[0]
        graph, result = returned["expand"], returned.get("result") or ()
        where = f"{schema.name} (node {node_id}) returned an expansion"
        if not isinstance(graph, Mapping):
            raise ExpansionError(f"{where} that is not an object of node id -> node")
        if not isinstance(result, (tuple, list)) or len(result) < len(schema.outputs):
            raise ExpansionError(f"{where} whose result has {len(result) if isinstance(result, (tuple, list)) else 0} "
                                 f"values; RETURN_TYPES declares {len(schema.outputs)}")
        for new_id, node in graph.items():
            if not isinstance(new_id, str) or new_id in self.schemas:
                raise ExpansionError(f"{where} with node id {new_id!r}, which already exists in this prompt: "
                                     "expanded ids must be unique (GraphBuilder(prefix) makes them so)")
            class_type = node.get("class_type") if isinstance(node, dict) else None
            if class_type not in self.x.registry or not isinstance(node.get("inputs", {}), dict):
                raise ExpansionError(f"{where} whose node {new_id!r} has unknown class_type {class_type!r} "
                                     "or inputs that are not an object")
        self.prompt = dict(self.prompt) if self.prompt is self.original_prompt else self.prompt
        for new_id, node in graph.items():
            self.prompt[new_id], self.parents[new_id] = node, node_id
            self.schemas[new_id] = self.x.registry.get(node["class_type"])
        for new_id, node in graph.items():
            self.constants[new_id], self.links[new_id] = self._expanded_inputs(new_id, node.get("inputs") or {}, graph)
        self._key_expansion(graph)
        wait = []
        for slot, entry in enumerate(result[:len(schema.outputs)]):
            if is_link(entry):
                self._check_source(f"{where} whose result {slot}", entry[0], int(entry[1]), graph)
                wait.append(entry[0])
        wait.extend(new_id for new_id in graph if self.schemas[new_id].output_node)
        ui = returned.get("ui")
        ui = {key: value if isinstance(value, list) else [value] for key, value in ui.items()} if ui else None
        self.expansions[node_id] = (tuple(result), ui)
        wait = [nid for nid in dict.fromkeys(wait) if nid not in self.results]
        return wait or self._finish_expansion(node_id)

    def _expanded_inputs(self, node_id: str, inputs: Mapping, graph: Mapping) -> tuple[dict, dict]:
        """Constants (coerced as validation does) and links of an expanded node."""
        schema = self.schemas[node_id]
        constants, links = {}, {}
        for name, value in inputs.items():
            spec = schema.input(name)
            if is_link(value):
                links[name] = (value[0], int(value[1]))
                self._check_source(f"expanded node {node_id!r} ({schema.name}) input {name!r}", *links[name], graph)
            elif spec is not None:
                value = unwrap_constant(value)
                if spec.is_primitive:
                    try:
                        value = _coerce(spec.type, value)
                    except (TypeError, ValueError, OverflowError) as exc:
                        raise ExpansionError(f"expanded node {node_id!r} ({schema.name}) input {name!r}: cannot "
                                             f"convert {value!r} to {spec.type}: {exc}") from exc
                constants[name] = value
        return constants, links

    def _check_source(self, what: str, source: str, index: int, graph: Mapping) -> None:
        if source not in graph and source not in self.links:
            raise ExpansionError(f"{what} links to node {source!r}, which " +
                                 ("this prompt does not run" if source in self.prompt else "does not exist"))
        if not 0 <= index < len(self.schemas[source].outputs):
            raise ExpansionError(f"{what} links to output {index} of node {source!r}, which has fewer outputs")

    def _key_expansion(self, graph: Mapping) -> None:
        """Cache keys of expanded nodes, built like compute_keys' (so equal subgraphs share them); takes hits."""
        order, seen, stack = [], set(), [(root, False) for root in reversed(list(graph))]
        while stack:  # sources before consumers; a cycle is left to the scheduler to report
            nid, done = stack.pop()
            if done or nid in seen:
                order.extend([nid] if done else [])
                continue
            seen.add(nid)
            stack.append((nid, True))
            stack.extend((source, False) for source, _ in self.links[nid].values() if source in graph and source not in seen)
        cache = self.x.cache
        new_keys = compute_keys(order, {nid: self.schemas[nid].name for nid in order}, self.constants, self.links,
                                self._fingerprints(order), lambda nid: self.schemas[nid].not_idempotent,
                                cache.canonical, known=self.keys)
        self.keys.update(new_keys)
        for nid in order:
            schema, key = self.schemas[nid], new_keys[nid]
            self.expansion_keys.add(key)
            hit = cache.get(key)
            if hit is not None:
                self.results[nid] = hit
                self.outcome.cached.append(nid)
                if hit.ui and schema.output_node:
                    self._report_ui(nid, hit.ui)

    def _finish_expansion(self, node_id: str) -> list[str]:
        """The expanding node's outputs: its result, links replaced by the linked outputs' values."""
        result, ui = self.expansions.pop(node_id)
        schema = self.schemas[node_id]
        slots = []
        for slot, entry in enumerate(result[:len(schema.outputs)]):
            if is_link(entry):
                slots.append(self.results[entry[0]].values[int(entry[1])])
            else:
                slots.append(list(entry) if schema.output_is_list[slot] else [entry])
        self._finish(node_id, CachedOutput(slots, ui))
        return []

    def _context(self, node_id: str) -> NodeContext:
        on_progress = (lambda nid, value, total: self._node_state(nid, "running", value, total)) \
            if self.node_states is not None else None
        return NodeContext(self.prompt_id, node_id, self.schemas[node_id].name, self.x.services, self.sink,
                           self.interrupt, self.log, self.extra_data, on_progress)

    def _node_state(self, node_id: str, state: str, value: float | None = None, total: float | None = None) -> None:
        """Send a `progress_state` snapshot of every node this prompt has started."""
        if self.node_states is None:
            return
        entry = self.node_states.get(node_id) or {"value": 0, "max": 1, "state": state, "node_id": node_id,
                                                   "prompt_id": self.prompt_id, "display_node_id": self._display(node_id),
                                                   "parent_node_id": self.parents.get(node_id), "real_node_id": node_id}
        entry["state"] = state
        if total is not None:
            entry["value"], entry["max"] = value, total
        elif state == "finished":
            entry["value"] = entry["max"]
        self.node_states[node_id] = entry
        self.sink.send("progress_state", {"prompt_id": self.prompt_id,
                                          "nodes": {nid: dict(e) for nid, e in self.node_states.items()}})

    def _store(self, node_id: str, output: CachedOutput, cache: bool) -> None:
        self.results[node_id] = output
        if cache:
            self.x.cache.put(self.keys[node_id], output)

    def _fail_blocked(self, node_id: str, blocker: ExecutionBlocker) -> None:
        record = {"prompt_id": self.prompt_id, "node_id": node_id, "node_type": self._class_of(node_id),
                  "executed": list(self.outcome.executed), "exception_message": blocker.message,
                  "exception_type": "ExecutionBlocked", "traceback": [], "current_inputs": {},
                  "current_outputs": [], "timestamp": now_ms()}
        self.emit("execution_error", record)

    @staticmethod
    def _find_blocker(inputs: dict[str, list]) -> ExecutionBlocker | None:
        for values in inputs.values():
            for value in values:
                if isinstance(value, ExecutionBlocker):
                    return value
        return None

    def _instance(self, node_id: str, schema: NodeSchema) -> Any:
        return self.x._instances.get((node_id, schema.name), schema.node_class)

    def _call_lists(self, function, inputs: dict[str, list], input_is_list: bool) -> list:
        if input_is_list:
            return [function(**inputs)]
        length = max((len(v) for v in inputs.values()), default=1)
        if any(len(v) == 0 for v in inputs.values()):
            return []
        results = []
        for index in range(length):
            if index and self.interrupt.is_set_for(self.prompt_id):
                raise Interrupted()
            results.append(function(**{name: v[min(index, len(v) - 1)] for name, v in inputs.items()}))
        return results

    @staticmethod
    def _collect(schema: NodeSchema, results: list) -> CachedOutput:
        slots: list[list] = [[] for _ in schema.outputs]
        ui: dict | None = None
        for result in results:
            if isinstance(result, dict):
                if result.get("ui"):
                    ui = ui or {}
                    for key, value in result["ui"].items():
                        ui.setdefault(key, []).extend(value if isinstance(value, list) else [value])
                if "expand" in result:
                    raise ExpansionError(f"{schema.name}: node expansion is only supported when the node is "
                                         f"called once, but list inputs made it run {len(results)} times")
                result = result.get("result", ())
            if result is None:
                result = ()
            if not isinstance(result, (tuple, list)):
                raise TypeError(f"{schema.name}.{schema.function} returned {type(result).__name__}; "
                                f"expected a tuple of {len(schema.outputs)} outputs")
            if len(result) < len(schema.outputs):
                raise TypeError(f"{schema.name}.{schema.function} returned {len(result)} values; "
                                f"RETURN_TYPES declares {len(schema.outputs)}")
            for slot, value in enumerate(result[:len(schema.outputs)]):
                if schema.output_is_list[slot]:
                    slots[slot].extend(value)
                else:
                    slots[slot].append(value)
        return CachedOutput(slots, ui)
