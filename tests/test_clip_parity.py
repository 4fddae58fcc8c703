"""Our CLIP text transformer against transformers' CLIPTextModel / CLIPTextModelWithProjection,
both built from the same single-file checkpoint weights. The oracle is loaded through diffusers'
own single-file conversion (`create_diffusers_clip_model_from_ldm`), so the OpenCLIP -> Hugging
Face key conversion (fused q/k/v split, transposed projection) is checked by an oracle too."""
import pytest
import torch

from models.clip_text import GELU, QUICK_GELU, CLIPTextConfig, load_clip_text_model, open_clip_to_hf
from models.text_encoders import REFINER_CLIP_G_PREFIX, SD15_CLIP_L_PREFIX, SDXL_CLIP_G_PREFIX, SDXL_CLIP_L_PREFIX
from models.tiny_text import random_clip_g_state_dict, random_clip_l_state_dict

transformers = pytest.importorskip("transformers")
single_file_utils = pytest.importorskip("diffusers.loaders.single_file_utils")

VOCAB = 300
START, END = VOCAB - 2, VOCAB - 1

# (width, layers, heads, intermediate); heads None = the loader's rule (64- or 16-wide heads)
L_CONFIGS = [(32, 2, None, 64), (48, 3, 3, 80), (64, 2, 4, 128)]
G_CONFIGS = [(48, 2, None, 96), (64, 3, 2, 100), (80, 2, 5, 160)]


def oracle_model(cls, checkpoint, cfg: CLIPTextConfig, tmp_path):
    """transformers model made by diffusers' single-file loader from `checkpoint` (prefixed keys)."""
    hf_config = transformers.CLIPTextConfig(
        vocab_size=cfg.vocab_size,
        hidden_size=cfg.width,
        intermediate_size=cfg.intermediate,
        num_hidden_layers=cfg.layers,
        num_attention_heads=cfg.heads,
        max_position_embeddings=cfg.max_positions,
        hidden_act=cfg.activation,
        projection_dim=cfg.projection_dim or cfg.width,
        layer_norm_eps=cfg.layer_norm_eps,
        bos_token_id=START,
        eos_token_id=END,  # not 2: the oracle then pools at the first end token, we use argmax
    )
    hf_config.save_pretrained(tmp_path)
    model = single_file_utils.create_diffusers_clip_model_from_ldm(
        cls, checkpoint, config=str(tmp_path), local_files_only=True
    )
    return model.float().eval()


def random_windows(generator, pad, batch=3):
    """Start, a random number of random ordinary tokens, end, padding (as the tokenizer frames them)."""
    rows = []
    for length in torch.randint(0, 76, (batch,), generator=generator).tolist():
        body = torch.randint(0, VOCAB - 2, (length,), generator=generator).tolist()
        row = [START] + body + [END]
        rows.append(row + [pad] * (77 - len(row)))
    return torch.tensor(rows)


def assert_close(ours, theirs):
    rel = (ours - theirs).abs().max() / theirs.abs().max()
    assert rel < 1e-4, f"relative error {rel:.3g}"


@pytest.mark.parametrize("index", range(3))
def test_clip_l_matches_transformers(index, tmp_path):
    width, layers, heads, inter = L_CONFIGS[index]
    g = torch.Generator().manual_seed(100 + index)
    cfg = CLIPTextConfig(width=width, layers=layers, heads=heads or width // 16, vocab_size=VOCAB,
                         intermediate=inter, activation=QUICK_GELU)
    sd = random_clip_l_state_dict(cfg, g)
    prefix = (SD15_CLIP_L_PREFIX, SDXL_CLIP_L_PREFIX)[index % 2]
    oracle = oracle_model(transformers.CLIPTextModel, {prefix + k: v for k, v in sd.items()}, cfg, tmp_path)
    ours = load_clip_text_model(sd, QUICK_GELU, heads=heads)
    assert ours.config == cfg

    ids = random_windows(g, pad=END)
    with torch.no_grad():
        ref = oracle(input_ids=ids, output_hidden_states=True)
        out = ours(ids, hidden_layer=-2, output_hidden_states=True)
    assert len(out.hidden_states) == len(ref.hidden_states) == layers + 1
    for mine, theirs in zip(out.hidden_states, ref.hidden_states):
        assert_close(mine, theirs)
    assert_close(out.hidden_state, ref.hidden_states[-2])
    assert_close(out.last_hidden_state, ref.last_hidden_state)
    assert_close(out.pooled, ref.pooler_output)
    assert out.text_embeds is None


@pytest.mark.parametrize("index", range(3))
def test_clip_g_from_open_clip_matches_transformers(index, tmp_path):
    width, layers, heads, inter = G_CONFIGS[index]
    g = torch.Generator().manual_seed(200 + index)
    # projection_dim == width, as in bigG (diffusers' conversion assumes it)
    cfg = CLIPTextConfig(width=width, layers=layers, heads=heads or width // 16, vocab_size=VOCAB,
                         intermediate=inter, activation=GELU, projection_dim=width)
    sd = random_clip_g_state_dict(cfg, g)
    assert "logit_scale" in sd and sd["text_projection"].shape == (width, width)
    prefix = (SDXL_CLIP_G_PREFIX, REFINER_CLIP_G_PREFIX)[index % 2]
    oracle = oracle_model(
        transformers.CLIPTextModelWithProjection, {prefix + k: v for k, v in sd.items()}, cfg, tmp_path
    )
    ours = load_clip_text_model(sd, GELU, heads=heads)
    assert ours.config == cfg

    ids = random_windows(g, pad=0)
    with torch.no_grad():
        ref = oracle(input_ids=ids, output_hidden_states=True)
        out = ours(ids, hidden_layer=-2, output_hidden_states=True)
    for mine, theirs in zip(out.hidden_states, ref.hidden_states, strict=True):
        assert_close(mine, theirs)
    assert_close(out.hidden_state, ref.hidden_states[-2])
    assert_close(out.last_hidden_state, ref.last_hidden_state)
    assert_close(out.text_embeds, ref.text_embeds)


def test_open_clip_conversion_handles_projection_narrower_than_width():
    """Our conversion splits q/k/v by the fused tensor's own size, not by the projection."""
    cfg = CLIPTextConfig(width=32, layers=1, heads=2, vocab_size=VOCAB, intermediate=64,
                         activation=GELU, projection_dim=16)
    sd = random_clip_g_state_dict(cfg, torch.Generator().manual_seed(7))
    hf = open_clip_to_hf(sd)
    fused = sd["transformer.resblocks.0.attn.in_proj_weight"]
    assert torch.equal(hf["text_model.encoder.layers.0.self_attn.k_proj.weight"], fused[32:64])
    assert torch.equal(hf["text_projection.weight"], sd["text_projection"].t())
    assert "logit_scale" not in hf
    assert load_clip_text_model(sd, GELU).config == cfg


def test_hf_keys_without_text_model_prefix_and_position_ids_load():
    """Old SD1.x files (and transformers 5's CLIPTextModel) have no `text_model.` prefix; some carry position_ids."""
    cfg = CLIPTextConfig(width=32, layers=1, heads=2, vocab_size=VOCAB, intermediate=64)
    sd = random_clip_l_state_dict(cfg, torch.Generator().manual_seed(3))
    bare = {k.removeprefix("text_model."): v for k, v in sd.items()}
    bare["embeddings.position_ids"] = torch.arange(77)[None]
    a, b = load_clip_text_model(sd, QUICK_GELU), load_clip_text_model(bare, QUICK_GELU)
    ids = random_windows(torch.Generator().manual_seed(0), pad=END, batch=1)
    torch.testing.assert_close(a(ids).last_hidden_state, b(ids).last_hidden_state, rtol=0, atol=0)


def test_missing_weight_is_an_error():
    cfg = CLIPTextConfig(width=32, layers=1, heads=2, vocab_size=VOCAB, intermediate=64)
    sd = random_clip_l_state_dict(cfg, torch.Generator().manual_seed(3))
    del sd["text_model.encoder.layers.0.mlp.fc2.bias"]
    with pytest.raises(RuntimeError, match="fc2.bias"):
        load_clip_text_model(sd, QUICK_GELU)
