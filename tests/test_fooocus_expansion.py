"""Fooocus V2 expansion with a tiny random GPT-2 in Fooocus's folder format.

Oracle: transformers' own ``generate`` (what Fooocus calls) with the same word-filter logits
processor, top_k=100, sampling, after seeding torch's global RNG the way ``set_seed`` does.
"""

import os

import pytest
import torch

from nodes.fooocus.expansion import (
    FooocusExpansion,
    PromptExpander,
    TINY_POSITIVE_WORDS,
    missing_expansion_files,
    write_tiny_expansion_model,
)
from nodes.fooocus.prompt_processing import safe_str

# ~62 tokens with the tiny byte-level vocabulary, so only ~13 tokens are sampled (fast).
PROMPT = "a quiet harbour town at dawn with fishing boats, gulls and old nets"


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    # A 40-wide model is dominated by thread hand-off on a shared 2-core machine.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return write_tiny_expansion_model(tmp_path_factory.mktemp("fooocus_expansion"))


@pytest.fixture(scope="module")
def expander(model_dir):
    return PromptExpander.load(model_dir)


def _sampled_count(expander, prompt):
    return 75 - len(expander.tokenizer(safe_str(prompt) + ",").input_ids)


def test_folder_format(model_dir):
    files = set(os.listdir(model_dir))
    assert {"config.json", "model.safetensors", "tokenizer.json", "vocab.json", "merges.txt", "positive.txt"} <= files
    assert missing_expansion_files(model_dir) == []
    words = (model_dir / "positive.txt").read_text().split()
    assert words == list(TINY_POSITIVE_WORDS)


def test_matches_transformers_generate(expander):
    from transformers import LogitsProcessorList

    new_tokens = _sampled_count(expander, PROMPT)
    assert 5 <= new_tokens <= 30
    inputs = expander.tokenizer(safe_str(PROMPT) + ",", return_tensors="pt")
    for seed in (3, 12345):
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            ids = expander.model.generate(
                **inputs, top_k=100, max_new_tokens=new_tokens, do_sample=True,
                logits_processor=LogitsProcessorList([expander.process_logits]),
            )[0]
        assert len(ids) == 75  # fixed length: EOS is never allowed
        reference = safe_str(expander.tokenizer.decode(ids, skip_special_tokens=True))
        assert expander.expand(PROMPT, seed) == reference

        generated = ids[inputs.input_ids.shape[1]:].tolist()
        allowed = set(expander.allowed_token_ids)
        assert all(t in allowed or t == expander.comma_id for t in generated)
        words = [t for t in generated if t != expander.comma_id]
        assert len(words) == len(set(words))  # no word twice
        assert not set(words) & set(inputs.input_ids[0].tolist())


def test_deterministic_per_seed_and_filtered(expander):
    a = expander.expand(PROMPT, 7)
    torch.manual_seed(999)  # the global RNG plays no part
    assert expander.expand(PROMPT, 7) == a
    assert expander.expand(PROMPT, 7 + 2**32) == a  # seeds wrap at 2^32 like Fooocus
    b = expander.expand(PROMPT, 8)
    assert a != b
    for text in (a, b):
        assert text.startswith(PROMPT + ",")
        added = text[len(PROMPT) + 1:].replace(",", " ").split()
        assert added and set(added) <= set(TINY_POSITIVE_WORDS)


def test_length_rule_and_empty_prompt(expander):
    assert expander.expand("", 1) == ""
    # A prompt that already fills its 75-token chunk comes back unchanged (trailing comma removed).
    prompt = "x" * 74  # 74 byte tokens + "," = 75
    assert _sampled_count(expander, prompt) == 0
    assert expander.expand(prompt + " ,", 1) == prompt


def test_pytorch_model_bin_folder(tmp_path, expander):
    folder = write_tiny_expansion_model(tmp_path / "bin", weights="bin")
    assert (folder / "pytorch_model.bin").is_file() and not (folder / "model.safetensors").exists()
    from_bin = PromptExpander.load(folder)
    assert from_bin.expand(PROMPT, 5) == expander.expand(PROMPT, 5)  # same init seed -> same weights


def test_missing_files_leave_prompt_unchanged(tmp_path, model_dir):
    expansion = FooocusExpansion.from_folder(tmp_path / "nowhere")
    assert not expansion.available
    result = expansion.expand("a red fox", 1)
    assert (result.text, result.expanded) == ("a red fox", False)
    assert "missing" in result.message and "config.json" in result.message

    partial = tmp_path / "partial"
    partial.mkdir()
    (partial / "config.json").write_text((model_dir / "config.json").read_text())
    assert set(missing_expansion_files(partial)) == {
        "positive.txt", "model.safetensors or pytorch_model.bin", "tokenizer.json or vocab.json + merges.txt"}
    assert not FooocusExpansion.from_folder(partial).expand("x", 0).expanded

    working = FooocusExpansion.from_folder(model_dir).expand(PROMPT, 7)
    assert working.expanded and working.message is None and working.text != PROMPT
