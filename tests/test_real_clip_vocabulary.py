"""The real CLIP vocabulary ships with the install (clip-anytorch's bpe_simple_vocab_16e6.txt.gz):
our tokenizer built from it gives the ids of OpenAI's reference tokenizer (that package's
SimpleTokenizer) and the start/end ids SD checkpoints expect."""
import importlib.util

import pytest

from models.tokenizer import CLIPTokenizer, find_tokenizer_files

CORPUS = [
    "a photograph of an astronaut riding a horse",
    "masterpiece, best quality, 1girl, solo, looking at viewer, (detailed:1.2) [background]",
    "Cinematic shot of a red fox in the snow, 35mm, f/1.8, bokeh, 8k uhd",
    "don't stop-motion isn't it's we'll they're",
    "numbers 1234567890 and 3.14159 and 100%",
    "emoji and punctuation!!! ??? ... ;; ::",
    "supercalifragilisticexpialidocious antidisestablishmentarianism",
    "   lots    of   spaces\tand\nnewlines   ",
]


def test_bundled_vocabulary_is_found_without_any_models_folder(tmp_path):
    files = find_tokenizer_files([tmp_path])
    assert files.bpe_gz is not None and files.bpe_gz.name == "bpe_simple_vocab_16e6.txt.gz"
    tokenizer = CLIPTokenizer.from_located(files)
    assert tokenizer.vocab_size == 49408
    assert (tokenizer.start_token_id, tokenizer.end_token_id) == (49406, 49407)


@pytest.mark.parametrize("text", CORPUS)
def test_ids_equal_openai_reference_tokenizer(tmp_path, text):
    files = find_tokenizer_files([tmp_path])
    SimpleTokenizer = _reference_tokenizer(files.bpe_gz)
    ours = CLIPTokenizer.from_located(files).encode(text)
    reference = SimpleTokenizer(str(files.bpe_gz)).encode(text)
    assert ours == reference


def _reference_tokenizer(gz_path):
    """OpenAI's SimpleTokenizer from the file next to the vocabulary, loaded on its own (the
    package's __init__ pulls in the whole CLIP model and pkg_resources)."""
    spec = importlib.util.spec_from_file_location("clip_reference_tokenizer", gz_path.parent / "simple_tokenizer.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.SimpleTokenizer
