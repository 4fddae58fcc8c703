"""Long prompts through POST /v1/generation/text-to-image (issue 15): a prompt longer than the
expansion model's context, and one just over the tiny model's, both finish; the status says what
the expansion did. The text encoders' chunking itself is tested in test_clip_chunking.py."""
import random

import pytest
import torch

from nodes.fooocus.expansion import FooocusExpansion, PromptExpander, write_tiny_expansion_model
from nodes.fooocus.prompt_processing import safe_str
from test_fooocus_t2i import T2I, make_app, models_dir, post, tiny, wait_for  # noqa: F401 (fixture)

WORDS = ("red", "fox", "forest", "morning", "light", "river", "stone", "bridge", "old", "tree",
         "mist", "quiet", "painting", "sky", "cloud", "field", "golden", "grass", "path", "hill")


def long_prompt(words: int, seed: int = 0) -> str:
    rng = random.Random(seed)
    return " ".join(rng.choice(WORDS) for _ in range(words))


async def run_job(aiohttp_client, models_dir, tmp_path, prompt: str) -> dict:
    app, _ = make_app(models_dir, tmp_path)
    client = await aiohttp_client(app.make_web_app())
    body = tiny({"prompt": prompt, "image_seed": 7, "async_process": True,
                 "style_selections": ["Fooocus V2"]}, steps=1)
    response = await post(client, T2I, body)
    assert response.status == 200, await response.text()
    return await wait_for(client, (await response.json())["job_id"], timeout=300)


async def test_20000_word_prompt_succeeds_and_status_says_expansion_read_its_end(aiohttp_client, models_dir, tmp_path):
    final = await run_job(aiohttp_client, models_dir, tmp_path, long_prompt(20000))
    assert final["job_stage"] == "SUCCESS", final
    assert [r["finish_reason"] for r in final["job_result"]] == ["SUCCESS"]
    assert final["job_result"][0]["seed"] == "7"
    assert "expansion read only the last" in final["job_status"], final["job_status"]


async def test_300_word_prompt_succeeds(aiohttp_client, models_dir, tmp_path):
    final = await run_job(aiohttp_client, models_dir, tmp_path, long_prompt(300, seed=1))
    assert final["job_stage"] == "SUCCESS", final
    assert [(r["seed"], r["finish_reason"]) for r in final["job_result"]] == [("7", "SUCCESS")]
    # ~1,500 tokens for the tiny byte-level GPT-2 (256 positions); the real one (1024) reads it all
    assert "expansion read only the last" in final["job_status"], final["job_status"]


# ---------------------------------------------------------------------------------------------
# The expansion on a prompt longer than its model's context (tiny GPT-2: 256 positions)

@pytest.fixture(scope="module")
def expander(tmp_path_factory):
    return PromptExpander.load(write_tiny_expansion_model(tmp_path_factory.mktemp("expansion")))


def test_expansion_continues_the_end_of_a_prompt_longer_than_its_context(expander):
    from transformers import LogitsProcessorList

    prompt = long_prompt(80, seed=2)  # ~450 byte-level tokens, the tiny model reads 256
    full = expander.tokenizer(safe_str(prompt) + ",", return_tensors="pt").input_ids
    length = full.shape[1]
    new_tokens = 75 * -(-length // 75) - length
    window = expander.context_tokens - new_tokens
    assert length > expander.context_tokens and 0 < new_tokens < 75

    # oracle: transformers' generate reading the last `window` tokens, with the word filter
    # seeing the whole prompt (no prompt token may come back)
    head = full[:, :-window]
    def whole_prompt_filter(ids, scores):
        return expander.process_logits(torch.cat([head, ids], dim=1), scores)
    seed = 11
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        generated = expander.model.generate(
            input_ids=full[:, -window:], attention_mask=torch.ones(1, window, dtype=torch.long), top_k=100,
            max_new_tokens=new_tokens, do_sample=True, logits_processor=LogitsProcessorList([whole_prompt_filter]),
        )[0, window:]
    assert len(generated) == new_tokens
    reference = safe_str(expander.tokenizer.decode(full[0].tolist() + generated.tolist(), skip_special_tokens=True))

    result = FooocusExpansion(expander).expand(prompt, seed)
    assert result.expanded and result.text == reference
    assert result.text.startswith(safe_str(prompt)) and len(result.text) > len(safe_str(prompt))
    assert result.message == (f"Fooocus V2 prompt expansion read only the last {window} of the prompt's "
                              f"{length} tokens (its model's context is {expander.context_tokens} tokens)")
    words = [t for t in generated.tolist() if t != expander.comma_id]
    assert not set(words) & set(full[0].tolist())
    # a prompt that fits is expanded as before, without a message
    assert FooocusExpansion(expander).expand("a red fox", seed).message is None
