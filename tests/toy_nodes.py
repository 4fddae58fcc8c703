"""Torch-free nodes for engine and server tests. Each counts its calls so tests can see cache hits."""
from __future__ import annotations

import time

from graph import context as graph_context
from graph.errors import Interrupted

CALLS: dict[str, int] = {}


def _count(name: str) -> None:
    CALLS[name] = CALLS.get(name, 0) + 1


class Number:
    RETURN_TYPES = ("INT",)
    FUNCTION = "run"
    CATEGORY = "test"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"value": ("INT", {"default": 0, "min": -1000, "max": 1000})}}

    def run(self, value):
        _count("Number")
        return (value,)


class Add:
    RETURN_TYPES = ("INT",)
    RETURN_NAMES = ("sum",)
    FUNCTION = "run"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"a": ("INT",), "b": ("INT", {"default": 0})}}

    def run(self, a, b):
        _count("Add")
        return (a + b,)


class Scale:
    RETURN_TYPES = ("FLOAT",)
    FUNCTION = "run"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"x": ("INT",), "factor": ("FLOAT", {"default": 1.0, "min": 0.0, "max": 10.0})},
                "optional": {"mode": (["mul", "div"],)}}

    def run(self, x, factor, mode="mul"):
        _count("Scale")
        return (x * factor if mode == "mul" else x / factor,)


class Output:
    RETURN_TYPES = ()
    FUNCTION = "run"
    OUTPUT_NODE = True

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"value": ("*",)}}

    def run(self, value):
        _count("Output")
        return {"ui": {"values": [value]}}


class Fail:
    RETURN_TYPES = ("INT",)
    FUNCTION = "run"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"x": ("INT",)}}

    def run(self, x):
        raise ValueError(f"boom {x}")


class Slow:
    """Takes `steps` steps, reporting progress and honouring interrupts between them."""
    RETURN_TYPES = ("INT",)
    FUNCTION = "run"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"x": ("INT",), "steps": ("INT", {"default": 5, "min": 1, "max": 1000}),
                             "delay": ("FLOAT", {"default": 0.01, "min": 0.0, "max": 5.0})},
                "optional": {"preview": ("BOOLEAN", {"default": False})}}

    def run(self, x, steps, delay, preview=False):
        context = graph_context.current()
        for step in range(steps):
            time.sleep(delay)
            context.progress(step + 1, steps, _step_image(step) if preview else None)
        return (x,)


def _step_image(step: int):
    """A 4x4 step preview (what a sampler hands to progress)."""
    from PIL import Image

    return Image.new("RGB", (4, 4), (step * 10 % 255, 0, 0))


class Always:
    """Re-runs every time (IS_CHANGED returns NaN)."""
    RETURN_TYPES = ("INT",)
    FUNCTION = "run"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"x": ("INT",)}}

    @classmethod
    def IS_CHANGED(cls, **kwargs):
        return float("nan")

    def run(self, x):
        _count("Always")
        return (x,)


class Switch:
    """Lazy: evaluates only the branch it picks."""
    RETURN_TYPES = ("INT",)
    FUNCTION = "run"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"pick_a": ("BOOLEAN", {"default": True}),
                             "a": ("INT", {"lazy": True}), "b": ("INT", {"lazy": True})}}

    def check_lazy_status(self, pick_a, a=None, b=None):
        return ["a"] if pick_a else ["b"]

    def run(self, pick_a, a=None, b=None):
        _count("Switch")
        return (a if pick_a else b,)


class MakeList:
    RETURN_TYPES = ("INT",)
    OUTPUT_IS_LIST = (True,)
    FUNCTION = "run"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"count": ("INT", {"default": 3, "min": 0, "max": 100})}}

    def run(self, count):
        return (list(range(count)),)


class SumList:
    RETURN_TYPES = ("INT",)
    INPUT_IS_LIST = True
    FUNCTION = "run"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"values": ("INT",)}}

    def run(self, values):
        return (sum(values),)


class Even:
    """Custom validation: only even numbers."""
    RETURN_TYPES = ("INT",)
    FUNCTION = "run"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"x": ("INT",)}}

    @classmethod
    def VALIDATE_INPUTS(cls, x):
        return True if x is None or x % 2 == 0 else f"{x} is odd"

    def run(self, x):
        return (x,)


class Broken:
    """VALIDATE_INPUTS raises."""
    RETURN_TYPES = ("INT",)
    FUNCTION = "run"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"x": ("INT",)}}

    @classmethod
    def VALIDATE_INPUTS(cls, x):
        raise RuntimeError("validator crashed")

    def run(self, x):
        return (x,)


class Text:
    RETURN_TYPES = ("STRING",)
    FUNCTION = "run"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"text": ("STRING", {"default": ""})}}

    def run(self, text):
        return (text,)


NODE_CLASS_MAPPINGS = {cls.__name__: cls for cls in (Number, Add, Scale, Output, Fail, Slow, Always, Switch,
                                                     MakeList, SumList, Even, Broken, Text)}


def make_registry():
    from graph import NodeRegistry
    registry = NodeRegistry()
    registry.register_mappings(NODE_CLASS_MAPPINGS, python_module="tests.toy_nodes")
    return registry
