"""Engine overhead: a 1000-node graph of trivial nodes, executed, then re-run fully cached.

Prints microseconds per node for validation (paid once per submission), for a run that
executes every node, and for a re-run where every node is a cache hit. Targets on the 2-core CI machine: < 50 us executed, < 5 us cached.
Run: .venv/bin/python bench/graph_exec.py
"""
from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from graph import ClassicCache, Executor, GraphBuilder, validate_prompt  # noqa: E402
from toy_nodes import make_registry  # noqa: E402


def build(nodes: int, seed: int) -> dict:
    """A wide-and-deep graph: 10 chains of Add nodes, summed pairwise into one output."""
    g = GraphBuilder()
    chains = 10
    tips = []
    for c in range(chains):
        ref = g.node("Number", value=(seed + c) % 1000)
        for _ in range(nodes // chains - 2):
            ref = g.node("Add", a=ref, b=1)
        tips.append(ref)
    while len(tips) > 1:
        tips = [g.node("Add", a=tips[i], b=tips[i + 1]) if i + 1 < len(tips) else tips[i]
                for i in range(0, len(tips), 2)]
    g.node("Output", value=tips[0])
    return g.finalize()


def measure(repeats: int = 7, nodes: int = 1000) -> dict:
    registry = make_registry()
    validate, executed, cached = [], [], []
    for r in range(repeats):
        prompt = build(nodes, r)
        executor = Executor(registry, ClassicCache())
        count = len(prompt)
        start = time.perf_counter()
        result = validate_prompt(prompt, registry)
        validate.append((time.perf_counter() - start) / count * 1e6)
        start = time.perf_counter()
        outcome = executor.execute(prompt, "p", result.outputs, result.constants, links=result.links,
                                   order=result.order)
        executed.append((time.perf_counter() - start) / count * 1e6)
        assert len(outcome.executed) == count
        start = time.perf_counter()
        outcome = executor.execute(prompt, "p2", result.outputs, result.constants, links=result.links,
                                   order=result.order)
        cached.append((time.perf_counter() - start) / count * 1e6)
        assert not outcome.executed
    return {"nodes": count, "validate_us": statistics.median(validate),
            "executed_us": statistics.median(executed), "cached_us": statistics.median(cached)}


if __name__ == "__main__":
    stats = measure()
    print("| graph nodes | us per node: validation | us per executed node | us per cached node |")
    print("|---|---|---|---|")
    print(f"| {stats['nodes']} | {stats['validate_us']:.1f} | {stats['executed_us']:.1f} | {stats['cached_us']:.1f} |")
