"""Node expansion: nodes returning {"expand": graph, "result": ...} run their subgraph in the same prompt."""
import pytest

from graph import ClassicCache, Executor, GraphBuilder, InterruptFlag, LRUCache, validate_prompt
from toy_nodes import CALLS, NODE_CLASS_MAPPINGS


class Multiply:
    """x * n by repeated addition: expands into a chain of n-1 Add nodes."""
    RETURN_TYPES = ("INT",)
    FUNCTION = "run"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"x": ("INT",), "n": ("INT", {"default": 2, "min": 1})},
                "hidden": {"unique_id": "UNIQUE_ID"}}

    def run(self, x, n, unique_id):
        CALLS["Multiply"] = CALLS.get("Multiply", 0) + 1
        g = GraphBuilder(f"{unique_id}.0.0.")
        source = g.node("Number", value=x)
        total = source
        for _ in range(n - 1):
            total = g.node("Add", a=total, b=source)
        return {"expand": g.finalize(), "result": (total.out(0),)}


class Repeat:
    """A loop: N copies of Add(+1) that each also feed an Output node (so their UI is reported)."""
    RETURN_TYPES = ("INT", "STRING")
    FUNCTION = "run"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"x": ("INT",), "times": ("INT", {"default": 3})},
                "hidden": {"unique_id": "UNIQUE_ID"}}

    def run(self, x, times, unique_id):
        g = GraphBuilder(f"{unique_id}.0.0.")
        ref = g.node("Number", value=x)
        for _ in range(times):
            ref = g.node("Add", a=ref, b="1")  # a string constant: coerced to INT as validation would
            g.node("Output", value=ref)
        return {"expand": g.finalize(), "result": (ref.out(0), "done"), "ui": {"text": ["looped"]}}


class RawExpand:
    """Expands into whatever graph it is given (for the error cases)."""
    RETURN_TYPES = ("INT",)
    FUNCTION = "run"

    graph, result = {}, (0,)

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"x": ("INT",)}}

    def run(self, x):
        return {"expand": RawExpand.graph, "result": RawExpand.result}


class PerItem:
    """Called once per list item, so its expansion is rejected."""
    RETURN_TYPES = ("INT",)
    FUNCTION = "run"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"x": ("INT",)}}

    def run(self, x):
        return {"expand": {}, "result": (x,)}


class RecordingSink:
    def __init__(self):
        self.events = []

    def send(self, event, data):
        self.events.append((event, data))

    def send_image(self, image, **kw):
        pass


@pytest.fixture
def registry():
    from graph import NodeRegistry
    CALLS.clear()
    registry = NodeRegistry()
    registry.register_mappings({**NODE_CLASS_MAPPINGS, "Multiply": Multiply, "Repeat": Repeat,
                                "RawExpand": RawExpand, "PerItem": PerItem}, python_module="tests.toy_nodes")
    return registry


def run(executor, registry, prompt, **kw):
    result = validate_prompt(prompt, registry)
    assert result.ok, result.node_errors
    return executor.execute(prompt, "p", result.outputs, result.constants, links=result.links,
                            order=result.order, **kw)


def multiply_prompt(x=7, n=4):
    g = GraphBuilder()
    num = g.node("Number", "num", value=x)
    m = g.node("Multiply", "m", x=num, n=n)
    g.node("Output", "out", value=m)
    return g.finalize()


def test_expansion_into_a_chain_computes_the_product(registry):
    prompt = multiply_prompt()
    before = {k: dict(v, inputs=dict(v["inputs"])) for k, v in prompt.items()}
    sink = RecordingSink()
    outcome = run(Executor(registry, ClassicCache()), registry, prompt, sink=sink)
    assert outcome.status == "success"
    assert outcome.outputs["out"] == {"values": [28]}
    assert CALLS["Add"] == 3 and CALLS["Multiply"] == 1
    assert outcome.executed.index("m.0.0.4") < outcome.executed.index("m") < outcome.executed.index("out")
    assert prompt == before  # the caller's prompt is never extended
    shown = {d["node"]: d["display_node"] for e, d in sink.events if e == "executing"}
    assert shown["m.0.0.2"] == "m" and shown["out"] == "out"


def test_identical_second_run_is_cached_without_re_expanding(registry):
    executor = Executor(registry, ClassicCache())
    run(executor, registry, multiply_prompt())
    CALLS.clear()
    outcome = run(executor, registry, multiply_prompt())
    assert outcome.executed == [] and CALLS == {}
    assert outcome.outputs["out"] == {"values": [28]}


@pytest.mark.parametrize("cache", [ClassicCache, lambda: LRUCache(100)])
def test_identical_expansion_under_a_rerun_parent_hits_the_cache(registry, cache):
    executor = Executor(registry, cache())
    run(executor, registry, multiply_prompt(n=4))
    CALLS.clear()
    outcome = run(executor, registry, multiply_prompt(n=5))  # same first 3 additions, one more
    assert outcome.outputs["out"] == {"values": [35]}
    assert CALLS == {"Multiply": 1, "Add": 1, "Output": 1}
    assert {"m.0.0.1", "m.0.0.2", "m.0.0.3", "m.0.0.4"} <= set(outcome.cached)


def test_loop_expansion_reports_output_nodes_and_mixed_result(registry):
    g = GraphBuilder()
    r = g.node("Repeat", "r", x=g.node("Number", "num", value=10), times=3)
    g.node("Output", "out", value=r)
    g.node("Output", "text", value=r.out(1))
    sink = RecordingSink()
    outcome = run(Executor(registry, ClassicCache()), registry, g.finalize(), sink=sink)
    assert outcome.status == "success"
    assert outcome.outputs["out"] == {"values": [13]}
    assert outcome.outputs["text"] == {"values": ["done"]}  # a constant in the result
    assert outcome.outputs["r"] == {"text": ["looped"]}  # the expanding node's own UI
    inner = {nid: ui for nid, ui in outcome.outputs.items() if nid.startswith("r.")}
    assert sorted(v["values"][0] for v in inner.values()) == [11, 12, 13]
    executed = [d for e, d in sink.events if e == "executed" and d["node"].startswith("r.")]
    assert len(executed) == 3 and all(d["display_node"] == "r" for d in executed)
    assert outcome.meta["r.0.0.3"]["parent_node"] == "r"


def raw_prompt():
    g = GraphBuilder()
    x = g.node("RawExpand", "x", x=g.node("Number", "num", value=1))
    g.node("Output", "out", value=x)
    return g.finalize()


@pytest.mark.parametrize("graph, result, message", [
    ({"num": {"class_type": "Number", "inputs": {"value": 1}}}, (["num", 0],), "'num', which already exists"),
    ({"x.1": {"class_type": "NoSuchNode", "inputs": {}}}, (["x.1", 0],), "unknown class_type 'NoSuchNode'"),
    ({"x.1": {"class_type": "Add", "inputs": {"a": ["ghost", 0], "b": 1}}}, (["x.1", 0],), "'ghost', which does not exist"),
    ({"x.1": {"class_type": "Number", "inputs": {"value": "seven"}}}, (["x.1", 0],), "cannot convert 'seven' to INT"),
    ({}, (["x.9", 0],), "'x.9', which does not exist"),
])
def test_bad_expansions_fail_the_expanding_node_clearly(registry, graph, result, message):
    RawExpand.graph, RawExpand.result = graph, result
    outcome = run(Executor(registry, ClassicCache()), registry, raw_prompt())
    assert outcome.status == "error"
    assert outcome.error["node_id"] == "x" and message in outcome.error["exception_message"]


def test_error_inside_an_expanded_node_names_that_node(registry):
    RawExpand.graph = {"x.1": {"class_type": "Fail", "inputs": {"x": ["num", 0]}}}
    RawExpand.result = (["x.1", 0],)
    outcome = run(Executor(registry, ClassicCache()), registry, raw_prompt())
    assert outcome.status == "error"
    assert outcome.error["node_id"] == "x.1" and outcome.error["node_type"] == "Fail"


def test_interrupt_inside_an_expanded_node(registry):
    RawExpand.graph = {"x.1": {"class_type": "Slow", "inputs": {"x": ["num", 0], "steps": 50, "delay": 0.001}}}
    RawExpand.result = (["x.1", 0],)
    flag = InterruptFlag()
    sink = RecordingSink()
    sink.send = lambda event, data: (sink.events.append((event, data)),
                                     event == "executing" and data["node"] == "x.1" and flag.request())
    outcome = run(Executor(registry, ClassicCache()), registry, raw_prompt(), sink=sink, interrupt=flag)
    assert outcome.status == "interrupted"
    interrupted = [d for e, d in sink.events if e == "execution_interrupted"]
    assert interrupted[0]["node_id"] == "x.1"


def test_per_item_expansion_is_rejected(registry):
    g = GraphBuilder()
    p = g.node("PerItem", "p", x=g.node("MakeList", "l", count=3))
    g.node("Output", "out", value=p)
    outcome = run(Executor(registry, ClassicCache()), registry, g.finalize())
    assert outcome.status == "error" and "only supported when the node is called once" in outcome.error["exception_message"]
