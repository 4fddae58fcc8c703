"""Our CLIP BPE tokenizer against transformers' CLIPTokenizer on the same (tiny, real) vocabulary."""
import gzip
import json
import random

import pytest

from models.tiny_text import TINY_VOCAB_SIZE, tiny_merges, write_tiny_tokenizer
from models.tokenizer import (
    BPE_GZ_NAME,
    CLIPTokenizer,
    TokenizerFilesMissing,
    find_tokenizer_files,
    load_clip_tokenizer,
    vocab_from_merges,
)

CORPUS = [
    "",
    "a photo of a cat",
    "A Photo Of A CAT, highly detailed!!",
    "(masterpiece:1.2), ((best quality)), (blurry:0.5) portrait",
    "\\(literal parens\\) and \\\\ backslash (unclosed ( paren ) extra)",
    "don't it's THEY'RE we'll I'D you've I'm !'s 'x ''quoted''",
    "3.14159 1,000,000 50% #1 $20 ½ ² ٣ 2024-01-01",
    "ΟΔΟΣ Σ café naïve 東京 タワー 🎉🐱 émoji",
    "e\u0301 combining vs \u00e9 precomposed",
    "tabs\tand\nnewlines\r\n and  many   spaces\u00a0nbsp\u3000ideographic\x1cfs",
    "<|startoftext|>special<|endoftext|> tokens <|ENDOFTEXT|> not special",
    "&amp; html stays, Ã© mojibake stays",
    "İstanbul ǅ ß ﬁ ﬀ ŉ",
    "supercalifragilisticexpialidocious pneumonoultramicroscopicsilicovolcanoconiosis",
    "snake_case-words and.dots/slashes|pipes~tildes",
    " ".join(["a beautiful landscape with mountains and a river at sunset"] * 12),
]


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    return write_tiny_tokenizer(tmp_path_factory.mktemp("tok"))


@pytest.fixture(scope="module")
def ours(tiny_dir):
    return CLIPTokenizer.from_files(tiny_dir / "vocab.json", tiny_dir / "merges.txt")


@pytest.fixture(scope="module")
def oracle(tiny_dir):
    transformers = pytest.importorskip("transformers")
    return transformers.CLIPTokenizer.from_pretrained(str(tiny_dir))


def oracle_ids(oracle, text):
    ids = oracle(text)["input_ids"]
    assert ids[0] == oracle.bos_token_id and ids[-1] == oracle.eos_token_id
    return ids[1:-1]


def test_tiny_vocab_is_a_real_bpe(ours, oracle):
    assert ours.vocab_size == TINY_VOCAB_SIZE == len(oracle)
    assert ours.start_token_id == oracle.bos_token_id == TINY_VOCAB_SIZE - 2
    assert ours.end_token_id == oracle.eos_token_id == TINY_VOCAB_SIZE - 1
    # learned merges make ordinary prompt words single tokens
    assert len(ours.encode("landscape")) == 1
    assert len(ours.encode("a photo of a cat")) <= 7


@pytest.mark.parametrize("text", CORPUS)
def test_same_ids_as_transformers(ours, oracle, text):
    assert ours.encode(text) == oracle_ids(oracle, text)


def test_same_ids_on_random_strings(ours, oracle):
    rng = random.Random(1234)
    alphabet = list("abcdefghijklmnopqrstuvwxyz ABCXYZ  ''\t\n.,!?()\\:;-_0123456789") + [
        "é", "Σ", "ß", "ǅ", "\x1c", "\x1f", "\u00a0", "\u2028", "\u200b", "\ufeff", "😀", "東", "ﬁ",
        "e\u0301", "\x85", "\u3000", "İ", "<|endoftext|>", "’", "ŉ",
    ]
    for _ in range(300):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 40)))
        assert ours.encode(text) == oracle_ids(oracle, text), repr(text)


def test_bpe_gz_builds_the_same_vocabulary(tmp_path, tiny_dir, ours):
    merges = tiny_merges()
    gz = tmp_path / BPE_GZ_NAME
    with gzip.open(gz, "wt", encoding="utf-8") as f:
        f.write("bpe_simple_vocab_16e6.txt#version: 0.2\n" + "\n".join(f"{a} {b}" for a, b in merges) + "\n")
    from_gz = CLIPTokenizer.from_bpe_gz(gz, merge_count=len(merges))
    assert from_gz.vocab == json.loads((tiny_dir / "vocab.json").read_text(encoding="utf-8"))
    for text in CORPUS[:8]:
        assert from_gz.encode(text) == ours.encode(text)


def test_vocab_from_merges_layout():
    vocab = vocab_from_merges([("a", "b"), ("ab", "c</w>")])
    assert vocab["!"] == 0 and vocab["!</w>"] == 256
    assert vocab["ab"] == 512 and vocab["abc</w>"] == 513
    assert vocab["<|startoftext|>"] == 514 and vocab["<|endoftext|>"] == 515


def test_find_tokenizer_files_in_models_dir(tmp_path):
    models = tmp_path / "models"
    write_tiny_tokenizer(models / "text_encoders" / "clip_tokenizer")
    found = find_tokenizer_files([tmp_path / "elsewhere", models], use_open_clip_package=False)
    assert found.vocab == models / "text_encoders" / "clip_tokenizer" / "vocab.json"
    assert load_clip_tokenizer([models], use_open_clip_package=False).vocab_size == TINY_VOCAB_SIZE


def test_find_tokenizer_files_gz(tmp_path):
    folder = tmp_path / "clip_tokenizer"
    folder.mkdir()
    (folder / BPE_GZ_NAME).write_bytes(gzip.compress(b"header\n"))
    assert find_tokenizer_files([tmp_path], use_open_clip_package=False).bpe_gz == folder / BPE_GZ_NAME


def test_missing_files_error_says_where_and_how(tmp_path):
    with pytest.raises(TokenizerFilesMissing) as info:
        find_tokenizer_files([tmp_path], use_open_clip_package=False)
    message = str(info.value)
    assert "text_encoders/clip_tokenizer" in message
    assert "vocab.json" in message and "merges.txt" in message
    assert "stable-diffusion" in message and BPE_GZ_NAME in message
    assert str(tmp_path) in message
    assert isinstance(info.value, FileNotFoundError)
