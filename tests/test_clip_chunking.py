"""Long prompts are cut into CLIP windows by ComfyUI's rule (the version Fooocus ships), and the
text encoders encode every window.

The rule: windows of 75 prompt tokens between a start and an end token, padded to 77; words
(split on spaces and newlines) are tokenized one by one; a word that does not fit moves whole to
the next window, unless it has 8 tokens or more, in which case it is cut.

Expectations are derived by hand on a made-up vocabulary, and compared on random prompts with
the rule written the way ComfyUI's tokenizer loop states it (one growing batch that starts with
the start token and is closed when a word would push it past 76 entries).
"""
import random

import pytest
import torch

from models.prompt_weights import chunk_tokens, tokenize_weighted
from models.text_encoders import SDXL_CLIP_G_PREFIX, SDXL_CLIP_L_PREFIX, WINDOWS_PER_PASS, load_sdxl_text_encoder
from models.tiny_text import TINY_CLIP_G, TINY_CLIP_L, random_clip_g_state_dict, random_clip_l_state_dict, write_tiny_tokenizer
from models.tokenizer import CLIPTokenizer

START, END = 1, 2


class WordTokenizer:
    """A made-up vocabulary: each word stands for a fixed run of token ids."""

    start_token_id, end_token_id = START, END

    def __init__(self, words: dict[str, list[int]]):
        self.words = words

    def encode(self, text: str) -> list[int]:
        return list(self.words[text])


def run(first: int, length: int) -> list[int]:
    return list(range(first, first + length))


VOCAB = {
    "cat": [10],
    "seven": run(100, 7),  # a short word: moves whole
    "eight": run(200, 8),  # the shortest word that may be cut
    "huge": run(1000, 200),  # spans three windows
}
TOK = WordTokenizer(VOCAB)


def ids(window):
    return [t for t, _ in window]


def window(*body: int, pad: int = END) -> list[int]:
    return [START, *body, END] + [pad] * (75 - len(body))


def cats(n: int) -> str:
    return " ".join(["cat"] * n)


def test_a_full_window_and_one_token_more():
    assert [ids(w) for w in tokenize_weighted(TOK, cats(75))] == [window(*[10] * 75)]
    assert [ids(w) for w in tokenize_weighted(TOK, cats(76))] == [window(*[10] * 75), window(10)]


def test_a_word_under_eight_tokens_moves_whole_to_the_next_window():
    got = [ids(w) for w in tokenize_weighted(TOK, cats(73) + " seven cat")]
    assert got == [window(*[10] * 73), window(*run(100, 7), 10)]
    # it fits exactly: stays
    assert [ids(w) for w in tokenize_weighted(TOK, cats(68) + " seven")] == [window(*[10] * 68, *run(100, 7))]


def test_a_word_of_eight_tokens_is_cut():
    got = [ids(w) for w in tokenize_weighted(TOK, cats(73) + " eight cat")]
    assert got == [window(*[10] * 73, 200, 201), window(*run(202, 6), 10)]


def test_a_word_longer_than_a_window_spans_windows():
    got = [ids(w) for w in tokenize_weighted(TOK, cats(10) + " huge")]
    assert got == [window(*[10] * 10, *run(1000, 65)), window(*run(1065, 75)), window(*run(1140, 60))]


def test_a_full_window_is_closed_without_an_empty_one_after_it():
    assert [ids(w) for w in tokenize_weighted(TOK, cats(75) + " eight")] == [window(*[10] * 75), window(*run(200, 8))]
    assert [ids(w) for w in tokenize_weighted(TOK, cats(75) + " seven")] == [window(*[10] * 75), window(*run(100, 7))]


def test_clip_g_pads_with_zero_and_weights_follow_cut_words():
    windows = tokenize_weighted(TOK, cats(73) + " (eight:1.3)\ncat", pad_with_end=False)
    assert [ids(w) for w in windows] == [window(*[10] * 73, 200, 201, pad=0), window(*run(202, 6), 10, pad=0)]
    assert [w for _, w in windows[0]] == pytest.approx([1.0] * 74 + [1.3] * 2 + [1.0])
    assert [w for _, w in windows[1]] == pytest.approx([1.0] + [1.3] * 6 + [1.0] * 70)


def comfyui_rule(tokenizer, text: str) -> list[list[int]]:
    """The rule as ComfyUI's SDTokenizer loop states it (unweighted text only)."""
    groups = [tokenizer.encode(word) for word in text.replace("\n", " ").split(" ") if word]
    batches, batch = [], [START]
    for group in groups:
        is_large = len(group) >= 8
        while group:
            if len(group) + len(batch) > 77 - 1:
                remaining = 77 - len(batch) - 1
                if is_large:
                    batch.extend(group[:remaining])
                    group = group[remaining:]
                batch.append(END)
                batches.append(batch + [END] * (77 - len(batch)))
                batch = [START]
            else:
                batch.extend(group)
                group = []
    batch.append(END)
    batches.append(batch + [END] * (77 - len(batch)))
    return batches


def test_random_prompts_follow_comfyuis_loop():
    vocab = {f"w{n}": run(10 + 300 * n, n) for n in range(1, 20)}
    tokenizer = WordTokenizer(vocab)
    rng = random.Random(0)
    for _ in range(200):
        text = " ".join(rng.choice(list(vocab)) for _ in range(rng.randint(0, 60)))
        assert [ids(w) for w in tokenize_weighted(tokenizer, text)] == comfyui_rule(tokenizer, text), text


# ---------------------------------------------------------------------------------------------
# A 20,000-word prompt through the SDXL text encoders (tiny CLIP-L + CLIP-G, real tokenizer code)

ONE_TOKEN_WORDS = ("cat", "dog", "red", "the", "a", "of", "light", "field", "street", "night", "white",
                   "black", "blue", "beach", "book", "bowl", "bright", "art", "table", "city")


@pytest.fixture(scope="module")
def encoder(tmp_path_factory):
    folder = write_tiny_tokenizer(tmp_path_factory.mktemp("tokenizer"))
    tokenizer = CLIPTokenizer.from_files(folder / "vocab.json", folder / "merges.txt")
    g = torch.Generator().manual_seed(3)
    checkpoint = {**{SDXL_CLIP_L_PREFIX + k: v for k, v in random_clip_l_state_dict(TINY_CLIP_L, g).items()},
                  **{SDXL_CLIP_G_PREFIX + k: v for k, v in random_clip_g_state_dict(TINY_CLIP_G, g).items()}}
    return load_sdxl_text_encoder(checkpoint, tokenizer)


def test_20000_words_give_77_tokens_per_75_words_and_every_window_is_encoded(encoder):
    assert all(len(encoder.tokenizer.encode(word)) == 1 for word in ONE_TOKEN_WORDS)
    rng = random.Random(5)
    words = [rng.choice(ONE_TOKEN_WORDS) for _ in range(20000)]
    windows = -(-len(words) // 75)  # 267, more than WINDOWS_PER_PASS (several passes)
    assert windows > WINDOWS_PER_PASS
    assert len(chunk_tokens(encoder.tokenizer, " ".join(words))) == windows

    weighted = "(" + " ".join(words[:40]) + ":1.2) " + " ".join(words[40:])
    for text, rescale in ((" ".join(words), False), (weighted, True)):
        got = encoder.encode(text, rescale_mean=rescale)
        assert got.cond.shape == (1, 77 * windows, TINY_CLIP_L.width + TINY_CLIP_G.width)
        # window j is exactly what its own 75 words encode to (the first two, one from a later
        # pass, the last, which is short): none is dropped, moved or mixed with another
        for j in (0, 1, WINDOWS_PER_PASS + 3, windows - 1):
            alone = " ".join(words[75 * j:75 * (j + 1)])
            if rescale and j == 0:
                alone = "(" + " ".join(words[:40]) + ":1.2) " + " ".join(words[40:75])
            expected = encoder.encode(alone, rescale_mean=rescale)
            torch.testing.assert_close(got.cond[:, 77 * j:77 * (j + 1)], expected.cond, rtol=1e-5, atol=1e-5)
            if j == 0:
                torch.testing.assert_close(got.pooled, expected.pooled, rtol=1e-5, atol=1e-5)
