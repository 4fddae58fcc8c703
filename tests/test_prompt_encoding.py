"""Prompt weights syntax, 77-token windows, weighted SD1.5/SDXL/refiner encoding (against
transformers' hidden states combined by hand) and SDXL ADM vectors (against diffusers' embedding)."""
import pytest
import torch

from models.conditioning import sdxl_adm, sdxl_refiner_adm
from models.prompt_weights import parse_prompt_weights, tokenize_weighted
from models.text_encoders import (
    REFINER_CLIP_G_PREFIX,
    SD15_CLIP_L_PREFIX,
    SDXL_CLIP_G_PREFIX,
    SDXL_CLIP_L_PREFIX,
    load_sd15_text_encoder,
    load_sdxl_refiner_text_encoder,
    load_sdxl_text_encoder,
    load_text_encoder,
    SD15TextEncoder,
    SDXLRefinerTextEncoder,
)
from models.tiny_text import (
    TINY_CLIP_G,
    TINY_CLIP_L,
    random_clip_g_state_dict,
    random_clip_l_state_dict,
    write_tiny_tokenizer,
)
from models.tokenizer import CLIPTokenizer

transformers = pytest.importorskip("transformers")
single_file_utils = pytest.importorskip("diffusers.loaders.single_file_utils")


# ---------------------------------------------------------------------------------------------
# Weight syntax (hand-computed)

@pytest.mark.parametrize(
    "text, expected",
    [
        ("a cat", [("a cat", 1.0)]),
        ("(a cat)", [("a cat", 1.1)]),
        ("((a))", [("a", 1.1 * 1.1)]),
        ("(((a)))", [("a", 1.1 * 1.1 * 1.1)]),
        ("(a:1.3)", [("a", 1.3)]),
        ("x (a:1.3) y", [("x ", 1.0), ("a", 1.3), (" y", 1.0)]),
        ("((a:1.3))", [("a", 1.3)]),  # explicit weight replaces the outer product
        ("(a:0.5)(b)", [("a", 0.5), ("b", 1.1)]),
        ("(a (b) c:0.5)", [("a ", 0.5), ("b", 0.55), (" c", 0.5)]),
        ("(a:b:1.2)", [("a:b", 1.2)]),  # the last colon
        ("(a: 2 )", [("a", 2.0)]),
        ("(a:xyz)", [("a:xyz", 1.1)]),  # not a number: kept as text
        ("(:1.3)", [(":1.3", 1.1)]),  # colon at the start is not a weight
        ("\\(a\\)", [("(a)", 1.0)]),
        ("(a \\) b)", [("a ) b", 1.1)]),
        ("\\((a)\\)", [("(", 1.0), ("a", 1.1), (")", 1.0)]),
        ("(unclosed text", [("(unclosed text", 1.0)]),
        ("a (b", [("a ", 1.0), ("(b", 1.0)]),
        ("a) (b)", [("a) (b)", 1.0)]),  # a stray ")" unbalances the count, as in ComfyUI
        ("()", []),
        ("", []),
    ],
)
def test_parse_prompt_weights(text, expected):
    got = parse_prompt_weights(text)
    assert [s for s, _ in got] == [s for s, _ in expected]
    assert [w for _, w in got] == pytest.approx([w for _, w in expected], rel=1e-12)


# ---------------------------------------------------------------------------------------------
# Windows

@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    return write_tiny_tokenizer(tmp_path_factory.mktemp("tok"))


@pytest.fixture(scope="module")
def tok(tiny_dir):
    return CLIPTokenizer.from_files(tiny_dir / "vocab.json", tiny_dir / "merges.txt")


@pytest.fixture(scope="module")
def hf_tok(tiny_dir):
    return transformers.CLIPTokenizer.from_pretrained(str(tiny_dir))


def hf_ids(hf_tok, text):
    return hf_tok(text)["input_ids"][1:-1]


def test_window_framing_and_weights(tok, hf_tok):
    text = "a (photo:1.5) of a ((cat))"
    words = [("a", 1.0), ("photo", 1.5), ("of", 1.0), ("a", 1.0), ("cat", 1.21)]
    body = [(t, w) for word, w in words for t in hf_ids(hf_tok, word)]
    start, end = hf_tok.bos_token_id, hf_tok.eos_token_id
    for pad_with_end, pad in ((True, end), (False, 0)):
        (window,) = tokenize_weighted(tok, text, pad_with_end=pad_with_end)
        expected = [(start, 1.0)] + body + [(end, 1.0)] + [(pad, 1.0)] * (75 - len(body))
        assert [t for t, _ in window] == [t for t, _ in expected]
        assert [w for _, w in window] == pytest.approx([w for _, w in expected])
    # unweighted: the same ids as the whole text through transformers
    (window,) = tokenize_weighted(tok, "a photo of a cat, best quality!")
    ids = [t for t, _ in window]
    n = ids.index(end)
    assert ids[1:n] == hf_ids(hf_tok, "a photo of a cat, best quality!")


def test_empty_prompt_is_one_window(tok):
    (window,) = tokenize_weighted(tok, "", pad_with_end=False)
    assert [t for t, _ in window] == [tok.start_token_id, tok.end_token_id] + [0] * 75


def test_long_prompt_windows(tok):
    assert len(tok.encode("cat")) == 1
    windows = tokenize_weighted(tok, " ".join(["cat"] * 100))
    assert [len(w) for w in windows] == [77, 77]
    cat = tok.encode("cat")[0]
    assert [t for t, _ in windows[0]] == [tok.start_token_id] + [cat] * 75 + [tok.end_token_id]
    assert [t for t, _ in windows[1]][:27] == [tok.start_token_id] + [cat] * 25 + [tok.end_token_id]
    assert len(tokenize_weighted(tok, " ".join(["cat"] * 75))) == 1
    assert len(tokenize_weighted(tok, " ".join(["cat"] * 151))) == 3


def test_short_word_moves_whole_to_next_window(tok):
    word = "pneumonia"
    n = len(tok.encode(word))
    assert 2 <= n < 8
    windows = tokenize_weighted(tok, " ".join(["cat"] * 74) + " " + word)
    first = [t for t, _ in windows[0]]
    assert first[75] == tok.end_token_id and first.count(tok.encode("cat")[0]) == 74
    assert [t for t, _ in windows[1]][1 : 1 + n] == tok.encode(word)


def test_long_word_is_cut_across_windows(tok):
    word = "qxzjvkwqxzjvkw"
    ids = tok.encode(word)
    assert len(ids) >= 8
    windows = tokenize_weighted(tok, " ".join(["cat"] * 73) + " " + word)
    first = [t for t, _ in windows[0]]
    second = [t for t, _ in windows[1]]
    assert first[74:76] == ids[:2] and first[76] == tok.end_token_id
    assert second[1 : len(ids) - 1] == ids[2:]


# ---------------------------------------------------------------------------------------------
# Encoding against transformers' hidden states

def oracle(cls, checkpoint, cfg, eos, path):
    hf_config = transformers.CLIPTextConfig(
        vocab_size=cfg.vocab_size, hidden_size=cfg.width, intermediate_size=cfg.intermediate,
        num_hidden_layers=cfg.layers, num_attention_heads=cfg.heads,
        max_position_embeddings=cfg.max_positions, hidden_act=cfg.activation,
        projection_dim=cfg.projection_dim or cfg.width, bos_token_id=eos - 1, eos_token_id=eos,
    )
    hf_config.save_pretrained(path)
    model = single_file_utils.create_diffusers_clip_model_from_ldm(cls, checkpoint, config=str(path), local_files_only=True)
    return model.float().eval()


@pytest.fixture(scope="module")
def sdxl(tmp_path_factory, tok):
    g = torch.Generator().manual_seed(42)
    clip_l = {SDXL_CLIP_L_PREFIX + k: v for k, v in random_clip_l_state_dict(TINY_CLIP_L, g).items()}
    clip_g = {SDXL_CLIP_G_PREFIX + k: v for k, v in random_clip_g_state_dict(TINY_CLIP_G, g).items()}
    ckpt = {**clip_l, **clip_g, "model.diffusion_model.out.2.weight": torch.zeros(1)}
    ref_l = oracle(transformers.CLIPTextModel, clip_l, TINY_CLIP_L, tok.end_token_id, tmp_path_factory.mktemp("l"))
    ref_g = oracle(transformers.CLIPTextModelWithProjection, clip_g, TINY_CLIP_G, tok.end_token_id,
                   tmp_path_factory.mktemp("g"))
    return load_sdxl_text_encoder(ckpt, tok), ref_l, ref_g, ckpt


def oracle_hidden(model, windows, layer):
    """Hidden states of `layer` for the windows followed by the empty prompt, and outputs."""
    with torch.no_grad():
        out = model(input_ids=torch.tensor(windows), output_hidden_states=True)
    return out.hidden_states[layer], out


def by_hand(hidden, weights, rescale=False):
    """z = z_empty + (z - z_empty) * w per token (last row is the empty prompt), windows concatenated."""
    z, z_empty = hidden[:-1], hidden[-1:]
    w = torch.tensor(weights)[..., None]
    out = z_empty + (z - z_empty) * w
    if rescale:
        out = out * (z.mean(dim=(1, 2), keepdim=True) / out.mean(dim=(1, 2), keepdim=True))
    return out.reshape(1, -1, z.shape[-1])


def windows_of(tok, text, pad_with_end):
    windows = tokenize_weighted(tok, text, pad_with_end=pad_with_end)
    empty = tokenize_weighted(tok, "", pad_with_end=pad_with_end)
    ids = [[t for t, _ in w] for w in windows + empty]
    return ids, [[w for _, w in window] for window in windows]


def assert_close(ours, theirs):
    assert ours.shape == theirs.shape
    rel = (ours - theirs).abs().max() / theirs.abs().max()
    assert rel < 1e-4, f"relative error {rel:.3g}"


@pytest.mark.parametrize("rescale", [False, True])
def test_sdxl_weighted_long_prompt(sdxl, tok, rescale):
    encoder, ref_l, ref_g, _ = sdxl
    text = "(a photo:1.4) of a ((cat)) " + " ".join(["cat"] * 80) + " (sunset:0.6)"
    ids_l, weights = windows_of(tok, text, pad_with_end=True)
    ids_g, _ = windows_of(tok, text, pad_with_end=False)
    assert len(weights) == 2 and ids_g[-2][-1] == 0 and ids_l[-2][-1] == tok.end_token_id
    h_l, _ = oracle_hidden(ref_l, ids_l, -2)
    h_g, out_g = oracle_hidden(ref_g, ids_g, -2)
    expected = torch.cat([by_hand(h_l, weights, rescale), by_hand(h_g, weights, rescale)], dim=-1)

    got = encoder.encode(text, rescale_mean=rescale)
    assert got.cond.shape == (1, 154, TINY_CLIP_L.width + TINY_CLIP_G.width)
    assert_close(got.cond, expected)
    assert_close(got.pooled, out_g.text_embeds[:1])  # first window, unweighted


def test_sdxl_unweighted_prompt_is_the_raw_hidden_state(sdxl, tok):
    encoder, ref_l, ref_g, _ = sdxl
    text = "a dog running on the beach"
    ids_l, _ = windows_of(tok, text, True)
    ids_g, _ = windows_of(tok, text, False)
    h_l, _ = oracle_hidden(ref_l, ids_l[:1], -2)
    h_g, out_g = oracle_hidden(ref_g, ids_g[:1], -2)
    got = encoder.encode(text)
    assert_close(got.cond, torch.cat([h_l, h_g], dim=-1))
    assert_close(got.pooled, out_g.text_embeds)
    # clip_skip -1: the last layer, still without the final LayerNorm
    h_l1, _ = oracle_hidden(ref_l, ids_l[:1], -1)
    h_g1, _ = oracle_hidden(ref_g, ids_g[:1], -1)
    assert_close(encoder.encode(text, clip_skip=-1).cond, torch.cat([h_l1, h_g1], dim=-1))
    # deeper than the model: ComfyUI falls back to the final, normalised output
    _, out_l = oracle_hidden(ref_l, ids_l[:1], -1)
    assert_close(encoder.encode(text, clip_skip=-3).cond,
                 torch.cat([out_l.last_hidden_state, out_g.last_hidden_state], dim=-1))


def test_refiner_encoder(sdxl, tok):
    _, _, ref_g, ckpt = sdxl
    refiner_ckpt = {REFINER_CLIP_G_PREFIX + k[len(SDXL_CLIP_G_PREFIX):]: v
                    for k, v in ckpt.items() if k.startswith(SDXL_CLIP_G_PREFIX)}
    encoder = load_sdxl_refiner_text_encoder(refiner_ckpt, tok)
    assert isinstance(load_text_encoder(refiner_ckpt, tok), SDXLRefinerTextEncoder)
    text = "a (castle:1.3) in the snow"
    ids, weights = windows_of(tok, text, pad_with_end=False)
    h, out = oracle_hidden(ref_g, ids, -2)
    got = encoder.encode(text)
    assert_close(got.cond, by_hand(h, weights))
    assert_close(got.pooled, out.text_embeds[:1])


def test_sd15_encoder_final_norm_and_clip_skip(tmp_path, tok):
    sd = random_clip_l_state_dict(TINY_CLIP_L, torch.Generator().manual_seed(5))
    ckpt = {SD15_CLIP_L_PREFIX + k: v for k, v in sd.items()}
    ref = oracle(transformers.CLIPTextModel, ckpt, TINY_CLIP_L, tok.end_token_id, tmp_path)
    encoder = load_sd15_text_encoder(ckpt, tok)
    assert isinstance(load_text_encoder(ckpt, tok), SD15TextEncoder)
    text = "portrait of an (old man:1.2), oil painting"
    ids, weights = windows_of(tok, text, pad_with_end=True)
    with torch.no_grad():
        out = ref(input_ids=torch.tensor(ids), output_hidden_states=True)
        skipped = ref.final_layer_norm(out.hidden_states[-2])  # A1111/ComfyUI SD1 clip skip
    got = encoder.encode(text)
    assert got.cond.shape == (1, 77, TINY_CLIP_L.width)
    assert_close(got.cond, by_hand(out.last_hidden_state, weights))
    assert_close(got.pooled, out.pooler_output[:1])
    assert_close(encoder.encode(text, clip_skip=-2).cond, by_hand(skipped, weights))


# ---------------------------------------------------------------------------------------------
# ADM

def diffusers_embedding(value):
    from diffusers.models.embeddings import get_timestep_embedding

    return get_timestep_embedding(torch.tensor([float(value)]), 256, flip_sin_to_cos=True, downscale_freq_shift=0)[0]


def test_sdxl_adm_vector():
    pooled = torch.randn(2, 1280, generator=torch.Generator().manual_seed(0))
    y = sdxl_adm(pooled, height=1536, width=1152, crop_h=0, crop_w=0, target_height=1024, target_width=768)
    assert y.shape == (2, 2816)
    expected = torch.cat([pooled[0]] + [diffusers_embedding(v) for v in (1536, 1152, 0, 0, 1024, 768)])
    torch.testing.assert_close(y[0], expected, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(y[1, 1280:], expected[1280:])
    # crop 0 embeds as cos(0) = 1, sin(0) = 0
    assert torch.equal(y[0, 1280 + 512 : 1280 + 768], torch.cat([torch.ones(128), torch.zeros(128)]))
    # targets default to the size
    torch.testing.assert_close(sdxl_adm(pooled, 64, 32)[:, -512:], sdxl_adm(pooled, 64, 32, 0, 0, 64, 32)[:, -512:])


def test_refiner_adm_vector():
    pooled = torch.randn(1, 1280, generator=torch.Generator().manual_seed(1))
    y = sdxl_refiner_adm(pooled, height=1024, width=1024, aesthetic_score=2.5)
    assert y.shape == (1, 2560)
    expected = torch.cat([pooled[0]] + [diffusers_embedding(v) for v in (1024, 1024, 0, 0, 2.5)])
    torch.testing.assert_close(y[0], expected, rtol=1e-6, atol=1e-6)
