"""Executor: order, caching (classic and LRU), IS_CHANGED, lazy and list inputs, errors, interrupts."""
import threading

import pytest

from graph import ClassicCache, Executor, GraphBuilder, InterruptFlag, LRUCache, validate_prompt
from graph.executor import ExecutionBlocker
from toy_nodes import CALLS, make_registry


class RecordingSink:
    def __init__(self):
        self.events = []

    def send(self, event, data):
        self.events.append((event, data))

    def send_image(self, image, **kw):
        self.events.append(("image", kw))

    def types(self):
        return [e for e, _ in self.events]


@pytest.fixture
def registry():
    CALLS.clear()
    return make_registry()


def run(executor, registry, prompt, prompt_id="p", **kw):
    result = validate_prompt(prompt, registry)
    assert result.ok, result.node_errors
    return executor.execute(prompt, prompt_id, result.outputs, result.constants, links=result.links,
                            order=result.order, **kw)


def chain(value=1, factor=2.0):
    g = GraphBuilder()
    n = g.node("Number", "n", value=value)
    a = g.node("Add", "a", a=n, b=10)
    s = g.node("Scale", "s", x=a, factor=factor)
    g.node("Output", "out", value=s)
    return g.finalize()


def test_runs_in_dependency_order_and_reports_ui(registry):
    executor = Executor(registry, ClassicCache())
    sink = RecordingSink()
    outcome = run(executor, registry, chain(), sink=sink)
    assert outcome.status == "success"
    assert outcome.executed == ["n", "a", "s", "out"]
    assert outcome.outputs == {"out": {"values": [22.0]}}
    executing = [d["node"] for e, d in sink.events if e == "executing"]
    assert executing == ["n", "a", "s", "out"]
    assert sink.types()[0] == "execution_start" and sink.types()[1] == "execution_cached"
    assert sink.types()[-1] == "execution_success"


def test_changed_constant_reruns_only_descendants(registry):
    executor = Executor(registry, ClassicCache())
    run(executor, registry, chain(factor=2.0))
    CALLS.clear()
    outcome = run(executor, registry, chain(factor=3.0))
    assert set(outcome.cached) == {"n", "a"}
    assert outcome.executed == ["s", "out"]
    assert CALLS == {"Scale": 1, "Output": 1}
    assert outcome.outputs["out"] == {"values": [33.0]}


def test_identical_prompt_is_fully_cached(registry):
    executor = Executor(registry, ClassicCache())
    run(executor, registry, chain())
    CALLS.clear()
    sink = RecordingSink()
    outcome = run(executor, registry, chain(), sink=sink)
    assert outcome.executed == [] and CALLS == {}
    assert outcome.outputs == {"out": {"values": [22.0]}}  # cached UI is still reported
    assert ("executed" in sink.types())


def test_identical_subgraphs_under_other_ids_share_results(registry):
    executor = Executor(registry, ClassicCache())
    run(executor, registry, chain())
    renamed = {f"x{k}": {"class_type": v["class_type"],
                         "inputs": {n: ([f"x{i[0]}", i[1]] if isinstance(i, list) else i) for n, i in v["inputs"].items()}}
               for k, v in chain().items()}
    CALLS.clear()
    outcome = run(executor, registry, renamed)
    assert outcome.executed == [] and CALLS == {}


def test_classic_cache_drops_entries_the_new_prompt_lacks(registry):
    executor = Executor(registry, ClassicCache())
    run(executor, registry, chain(value=1))
    run(executor, registry, chain(value=2))
    CALLS.clear()
    outcome = run(executor, registry, chain(value=1))
    assert outcome.cached == []


def test_lru_cache_survives_workflow_switches(registry):
    executor = Executor(registry, LRUCache(100))
    run(executor, registry, chain(value=1))
    run(executor, registry, chain(value=2))
    CALLS.clear()
    outcome = run(executor, registry, chain(value=1))
    assert outcome.executed == [] and CALLS == {}


def test_lru_cache_is_bounded(registry):
    cache = LRUCache(4)
    executor = Executor(registry, cache)
    for value in range(5):
        run(executor, registry, chain(value=value))
    assert len(cache) == 4


def test_is_changed_nan_always_reruns(registry):
    g = GraphBuilder()
    n = g.node("Number", value=1)
    g.node("Output", value=g.node("Always", x=n))
    prompt = g.finalize()
    executor = Executor(registry, ClassicCache())
    run(executor, registry, prompt)
    CALLS.clear()
    outcome = run(executor, registry, prompt)
    assert CALLS.get("Always") == 1 and CALLS.get("Number") is None


def test_lazy_inputs_only_evaluate_the_requested_branch(registry):
    g = GraphBuilder()
    a = g.node("Number", "a", value=1)
    b = g.node("Fail", "b", x=a)  # would fail if evaluated
    sw = g.node("Switch", "sw", pick_a=True, a=a, b=b)
    g.node("Output", "out", value=sw)
    executor = Executor(registry, ClassicCache())
    outcome = run(executor, registry, g.finalize())
    assert outcome.status == "success" and "b" not in outcome.executed
    assert outcome.outputs["out"] == {"values": [1]}


def test_lazy_input_pulls_its_producer_in_when_asked(registry):
    g = GraphBuilder()
    a = g.node("Number", "a", value=1)
    b = g.node("Add", "b", a=a, b=5)
    sw = g.node("Switch", "sw", pick_a=False, a=a, b=b)
    g.node("Output", "out", value=sw)
    outcome = run(Executor(registry, ClassicCache()), registry, g.finalize())
    assert outcome.outputs["out"] == {"values": [6]} and "b" in outcome.executed


def test_list_outputs_fan_out_and_list_inputs_gather(registry):
    g = GraphBuilder()
    lst = g.node("MakeList", "l", count=4)
    added = g.node("Add", "add", a=lst, b=100)  # called once per item
    g.node("Output", "each", value=added)
    g.node("Output", "sum", value=g.node("SumList", "s", values=added))
    outcome = run(Executor(registry, ClassicCache()), registry, g.finalize())
    assert outcome.outputs["each"] == {"values": [100, 101, 102, 103]}
    assert outcome.outputs["sum"] == {"values": [406]}
    assert CALLS["Add"] == 4


def test_node_exception_becomes_execution_error_and_executor_survives(registry):
    g = GraphBuilder()
    n = g.node("Number", "n", value=3)
    g.node("Output", "out", value=g.node("Fail", "f", x=n))
    executor = Executor(registry, ClassicCache())
    sink = RecordingSink()
    outcome = run(executor, registry, g.finalize(), prompt_id="bad", sink=sink)
    assert outcome.status == "error"
    error = outcome.error
    assert error["node_id"] == "f" and error["node_type"] == "Fail"
    assert error["exception_message"] == "boom 3" and error["exception_type"] == "ValueError"
    assert error["executed"] == ["n"] and error["current_inputs"] == {"x": [3]}
    assert error["prompt_id"] == "bad" and isinstance(error["traceback"], list)
    assert sink.types()[-1] == "execution_error"
    assert run(executor, registry, chain()).status == "success"


def test_interrupt_between_nodes_and_inside_a_node(registry):
    g = GraphBuilder()
    n = g.node("Number", "n", value=1)
    g.node("Output", "out", value=g.node("Slow", "slow", x=n, steps=200, delay=0.05))  # 10 s unless stopped
    prompt = g.finalize()
    flag = InterruptFlag()
    sink = RecordingSink()
    executor = Executor(registry, ClassicCache())
    # asked to stop from another thread once the node reports its first step (not after a fixed time)
    first_step = threading.Event()
    record = sink.send
    sink.send = lambda event, data: (record(event, data), event == "progress" and first_step.set())
    stopper = threading.Thread(target=lambda: first_step.wait(60) and flag.request())
    stopper.start()
    outcome = run(executor, registry, prompt, interrupt=flag, sink=sink)
    stopper.join()
    assert outcome.status == "interrupted"
    assert sink.types()[-1] == "execution_interrupted"
    assert sink.events[-1][1]["node_id"] == "slow"
    progress = [d for e, d in sink.events if e == "progress"]
    assert 0 < len(progress) < 200 and progress[0]["max"] == 200 and progress[0]["node"] == "slow"
    # an interrupt aimed at another prompt id does not stop this one
    flag.clear()
    flag.request("someone-else")
    prompt["slow"]["inputs"]["steps"] = 3
    assert run(executor, registry, prompt, interrupt=flag).status == "success"


def test_interrupt_before_first_node(registry):
    flag = InterruptFlag()
    flag.request()
    outcome = run(Executor(registry, ClassicCache()), registry, chain(), interrupt=flag)
    assert outcome.status == "interrupted" and outcome.executed == []


def test_execution_blocker_skips_consumers(registry):
    class Block:
        RETURN_TYPES = ("INT",)
        FUNCTION = "run"

        @classmethod
        def INPUT_TYPES(cls):
            return {"required": {}}

        def run(self):
            return (ExecutionBlocker("blocked on purpose"),)

    registry.register("Block", Block)
    g = GraphBuilder()
    g.node("Output", "out", value=g.node("Add", "add", a=g.node("Block", "b"), b=1))
    sink = RecordingSink()
    outcome = run(Executor(registry, ClassicCache()), registry, g.finalize(), sink=sink)
    errors = [d for e, d in sink.events if e == "execution_error"]
    assert errors and errors[0]["exception_type"] == "ExecutionBlocked"
    assert "add" not in outcome.executed and CALLS.get("Add") is None


def test_bad_return_value_is_reported(registry):
    class Wrong:
        RETURN_TYPES = ("INT",)
        FUNCTION = "run"

        @classmethod
        def INPUT_TYPES(cls):
            return {"required": {}}

        def run(self):
            return 5

    registry.register("Wrong", Wrong)
    g = GraphBuilder()
    g.node("Output", value=g.node("Wrong"))
    outcome = run(Executor(registry, ClassicCache()), registry, g.finalize())
    assert outcome.status == "error" and "expected a tuple" in outcome.error["exception_message"]
