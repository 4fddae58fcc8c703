"""Textual-inversion embeddings (`embedding:name` in prompts): the file's vectors replace the
placeholder tokens in both CLIPs, checked against transformers' CLIP with the same vectors added
to its vocabulary (`resize_token_embeddings`); the file layouts, missing names and width rules."""
from __future__ import annotations

import logging

import pytest
import torch
from safetensors.torch import save_file

from models.loading import load_checkpoint
from models.text_encoders import load_text_encoder
from models.textual_inversion import EmbeddingLibrary, EmbeddingToken, read_embedding_file, vectors_for
from nodes.loaders import _vocabulary_rows, tokenizer_for

transformers = pytest.importorskip("transformers")


def _encoder(demo_models_dir, name):
    loaded = load_checkpoint(demo_models_dir / "checkpoints" / name)
    state = loaded.text_encoder_state
    return load_text_encoder(state, tokenizer_for(demo_models_dir, _vocabulary_rows(state)))


@pytest.fixture(scope="module")
def library(tmp_path_factory):
    directory = tmp_path_factory.mktemp("embeddings")
    g = torch.Generator().manual_seed(5)
    save_file({"emb_params": torch.randn(2, 32, generator=g)}, directory / "style.safetensors")  # SD1.5 width
    save_file({"clip_l": torch.randn(3, 32, generator=g), "clip_g": torch.randn(3, 48, generator=g)},
              directory / "xl.safetensors")
    torch.save({"string_to_param": {"*": torch.randn(1, 32, generator=g)}, "name": "old", "step": 3},
               directory / "a1111.pt")
    torch.save({"<tok>": torch.randn(32, generator=g)}, directory / "diffusers.bin")
    return EmbeddingLibrary([directory])


def _oracle(model, extra: torch.Tensor, start: int, end: int):
    """transformers' CLIP with our weights and `extra` appended to its token embeddings."""
    cfg = model.config
    hf = transformers.CLIPTextModelWithProjection(transformers.CLIPTextConfig(
        vocab_size=cfg.vocab_size, hidden_size=cfg.width, intermediate_size=cfg.intermediate,
        num_hidden_layers=cfg.layers, num_attention_heads=cfg.heads, max_position_embeddings=cfg.max_positions,
        hidden_act=cfg.activation, projection_dim=cfg.projection_dim or cfg.width, layer_norm_eps=cfg.layer_norm_eps,
        bos_token_id=start, eos_token_id=end))
    missing, unexpected = hf.load_state_dict(model.state_dict(), strict=False)
    assert not unexpected and set(missing) <= {"text_projection.weight"}
    hf.resize_token_embeddings(cfg.vocab_size + len(extra))
    with torch.no_grad():
        hf.get_input_embeddings().weight[cfg.vocab_size:] = extra
    return hf.eval()


def _ids(tokenizer, parts, pad):
    """start, the words' tokens and literal ids, end, padding to 77."""
    body = []
    for part in parts:
        body += tokenizer.encode(part) if isinstance(part, str) else list(part)
    ids = [tokenizer.start_token_id] + body + [tokenizer.end_token_id]
    return torch.tensor([ids + [pad] * (77 - len(ids))])


def test_sd15_embedding_vectors_replace_the_placeholders(demo_models_dir, library):
    encoder = _encoder(demo_models_dir, "tiny-sd15.safetensors")
    clip_l, tok = encoder.clip_l, encoder.tokenizer
    vocab = clip_l.config.vocab_size
    vectors = library.tensors("style")["emb_params"]
    ours = encoder.encode("a embedding:style lighthouse", embeddings=library)
    hf = _oracle(clip_l, vectors, tok.start_token_id, tok.end_token_id)
    ids = _ids(tok, ["a", [vocab, vocab + 1], "lighthouse"], tok.end_token_id)
    with torch.no_grad():
        expected = hf(ids)
    torch.testing.assert_close(ours.cond, expected.last_hidden_state, rtol=1e-5, atol=1e-5)  # SD1.5: final norm
    torch.testing.assert_close(ours.pooled, expected.last_hidden_state[:, int((ids[0] == tok.end_token_id)
                                                                                .int().argmax())])
    # without the library the same words are plain text
    assert not torch.allclose(encoder.encode("a embedding:style lighthouse").cond, ours.cond)


def test_sdxl_embedding_gives_each_clip_its_own_vectors(demo_models_dir, library):
    encoder = _encoder(demo_models_dir, "tiny-sdxl.safetensors")
    tok = encoder.tokenizer
    tensors = library.tensors("xl")
    # the trailing comma is text again, as in ComfyUI
    ours = encoder.encode("embedding:xl, a lighthouse", embeddings=library)
    parts = []
    for clip, key, pad in ((encoder.clip_l, "clip_l", tok.end_token_id), (encoder.clip_g, "clip_g", 0)):
        vocab = clip.config.vocab_size
        hf = _oracle(clip, tensors[key], tok.start_token_id, tok.end_token_id)
        ids = _ids(tok, [[vocab, vocab + 1, vocab + 2], ",", "a", "lighthouse"], pad)
        with torch.no_grad():
            out = hf(ids, output_hidden_states=True)
        parts.append(out.hidden_states[-2])  # SDXL reads the penultimate layer, unnormalised
        pooled = out.text_embeds
    torch.testing.assert_close(ours.cond, torch.cat(parts, dim=-1), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(ours.pooled, pooled, rtol=1e-5, atol=1e-5)


def test_sd15_width_embedding_is_dropped_from_clip_g_only(demo_models_dir, library, caplog):
    encoder = _encoder(demo_models_dir, "tiny-sdxl.safetensors")
    with caplog.at_level(logging.WARNING):
        mixed = encoder.encode("a embedding:style lighthouse", embeddings=library)
    assert "no 48-wide vector for clip_g" in caplog.text
    width_l = encoder.clip_l.config.width
    # CLIP-G sees the prompt without the embedding, padded at the end
    plain = encoder.encode("a lighthouse")
    torch.testing.assert_close(mixed.cond[..., width_l:], plain.cond[..., width_l:])
    assert not torch.allclose(mixed.cond[..., :width_l], plain.cond[..., :width_l])


def test_missing_embedding_is_dropped_with_a_warning(demo_models_dir, library, caplog):
    encoder = _encoder(demo_models_dir, "tiny-sd15.safetensors")
    with caplog.at_level(logging.WARNING):
        dropped = encoder.encode("a embedding:nope lighthouse", embeddings=library)
    assert "embedding:nope does not exist" in caplog.text
    torch.testing.assert_close(dropped.cond, encoder.encode("a lighthouse").cond)
    assert library.lookup("embedding:../style") == (None, "")  # names stay inside the folder


def test_file_layouts_and_weights(demo_models_dir, library):
    old = library.tensors("a1111")
    assert list(old) == ["*"] and vectors_for(old, "clip_l", 32).shape == (1, 32)
    assert vectors_for(library.tensors("diffusers"), "clip_l", 32).shape == (1, 32)
    assert vectors_for(library.tensors("xl"), "clip_g", 48).shape == (3, 48)
    assert vectors_for(library.tensors("style"), "clip_g", 48) is None  # another width
    assert library.lookup("embedding:style") == ([EmbeddingToken("style", 0), EmbeddingToken("style", 1)], "")
    assert read_embedding_file(library.directories[0] / "style.safetensors").keys() == {"emb_params"}
    encoder = _encoder(demo_models_dir, "tiny-sd15.safetensors")
    # emphasis applies to the embedding's tokens like any other word's
    weighted = encoder.encode("a (embedding:a1111:1.3) lighthouse", embeddings=library)
    unweighted = encoder.encode("a embedding:a1111 lighthouse", embeddings=library)
    assert not torch.allclose(weighted.cond, unweighted.cond)
