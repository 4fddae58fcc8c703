"""LoRA key mapping and weight patching.

Oracles: diffusers' own LoRA loader (`load_lora_weights` + `fuse_lora`) on a diffusers pipeline
built from the same tiny checkpoint by diffusers' single-file conversion (weights are paired with
ours by their original VALUES, so the comparison does not trust our name conversion); PEFT's LoHa,
LoKr and DoRA layers; convolution composition for LoCon; OpenCLIP -> HF conversion for the fused
q/k/v projection.
"""
from __future__ import annotations

import copy
import re

import pytest
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from models.checkpoint import read_state_dict
from models.clip_text import GELU, QUICK_GELU, load_clip_text_model, open_clip_to_hf
from models.loading import load_checkpoint
from models.lora_keys import LoraTarget, checkpoint_lora_key_map
from models.lora_patch import LoraPatcher
from models.text_encoders import SD15_CLIP_L_PREFIX, SDXL_CLIP_G_PREFIX, SDXL_CLIP_L_PREFIX, strip_prefix
from models.tiny import tiny_sd15_spec, tiny_sdxl_refiner_spec, tiny_sdxl_spec, write_tiny_checkpoint
from models.tiny_lora import tiny_lora_state_dict, write_tiny_lora, write_tiny_sdxl_lora
from models.tiny_text import random_clip_g_state_dict
from oracle_diffusers import diffusers_unet_from_single_file, relative_error

transformers = pytest.importorskip("transformers")
diffusers = pytest.importorskip("diffusers")
peft = pytest.importorskip("peft")


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    return tmp_path_factory.mktemp("lora")


def our_parts(checkpoint_path, family: str) -> dict[str, nn.Module]:
    """Our networks, loaded the product way (UNet memory-mapped from the file)."""
    loaded = load_checkpoint(checkpoint_path)
    state = loaded.text_encoder_state
    if family == "sd15":
        return {"unet": loaded.unet, "clip_l": load_clip_text_model(strip_prefix(state, SD15_CLIP_L_PREFIX), QUICK_GELU)}
    return {"unet": loaded.unet,
            "clip_l": load_clip_text_model(strip_prefix(state, SDXL_CLIP_L_PREFIX), QUICK_GELU),
            "clip_g": load_clip_text_model(strip_prefix(state, SDXL_CLIP_G_PREFIX), GELU)}


def lora_modules(keys) -> set[str]:
    """Module names of a LoRA written by models.tiny_lora (kohya or PEFT tensor names)."""
    return {re.sub(r"\.(lora_(up|down|A|B)\.weight|alpha)$", "", key) for key in keys}


def snapshot(parts) -> dict[tuple[str, str], torch.Tensor]:
    return {(part, key): value.detach().clone() for part, module in parts.items()
            for key, value in module.state_dict().items()}


def changed_keys(parts, before) -> set[tuple[str, str]]:
    return {(part, key) for part, module in parts.items() for key, value in module.state_dict().items()
            if not torch.equal(value, before[(part, key)])}


# ---------------------------------------------------------------------------------------------
# diffusers oracle


def diffusers_text_encoder(cls, checkpoint_path, cfg, workdir):
    hf_config = transformers.CLIPTextConfig(
        vocab_size=cfg.vocab_size, hidden_size=cfg.width, intermediate_size=cfg.intermediate,
        num_hidden_layers=cfg.layers, num_attention_heads=cfg.heads, max_position_embeddings=cfg.max_positions,
        hidden_act=cfg.activation, projection_dim=cfg.projection_dim or cfg.width, layer_norm_eps=cfg.layer_norm_eps,
        bos_token_id=0, eos_token_id=1)
    hf_config.save_pretrained(workdir)
    from diffusers.loaders.single_file_utils import create_diffusers_clip_model_from_ldm

    # a fresh read: the oracle must not share tensor storage with our (in-place patched) model
    return create_diffusers_clip_model_from_ldm(cls, load_file(str(checkpoint_path)), config=str(workdir),
                                                local_files_only=True).float().eval()


def diffusers_pipeline(checkpoint_path, spec, workdir):
    unet = diffusers_unet_from_single_file(checkpoint_path, spec.unet, workdir)
    text_encoder = diffusers_text_encoder(transformers.CLIPTextModel, checkpoint_path, spec.clip_l, workdir / "te")
    if spec.family == "sd15":
        pipe = diffusers.StableDiffusionPipeline(vae=None, text_encoder=text_encoder, tokenizer=None, unet=unet,
                                                 scheduler=None, safety_checker=None, feature_extractor=None,
                                                 requires_safety_checker=False)
        return pipe, {"unet": unet, "text_encoder": text_encoder}
    text_encoder_2 = diffusers_text_encoder(transformers.CLIPTextModelWithProjection, checkpoint_path, spec.clip_g,
                                            workdir / "te2")
    pipe = diffusers.StableDiffusionXLPipeline(vae=None, text_encoder=text_encoder, text_encoder_2=text_encoder_2,
                                               tokenizer=None, tokenizer_2=None, unet=unet, scheduler=None)
    return pipe, {"unet": unet, "text_encoder": text_encoder, "text_encoder_2": text_encoder_2}


def pair_by_value(ours_before, theirs_before) -> dict[tuple[str, str], tuple[str, str]]:
    """(component, their key) -> (part, our key) of the tensor with the same original value
    (random weights are all distinct, so values identify weights)."""
    ours = {}
    for key, value in ours_before.items():
        ours.setdefault((tuple(value.shape), value.numpy().tobytes()), []).append(key)
    pairs = {}
    for key, value in theirs_before.items():
        match = ours.get((tuple(value.shape), value.numpy().tobytes()), [])
        assert len(match) == 1, f"no unique counterpart for diffusers' {key}"
        pairs[key] = match[0]
    return pairs


ORACLE_CASES = {
    # SD1.5 with 3 levels, 2 res blocks, no attention on the last level: LoCon on every conv
    "sd15-kohya-locon": (tiny_sd15_spec(channel_mult=(1, 2, 2), num_res_blocks=2, depth_per_level=(1, 1, 0)),
                         "kohya", True),
    "sdxl-kohya-sgm-names": (tiny_sdxl_spec(), "kohya_ldm", False),
    "sdxl-kohya-locon": (tiny_sdxl_spec(channel_mult=(1, 2, 2), depth_per_level=(0, 1, 3), middle_depth=3),
                         "kohya", True),
    "sdxl-peft": (tiny_sdxl_spec(), "peft", False),
}


@pytest.mark.parametrize("case", list(ORACLE_CASES))
def test_patched_weights_match_diffusers_fuse_lora(case, workdir):
    spec, lora_format, convs = ORACLE_CASES[case]
    strength = 0.7
    checkpoint = write_tiny_checkpoint(workdir / f"{case}.safetensors", spec, seed=3)
    lora_path = write_tiny_lora(workdir / f"{case}-lora.safetensors", checkpoint, seed=5, format=lora_format,
                                convs=convs)
    modules = lora_modules(load_file(str(lora_path)))

    parts = our_parts(checkpoint, spec.family)
    ours_before = snapshot(parts)
    patcher = LoraPatcher(parts, checkpoint_lora_key_map(spec.family, **parts))
    (report,) = patcher.apply([(lora_path, strength, strength)])
    assert report.unmatched == () and report.mismatched == () and not report.skipped
    assert report.patched_keys == len(modules)

    pipe, components = diffusers_pipeline(checkpoint, spec, workdir / case)
    theirs_before = {(name, key): value.clone() for name, module in components.items()
                     for key, value in module.state_dict().items()}
    pipe.load_lora_weights(str(lora_path))
    pipe.fuse_lora(lora_scale=strength, components=list(components))

    pairs = pair_by_value(ours_before, theirs_before)
    ours_now = snapshot(parts)
    theirs_changed = set()
    for name, module in components.items():
        for key, value in module.state_dict().items():
            if "lora_" in key:
                continue
            original_key = (name, key.replace(".base_layer", ""))
            ours_key = pairs[original_key]
            theirs_delta = value - theirs_before[original_key]
            if not theirs_delta.any():
                continue
            theirs_changed.add(ours_key)
            ours_delta = ours_now[ours_key] - ours_before[ours_key]
            assert relative_error(ours_delta, theirs_delta) < 1e-5, ours_key
            assert relative_error(ours_now[ours_key], value) < 1e-6, ours_key
    assert changed_keys(parts, ours_before) == theirs_changed
    assert len(theirs_changed) == len(modules)
    assert {part for part, _ in theirs_changed} == set(parts)  # the text encoders were patched too


@pytest.mark.parametrize("lora_name, part, key", [
    ("lora_unet_input_blocks_3_1_transformer_blocks_1_attn2_to_k", "unet",
     "input_blocks.3.1.transformer_blocks.1.attn2.to_k.weight"),
    ("lora_unet_down_blocks_1_attentions_0_transformer_blocks_1_attn2_to_k", "unet",
     "input_blocks.3.1.transformer_blocks.1.attn2.to_k.weight"),
    ("unet.down_blocks.1.attentions.0.transformer_blocks.1.attn2.processor.to_k", "unet",
     "input_blocks.3.1.transformer_blocks.1.attn2.to_k.weight"),
    ("down_blocks.1.attentions.0.transformer_blocks.0.attn1.processor.to_out", "unet",
     "input_blocks.3.1.transformer_blocks.0.attn1.to_out.0.weight"),
    ("lycoris_mid_block_attentions_0_proj_in", "unet", "middle_block.1.proj_in.weight"),
    ("diffusion_model.output_blocks.1.2.conv", "unet", "output_blocks.1.2.conv.weight"),
    ("lora_unet_up_blocks_0_upsamplers_0_conv", "unet", "output_blocks.1.2.conv.weight"),
    ("lora_unet_down_blocks_0_downsamplers_0_conv", "unet", "input_blocks.2.0.op.weight"),
    ("lora_unet_up_blocks_1_resnets_1_conv_shortcut", "unet", "output_blocks.3.0.skip_connection.weight"),
    ("lora_unet_time_embedding_linear_1", "unet", "time_embed.0.weight"),
    ("lora_unet_add_embedding_linear_2", "unet", "label_emb.0.2.weight"),
    ("lora_unet_conv_in", "unet", "input_blocks.0.0.weight"),
    ("lora_unet_out_2", "unet", "out.2.weight"),
    ("lora_te1_text_model_encoder_layers_1_mlp_fc2", "clip_l", "text_model.encoder.layers.1.mlp.fc2.weight"),
    ("text_encoder.encoder.layers.0.mlp.fc1", "clip_l", "text_model.encoder.layers.0.mlp.fc1.weight"),
    ("conditioner.embedders.0.transformer.text_model.encoder.layers.0.self_attn.q_proj", "clip_l",
     "text_model.encoder.layers.0.self_attn.q_proj.weight"),
    ("text_encoder_2.text_model.encoder.layers.0.self_attn.to_out", "clip_g",
     "text_model.encoder.layers.0.self_attn.out_proj.weight"),
    ("text_encoders.clip_g.transformer.text_model.encoder.layers.1.self_attn.v_proj", "clip_g",
     "text_model.encoder.layers.1.self_attn.v_proj.weight"),
    ("lora_te2_text_projection", "clip_g", "text_projection.weight"),
    ("conditioner.embedders.1.model.transformer.resblocks.1.mlp.c_proj", "clip_g",
     "text_model.encoder.layers.1.mlp.fc2.weight"),
])
def test_key_map_dialects(lora_name, part, key, sdxl_key_map):
    """Spot checks of the names not exercised by the oracle files (tiny SDXL: levels (1, 2),
    attention depth (0, 2), one res block per level)."""
    (target,) = sdxl_key_map[lora_name]
    assert (target.part, target.key) == (part, key)
    assert "lora_te_text_model_encoder_layers_0_mlp_fc1" not in sdxl_key_map  # SD1.x's CLIP-L prefix


@pytest.fixture(scope="module")
def sdxl_key_map(sdxl_checkpoint):
    return checkpoint_lora_key_map("sdxl", **our_parts(sdxl_checkpoint, "sdxl"))


# ---------------------------------------------------------------------------------------------
# patcher state: exact restore, one-set cache, reports


@pytest.fixture(scope="module")
def sdxl_checkpoint(workdir):
    return write_tiny_checkpoint(workdir / "sdxl.safetensors", tiny_sdxl_spec(), seed=11)


def test_restore_is_bit_exact_after_100_cycles_and_stacks_never_accumulate(sdxl_checkpoint, workdir):
    parts = our_parts(sdxl_checkpoint, "sdxl")
    parts["unet"].to(torch.bfloat16)  # low precision: rounding must not leak into the originals
    lora_a = write_tiny_lora(workdir / "cycle-a.safetensors", sdxl_checkpoint, seed=1, convs=True)
    # a subset of the modules keeps 100 cycles fast; restore does not depend on which weights
    lora_b = {key: value for key, value in tiny_lora_state_dict(sdxl_checkpoint, seed=2, format="peft").items()
              if ".attn1." in key or ".layers.0." in key}
    original = snapshot(parts)
    patcher = LoraPatcher(parts, checkpoint_lora_key_map("sdxl", **parts))
    sets = [[(lora_b, 0.8, 0.5)], [(lora_b, -1.3, 1.0), (lora_a, 0.6, 0.6)], [(lora_b, 2.0, 0.0)]]
    for cycle in range(100):
        patcher.apply(sets[cycle % 3])
        if cycle % 2:  # half of the switches go through an explicit restore
            patcher.restore()
            assert not changed_keys(parts, original)
    patcher.restore()
    assert not changed_keys(parts, original)
    for key, value in snapshot(parts).items():
        assert value.dtype == original[key].dtype

    # A -> B leaves exactly what B alone leaves on a fresh model
    patcher.apply(sets[0])
    patcher.apply(sets[1])
    fresh = our_parts(sdxl_checkpoint, "sdxl")
    fresh["unet"].to(torch.bfloat16)
    LoraPatcher(fresh, checkpoint_lora_key_map("sdxl", **fresh)).apply(sets[1])
    fresh_now, ours_now = snapshot(fresh), snapshot(parts)
    assert all(torch.equal(ours_now[key], value) for key, value in fresh_now.items())


def test_same_set_again_is_a_cache_hit(sdxl_checkpoint, workdir):
    parts = our_parts(sdxl_checkpoint, "sdxl")
    key_map = checkpoint_lora_key_map("sdxl", **parts)
    lora = write_tiny_lora(workdir / "cache.safetensors", sdxl_checkpoint, seed=4)
    unet_patcher = LoraPatcher({"unet": parts["unet"]}, key_map)
    clip_patcher = LoraPatcher({"clip_l": parts["clip_l"], "clip_g": parts["clip_g"]}, key_map)

    first = unet_patcher.apply([(lora, 0.5, 1.0)])
    written = unet_patcher.weights_written
    assert written == first[0].patched_keys > 0
    patched = snapshot(parts)
    assert unet_patcher.apply([(lora, 0.5, 1.0)]) == first
    assert unet_patcher.apply([(lora, 0.5, 0.3)]) == first  # the clip strength does not concern the UNet
    assert unet_patcher.weights_written == written and not changed_keys(parts, patched)
    unet_patcher.apply([(lora, 0.6, 1.0)])
    assert unet_patcher.weights_written == 2 * written

    clip_patcher.apply([(lora, 0.5, 1.0)])
    clip_written = clip_patcher.weights_written
    clip_patcher.apply([(lora, 0.9, 1.0)])  # only the model strength changed
    assert clip_patcher.weights_written == clip_written
    # no key of either part is reported unmatched: each patcher knows the whole checkpoint
    assert clip_patcher.reports[0].unmatched == ()


def test_unmatched_and_mismatched_keys_are_reported(sdxl_checkpoint, workdir):
    parts = our_parts(sdxl_checkpoint, "sdxl")
    original = snapshot(parts)
    lora = tiny_lora_state_dict(sdxl_checkpoint, seed=6)
    junk = {
        "lora_unet_no_such_block_to_q.lora_down.weight": torch.ones(4, 8),
        "lora_unet_no_such_block_to_q.lora_up.weight": torch.ones(8, 4),
        "lora_unet_no_such_block_to_q.alpha": torch.tensor(4.0),
        "lora_te1_text_model_encoder_layers_0_mlp_fc1.a1.weight": torch.ones(2, 2),  # GLoRA: not implemented
        "lora_te2_text_model_encoder_layers_0_layer_norm1.lora_up.weight": torch.ones(48, 4),  # no down
        "something_else": torch.ones(1),
    }
    wrong_width = "lora_unet_output_blocks_0_1_proj_in"  # the right name with the wrong size
    junk.update({wrong_width + ".lora_down.weight": torch.ones(4, 7), wrong_width + ".lora_up.weight": torch.ones(64, 4)})
    patcher = LoraPatcher(parts, checkpoint_lora_key_map("sdxl", **parts))
    (report,) = patcher.apply([({**lora, **junk}, 1.0, 1.0)])
    assert set(report.unmatched) == {key for key in junk if not key.startswith(wrong_width)}
    assert set(report.mismatched) == {wrong_width + ".lora_down.weight", wrong_width + ".lora_up.weight"}
    modules = lora_modules(lora)
    assert report.patched_keys == len(modules) and len(changed_keys(parts, original)) == len(modules)

    # Fooocus skips a file for a model when more than 12 of its keys patch nothing there
    sd15_checkpoint = write_tiny_checkpoint(workdir / "sd15-for-refiner.safetensors", tiny_sd15_spec(), seed=1)
    refiner_path = write_tiny_checkpoint(workdir / "refiner.safetensors", tiny_sdxl_refiner_spec(), seed=2)
    loaded = load_checkpoint(refiner_path)
    refiner = {"unet": loaded.unet,
               "clip_g": load_clip_text_model(strip_prefix(loaded.text_encoder_state, "conditioner.embedders.0.model."),
                                              GELU)}
    refiner_original = snapshot(refiner)
    refiner_patcher = LoraPatcher(refiner, checkpoint_lora_key_map("sdxl_refiner", **refiner))
    (skipped,) = refiner_patcher.apply([(tiny_lora_state_dict(sd15_checkpoint, seed=1), 1.0, 1.0)], max_rejected=12)
    assert skipped.skipped and len(skipped.unmatched) + len(skipped.mismatched) > 12
    assert skipped.patched_keys == 0 and not changed_keys(refiner, refiner_original)


def test_demo_writer_matches_the_default_tiny_sdxl(workdir):
    path = write_tiny_sdxl_lora(workdir / "loras" / "tiny-sdxl-lora.safetensors", seed=0)
    checkpoint = write_tiny_checkpoint(workdir / "demo-sdxl.safetensors", tiny_sdxl_spec(), seed=1)
    parts = our_parts(checkpoint, "sdxl")
    (report,) = LoraPatcher(parts, checkpoint_lora_key_map("sdxl", **parts)).apply([(path, 1.0, 1.0)])
    assert report.unmatched == () and report.mismatched == () and report.patched_keys > 0
    assert write_tiny_sdxl_lora(workdir / "again.safetensors", read_state_dict(checkpoint), seed=0).exists()


# ---------------------------------------------------------------------------------------------
# adapter maths on a toy module, against PEFT and against composed convolutions


class Toy(nn.Module):
    def __init__(self):
        super().__init__()
        generator = torch.Generator().manual_seed(0)
        self.lin = nn.Linear(12, 10)
        self.conv = nn.Conv2d(6, 8, 3, padding=1)
        with torch.no_grad():
            for parameter in self.parameters():
                parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.3)
        self.requires_grad_(False)


TOY_KEY_MAP = {
    "lora_unet_lin": (LoraTarget("unet", "lin.weight", (10, 12), has_bias=True),),
    "lora_unet_conv": (LoraTarget("unet", "conv.weight", (8, 6, 3, 3), has_bias=True),),
}


def peft_layer(config, base: nn.Module, seed: int):
    """A PEFT adapter layer around a copy of `base`, its adapter weights drawn at random."""
    holder = nn.Module()
    holder.target = copy.deepcopy(base)
    layer = peft.inject_adapter_in_model(config, holder).target
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, parameter in layer.named_parameters():
            if ".default" in name:
                parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.3 + 0.1)
    return layer


def adapter_tensors(layer, prefix: str) -> dict[str, torch.Tensor]:
    """PEFT's adapter parameters under LyCORIS/kohya names (`<prefix>.hada_w1_a`, ...)."""
    renames = {"lora_A": "lora_down.weight", "lora_B": "lora_up.weight", "lora_magnitude_vector": "dora_scale"}
    out = {}
    for name, parameter in layer.named_parameters():
        if ".default" in name:
            role = name.split(".default")[0]
            out[f"{prefix}.{renames.get(role, role)}"] = parameter.detach().clone()
    return out


@pytest.mark.parametrize("module, config", [
    ("lin", lambda: peft.LoHaConfig(r=3, alpha=5, target_modules=["target"])),
    ("conv", lambda: peft.LoHaConfig(r=3, alpha=5, target_modules=["target"])),  # Tucker cores
    ("lin", lambda: peft.LoKrConfig(r=2, alpha=3, target_modules=["target"])),
    ("lin", lambda: peft.LoKrConfig(r=2, alpha=3, decompose_both=True, target_modules=["target"])),
    # r=1 keeps w2 low-rank: with two whole factors PEFT still scales by alpha/r, LyCORIS does not
    ("conv", lambda: peft.LoKrConfig(r=1, alpha=3, target_modules=["target"])),
    ("conv", lambda: peft.LoKrConfig(r=1, alpha=3, use_effective_conv2d=True, target_modules=["target"])),
], ids=["loha-linear", "loha-conv-tucker", "lokr-linear", "lokr-linear-both-low-rank", "lokr-conv",
        "lokr-conv-tucker"])
def test_loha_and_lokr_match_peft(module, config):
    toy = Toy()
    cfg = config()
    layer = peft_layer(cfg, getattr(toy, module), seed=7)
    lora = adapter_tensors(layer, f"lora_unet_{module}")
    lora[f"lora_unet_{module}.alpha"] = torch.tensor(float(cfg.alpha))
    original = getattr(toy, module).weight.clone()
    LoraPatcher({"unet": toy}, TOY_KEY_MAP).apply([(lora, 0.75, 1.0)])
    assert not hasattr(layer, "lokr_w2") or "default" not in layer.lokr_w2  # scale conventions agree
    expected = original + 0.75 * layer.get_delta_weight("default").detach()
    assert relative_error(getattr(toy, module).weight, expected) < 1e-6


@pytest.mark.parametrize("module", ["lin", "conv"])
def test_dora_matches_peft_merge(module):
    toy = Toy()
    layer = peft_layer(peft.LoraConfig(r=3, lora_alpha=5, use_dora=True, target_modules=["target"]),
                       getattr(toy, module), seed=8)
    lora = adapter_tensors(layer, f"lora_unet_{module}")
    lora[f"lora_unet_{module}.alpha"] = torch.tensor(5.0)
    weight = getattr(toy, module).weight
    scale_key = f"lora_unet_{module}.dora_scale"
    lora[scale_key] = lora[scale_key].reshape(weight.shape[0], *[1] * (weight.dim() - 1))  # LyCORIS wd_on_out
    LoraPatcher({"unet": toy}, TOY_KEY_MAP).apply([(lora, 1.0, 1.0)])
    layer.merge()
    assert relative_error(weight, layer.base_layer.weight.detach()) < 1e-6


def test_locon_kernels_equal_the_composed_convolutions():
    toy = Toy()
    generator = torch.Generator().manual_seed(3)
    down, mid, up = (torch.randn(shape, generator=generator) for shape in ((4, 6, 1, 1), (4, 4, 3, 3), (8, 4, 1, 1)))
    x = torch.randn(2, 6, 7, 5, generator=generator)
    for tensors, compose in [
        ({"lora_down.weight": torch.randn(4, 6, 3, 3, generator=generator), "lora_up.weight": up},
         lambda t: nn.functional.conv2d(nn.functional.conv2d(x, t["lora_down.weight"], padding=1), up)),
        ({"lora_down.weight": down, "lora_mid.weight": mid, "lora_up.weight": up},  # Tucker core
         lambda t: nn.functional.conv2d(nn.functional.conv2d(nn.functional.conv2d(x, down), mid, padding=1), up)),
    ]:
        original = toy.conv.weight.clone()
        patcher = LoraPatcher({"unet": toy}, TOY_KEY_MAP)
        lora = {f"lora_unet_conv.{name}": value for name, value in tensors.items()}
        lora["lora_unet_conv.alpha"] = torch.tensor(2.0)
        patcher.apply([(lora, 0.5, 1.0)])
        delta = toy.conv.weight - original
        expected = compose(tensors) * (0.5 * 2.0 / 4)
        assert relative_error(nn.functional.conv2d(x, delta, padding=1), expected) < 1e-5
        patcher.restore()


def test_diff_set_and_full_lokr_patches():
    toy = Toy()
    generator = torch.Generator().manual_seed(4)
    diff, diff_b, value = torch.randn(10, 12, generator=generator), torch.randn(10, generator=generator), torch.randn(8, 6, 3, 3, generator=generator)
    w1, w2 = torch.randn(2, 3, generator=generator), torch.randn(5, 4, generator=generator)
    original = {name: tensor.clone() for name, tensor in toy.state_dict().items()}
    patcher = LoraPatcher({"unet": toy}, TOY_KEY_MAP)
    patcher.apply([({"lora_unet_lin.diff": diff, "lora_unet_lin.diff_b": diff_b, "lora_unet_conv.set_weight": value}, 0.5, 1.0),
                   ({"lora_unet_lin.lokr_w1": w1, "lora_unet_lin.lokr_w2": w2, "lora_unet_lin.alpha": torch.tensor(9.0)},
                    2.0, 1.0)])
    # two whole Kronecker factors: LyCORIS ignores alpha (scale 1)
    assert torch.allclose(toy.lin.weight, original["lin.weight"] + 0.5 * diff + 2.0 * torch.kron(w1, w2), atol=1e-6)
    assert torch.allclose(toy.lin.bias, original["lin.bias"] + 0.5 * diff_b, atol=1e-6)
    assert torch.equal(toy.conv.weight, value)  # "set" ignores the strength
    patcher.restore()
    assert all(torch.equal(toy.state_dict()[name], tensor) for name, tensor in original.items())


def test_open_clip_fused_qkv_lora_patches_the_q_k_v_slices():
    """An SGM-style LoRA on CLIP-G's fused `attn.in_proj` equals patching the OpenCLIP weights and
    converting them afterwards."""
    open_clip = random_clip_g_state_dict(generator=torch.Generator().manual_seed(5))
    clip_g = load_clip_text_model({k: v.clone() for k, v in open_clip.items()}, GELU)
    generator = torch.Generator().manual_seed(6)
    width = open_clip["transformer.resblocks.1.attn.in_proj_weight"].shape[1]
    down, up = torch.randn(4, width, generator=generator), torch.randn(3 * width, 4, generator=generator)
    prefix = "conditioner.embedders.1.model.transformer.resblocks.1."
    lora = {prefix + "attn.in_proj.lora_down.weight": down, prefix + "attn.in_proj.lora_up.weight": up,
            prefix + "attn.in_proj.alpha": torch.tensor(2.0),
            prefix + "mlp.c_fc.diff_b": torch.ones(open_clip["transformer.resblocks.1.mlp.c_fc.bias"].shape)}
    patcher = LoraPatcher({"clip_g": clip_g}, checkpoint_lora_key_map("sdxl", clip_g=clip_g))
    (report,) = patcher.apply([(lora, 1.0, 0.8)])
    assert report.unmatched == () and report.mismatched == ()

    open_clip["transformer.resblocks.1.attn.in_proj_weight"] += 0.8 * 0.5 * up @ down
    open_clip["transformer.resblocks.1.mlp.c_fc.bias"] += 0.8
    expected = open_clip_to_hf(open_clip)
    for key, value in clip_g.state_dict().items():
        assert torch.allclose(value, expected[key], atol=1e-6), key


def test_lora_file_round_trip_uses_file_identity(workdir):
    """A LoRA file rewritten in place (new size/mtime) is re-read, not served from the cache."""
    toy = Toy()
    path = workdir / "toy.safetensors"
    save_file({"lora_unet_lin.diff": torch.ones(10, 12)}, str(path))
    patcher = LoraPatcher({"unet": toy}, TOY_KEY_MAP)
    original = toy.lin.weight.clone()
    patcher.apply([(path, 1.0, 1.0)])
    assert torch.allclose(toy.lin.weight, original + 1)
    save_file({"lora_unet_lin.diff": torch.full((10, 12), 2.0), "lora_unet_lin.diff_b": torch.ones(10)}, str(path))
    patcher.apply([(path, 1.0, 1.0)])
    assert torch.allclose(toy.lin.weight, original + 2)
