"""Fooocus prompt processing: lines, wildcards, arrays, inline LoRAs, seeds and per-image tasks.

Expected values are computed by hand from the spec (7.1-7.3), replaying the seeded
``random.Random`` draws in the order Fooocus makes them.
"""

import random

import pytest

from nodes.fooocus.prompt_processing import (
    MAX_SEED,
    PromptRequest,
    build_tasks,
    cleanup_prompt,
    extract_inline_loras,
    resolve_seed,
    safe_str,
    split_prompt_lines,
    task_seed,
)
from nodes.fooocus.styles import RANDOM_STYLE, StyleLibrary, UnknownStylesError
from nodes.fooocus.wildcards import WildcardLibrary, apply_arrays

COLORS = ["red", "green", "blue", "amber"]
ANIMALS = ["cat", "dog", "owl"]


@pytest.fixture(scope="module")
def styles():
    return StyleLibrary.load()


@pytest.fixture()
def wildcards(tmp_path):
    (tmp_path / "color.txt").write_text("\n".join(COLORS) + "\n\n")  # blank lines are ignored
    nested = tmp_path / "nested" / "deeper"
    nested.mkdir(parents=True)
    (nested / "animal.txt").write_text("\n".join(ANIMALS))
    (tmp_path / "pet.txt").write_text("__color__ __animal__\n")  # a wildcard made of wildcards
    (tmp_path / "empty.txt").write_text("\n\n")
    return WildcardLibrary.load([tmp_path], include_builtin=False)


def test_safe_str_and_lines():
    assert safe_str("  a  cat,   on a mat.. \r\n") == "a cat, on a mat"
    main, extra = split_prompt_lines("first line,\n\n  second  line.\n,,\nthird")
    assert (main, extra) == ("first line", ["second line", "third"])
    assert split_prompt_lines("") == ("", [])
    assert split_prompt_lines("\n\n") == ("", [])


def test_wildcards_random_follow_the_seeded_rng(wildcards):
    for seed in (0, 1, 42):
        rng = random.Random(seed)
        out = wildcards.apply("a __color__ and a __color__ __animal__", rng, index=0)
        ref = random.Random(seed)
        c1, c2, a = ref.choice(COLORS), ref.choice(COLORS), ref.choice(ANIMALS)
        assert out == f"a {c1} and a {c2} {a}"
        assert wildcards.apply("a __color__ and a __color__ __animal__", random.Random(seed), 0) == out
    outs = {wildcards.apply("__color__ __animal__", random.Random(s), 0) for s in range(20)}
    assert len(outs) > 3


def test_wildcards_in_order_use_the_image_index(wildcards):
    rng = random.Random(0)
    got = [wildcards.apply("__color__/__animal__/__color__", rng, i, in_order=True) for i in range(5)]
    assert got == ["red/cat/red", "green/dog/green", "blue/owl/blue", "amber/cat/amber", "red/dog/red"]
    assert rng.random() == random.Random(0).random()  # in-order mode draws nothing


def test_nested_wildcards_and_missing_files(wildcards):
    ref = random.Random(7)
    ref.choice(["__color__ __animal__"])  # pass 1 draws the (only) pet line: still one draw
    expected = f"{ref.choice(COLORS)} {ref.choice(ANIMALS)}"  # pass 2 fills it
    assert wildcards.apply("__pet__", random.Random(7), 0) == expected
    assert wildcards.apply("x __nothing__ y __nothing__, __empty__", random.Random(0), 0) == "x nothing y nothing, empty"


def test_builtin_wildcards_exist():
    lib = WildcardLibrary.load()
    for name in ("animal", "artist", "color", "color_flower", "extended-color", "flower", "nationality"):
        assert lib.words(name), name
    out = lib.apply("__color_flower__", random.Random(3), 0)
    color, flower = out.split(" ", 1)
    assert color in lib.words("color") and flower in lib.words("flower")


def test_arrays_step_per_image_first_array_fastest():
    text = "[[a,b]] x [[1,2,3]]"
    got = [apply_arrays(text, i) for i in range(7)]
    assert got == ["a x 1", "b x 1", "a x 2", "b x 2", "a x 3", "b x 3", "a x 1"]
    assert apply_arrays("[[ cat, dog]]", 1) == " dog"  # elements are not stripped
    assert apply_arrays("no arrays", 5) == "no arrays"


def test_inline_loras_parsed_and_removed():
    files = ["sub/detail.safetensors", "style_b.safetensors", "other.safetensors"]
    loras, prompt = extract_inline_loras(
        "a cat <lora:detail:0.7>, sunset,<lora:missing:1>  <lora:style_b:-1.5>,, blue",
        [("other.safetensors", 0.5)],
        lora_filenames=files,
    )
    assert prompt == "a cat, sunset, blue"
    assert loras == [("other.safetensors", 0.5), ("sub/detail.safetensors", 0.7), ("style_b.safetensors", -1.5)]
    # Already selected in the UI (by file name) or repeated -> not added twice.
    loras, _ = extract_inline_loras("<lora:other:1>, <lora:detail:.5>, <lora:detail:.5>", [("other.safetensors", 0.5)], lora_filenames=files)
    assert loras == [("other.safetensors", 0.5), ("sub/detail.safetensors", 0.5)]
    # Capped at the LoRA limit when something was added.
    five = [(f"u{i}.safetensors", 1.0) for i in range(5)]
    loras, _ = extract_inline_loras("<lora:detail:1>", five, lora_filenames=files)
    assert loras == five
    # No tag: LoRAs unchanged, prompt still comma-normalised.
    assert extract_inline_loras("a,b  ,c", [], lora_filenames=files) == ([], "a, b, c")
    assert cleanup_prompt(" a ,, b,") == "a, b"


def test_seeds():
    assert task_seed(10, 3) == 13
    assert task_seed(10, 3, disable_seed_increment=True) == 10
    assert task_seed(MAX_SEED, 1) == 0
    assert resolve_seed(123) == 123
    rng = random.Random(5)
    assert resolve_seed(-1, rng) == random.Random(5).randint(0, MAX_SEED)
    assert 0 <= resolve_seed(2**63) <= MAX_SEED


def test_build_tasks_full_order(styles, wildcards):
    request = PromptRequest(
        prompt="a __color__ [[fox,wolf]] <lora:detail:0.6>\nextra __animal__\n\n",
        negative_prompt="blurry __color__\nneg two",
        style_selections=("Fooocus V2", "SAI Anime", RANDOM_STYLE, "Fooocus Enhance"),
        loras=(("user.safetensors", 0.3),),
    )
    tasks = build_tasks(
        request, 3, 100, styles=styles, wildcards=wildcards,
        lora_filenames=["detail.safetensors", "user.safetensors"],
        performance_lora=("sdxl_lcm_lora.safetensors", 1.0),
    )
    assert [t.seed for t in tasks] == [100, 101, 102]
    names = styles.style_names()
    for i, task in enumerate(tasks):
        rng = random.Random(100 + i)
        color = rng.choice(COLORS)
        # The inline-LoRA pass comma-normalises the line first, so "[[fox,wolf]]" becomes
        # "[[fox, wolf]]" and the second element keeps its leading space (as in Fooocus).
        prompt = f"a {color} {['fox', ' wolf'][i % 2]}"
        negative = f"blurry {rng.choice(COLORS)}"
        extra = f"extra {rng.choice(ANIMALS)}"
        random_style = rng.choice(names)  # drawn after the wildcards, from the same rng
        assert task.prompt == prompt and task.negative_prompt == negative
        assert task.styles == ("SAI Anime", random_style, "Fooocus Enhance")
        pos, neg = styles.apply_many(["SAI Anime", random_style, "Fooocus Enhance"], prompt)
        assert task.positive == tuple(pos + [extra])
        assert task.negative == tuple(x for x in neg + [negative, "neg two"] if x)
        assert task.use_expansion
        assert task.positive_pool_count == len(task.positive)
        assert task.loras == (("user.safetensors", 0.3), ("detail.safetensors", 0.6), ("sdxl_lcm_lora.safetensors", 1.0))
        assert task.log_styles[0] == "Fooocus V2"
    expanded = tasks[0].with_expansion("a red fox, vivid")
    assert expanded.positive[-1] == "a red fox, vivid"
    assert expanded.positive_pool_count == len(expanded.positive) - 1  # expansion adds no pooled output


def test_build_tasks_without_styles_or_prompt(styles, wildcards):
    tasks = build_tasks(PromptRequest(prompt="", negative_prompt="", style_selections=("Fooocus V2",)),
                        2, 5, styles=styles, wildcards=wildcards)
    assert [t.seed for t in tasks] == [5, 6]
    assert all(not t.use_expansion for t in tasks)  # empty prompt: no expansion
    assert tasks[0].positive == ("",) and tasks[0].negative == ("",)
    tasks = build_tasks(PromptRequest(prompt="cat\ndog", disable_seed_increment=True),
                        2, 9, styles=styles, wildcards=wildcards)
    assert [t.seed for t in tasks] == [9, 9]
    assert tasks[1].positive == ("cat", "dog") and not tasks[1].use_expansion


def test_inline_tag_cannot_pick_the_performance_lora(styles, wildcards):
    tasks = build_tasks(
        PromptRequest(prompt="x <lora:sdxl_lcm_lora:0.5>"), 1, 0, styles=styles, wildcards=wildcards,
        lora_filenames=["sdxl_lcm_lora.safetensors"], performance_lora=("sdxl_lcm_lora.safetensors", 1.0),
    )
    assert tasks[0].loras == (("sdxl_lcm_lora.safetensors", 1.0),)
    assert tasks[0].prompt == "x"


def test_build_tasks_rejects_unknown_styles(styles, wildcards):
    with pytest.raises(UnknownStylesError) as err:
        build_tasks(PromptRequest(prompt="x", style_selections=("Bogus", "SAI Anime")), 1, 0,
                    styles=styles, wildcards=wildcards)
    assert err.value.unknown == ["Bogus"]


def test_read_wildcards_in_order_through_tasks(styles, wildcards):
    tasks = build_tasks(PromptRequest(prompt="__animal__", read_wildcards_in_order=True), 4, 77,
                        styles=styles, wildcards=wildcards)
    assert [t.prompt for t in tasks] == ["cat", "dog", "owl", "cat"]
