"""Fooocus presets (spec 13) and performance modes (spec 1)."""

import json

import pytest

from nodes.fooocus.performance import (
    PERFORMANCE_NAMES,
    SamplingSettings,
    apply_performance,
    performance_lora_filenames,
    performance_mode,
    plan_steps,
)
from nodes.fooocus.presets import (
    LoraSlot,
    PresetLibrary,
    parse_aspect_ratio,
    resolve_base_model,
    startup_preset,
)
from nodes.fooocus.styles import StyleLibrary

JUGGERNAUT = "juggernautXL_v8Rundiffusion.safetensors"


@pytest.fixture(scope="module")
def library():
    return PresetLibrary.load()


def test_default_preset_matches_fooocus_defaults(library):
    p = library.get()
    assert p.name == "default"
    assert p.base_model == JUGGERNAUT
    assert p.refiner_model == "None" and p.refiner_switch == 0.5
    assert p.loras == (LoraSlot(True, "sd_xl_offset_example-lora_1.0.safetensors", 0.1),) + (LoraSlot(True, "None", 1.0),) * 4
    assert p.enabled_loras() == [("sd_xl_offset_example-lora_1.0.safetensors", 0.1)]
    assert (p.cfg_scale, p.sharpness) == (4.0, 2.0)
    assert (p.sampler, p.scheduler, p.performance) == ("dpmpp_2m_sde_gpu", "karras", "Speed")
    assert p.styles == ("Fooocus V2", "Fooocus Enhance", "Fooocus Sharp")
    assert p.aspect_ratio == "1152*896" and p.width_height == (1152, 896)
    assert p.vae == "Default (model)" and p.overwrite_step == -1 and p.inpaint_engine == "v2.6"
    assert p.downloads("checkpoint")[JUGGERNAUT].endswith("/" + JUGGERNAUT)


@pytest.mark.parametrize(
    "name, model, cfg, performance, styles, aspect",
    [
        ("realistic", "realisticStockPhoto_v20.safetensors", 3.0, "Speed", ("Fooocus V2", "Fooocus Photograph", "Fooocus Negative"), (896, 1152)),
        ("anime", "animaPencilXL_v500.safetensors", 6.0, "Speed", ("Fooocus V2", "Fooocus Semi Realistic", "Fooocus Masterpiece"), (896, 1152)),
        ("lcm", JUGGERNAUT, 4.0, "Extreme Speed", ("Fooocus V2", "Fooocus Enhance", "Fooocus Sharp"), (1152, 896)),
        ("lightning", JUGGERNAUT, 4.0, "Lightning", ("Fooocus V2", "Fooocus Enhance", "Fooocus Sharp"), (1152, 896)),
        ("playground_v2.5", "playground-v2.5-1024px-aesthetic.fp16.safetensors", 2.0, "Speed", ("Fooocus V2",), (1024, 1024)),
        ("pony_v6", "ponyDiffusionV6XL.safetensors", 7.0, "Speed", ("Fooocus Pony",), (896, 1152)),
        ("sai", "sd_xl_base_1.0_0.9vae.safetensors", 7.0, "Speed", ("Fooocus V2", "Fooocus Cinematic"), (1152, 896)),
    ],
)
def test_shipped_presets(library, name, model, cfg, performance, styles, aspect):
    p = library.get(name)
    assert (p.base_model, p.cfg_scale, p.performance, p.styles, p.width_height) == (model, cfg, performance, styles, aspect)
    assert len(p.loras) == 5
    assert StyleLibrary.load().unknown(p.styles) == []  # every preset style exists


def test_preset_specifics(library):
    assert library.get("realistic").enabled_loras() == [("SDXL_FILM_PHOTOGRAPHY_STYLE_V1.safetensors", 0.25)]
    assert library.get("realistic").negative_prompt != ""
    assert library.get("anime").enabled_loras() == []
    sai = library.get("sai")
    assert (sai.refiner_model, sai.refiner_switch) == ("sd_xl_refiner_1.0_0.9vae.safetensors", 0.75)
    assert sai.enabled_loras() == [("sd_xl_offset_example-lora_1.0.safetensors", 0.5)]
    pg = library.get("playground_v2.5")
    assert (pg.sampler, pg.scheduler, pg.inpaint_engine) == ("dpmpp_2m", "edm_playground_v2.5", "None")
    pony = library.get("pony_v6")
    assert (pony.vae, pony.inpaint_engine) == ("ponyDiffusionV6XL_vae.safetensors", "None")
    assert library.names() == ["anime", "default", "lcm", "lightning", "playground_v2.5", "pony_v6", "realistic", "sai"]


def test_user_presets_folder(tmp_path):
    (tmp_path / "mine.json").write_text(json.dumps({
        "default_model": "my.safetensors",
        "default_loras": [["old_style.safetensors", 0.7]],  # pre-2.5 two-element slots
        "default_aspect_ratio": "1024×1024",
        "default_styles": ["SAI Anime"],
    }))
    (tmp_path / "anime.json").write_text(json.dumps({"default_model": "replaced.safetensors"}))
    lib = PresetLibrary.load([tmp_path])
    mine = lib.get("mine")
    assert mine.base_model == "my.safetensors"
    assert mine.loras[0] == LoraSlot(True, "old_style.safetensors", 0.7) and len(mine.loras) == 5
    assert mine.aspect_ratio == "1024*1024" and mine.styles == ("SAI Anime",)
    assert (mine.cfg_scale, mine.sampler) == (4.0, "dpmpp_2m_sde_gpu")  # missing keys from "default"
    assert mine.previous_base_models == ()  # not inherited from the default preset
    assert lib.get("anime").base_model == "replaced.safetensors"  # user file replaces ours
    assert lib.get("anime").cfg_scale == 4.0  # ... whole: other keys now come from "default"
    with pytest.raises(KeyError, match="mine"):
        lib.get("nope")


def test_startup_overrides(library):
    assert startup_preset(library).base_model == JUGGERNAUT
    assert startup_preset(library, "anime").name == "anime"
    assert startup_preset(library, "anime", default_model="x.safetensors").base_model == "x.safetensors"
    # An older default the user already has is kept instead of the new one.
    have = ["juggernautXL_version6Rundiffusion.safetensors", "other.safetensors"]
    assert startup_preset(library, available_checkpoints=have).base_model == "juggernautXL_version6Rundiffusion.safetensors"
    assert startup_preset(library, available_checkpoints=have + [JUGGERNAUT]).base_model == JUGGERNAUT
    assert resolve_base_model(library.get(), have, always_download_new_model=True) == JUGGERNAUT
    assert startup_preset(library, available_checkpoints=[]).base_model == JUGGERNAUT


def test_parse_aspect_ratio():
    assert parse_aspect_ratio("1152*896") == (1152, 896)
    assert parse_aspect_ratio("896×1152 ∣ 7:9") == (896, 1152)
    with pytest.raises(ValueError):
        parse_aspect_ratio("wide")


# --- performance -------------------------------------------------------------------------

@pytest.mark.parametrize(
    "name, steps, uov, lora, sampler, scheduler",
    [
        ("Quality", 60, 36, None, None, None),
        ("Speed", 30, 18, None, None, None),
        ("Extreme Speed", 8, 8, ("sdxl_lcm_lora.safetensors", 1.0), "lcm", "lcm"),
        ("Lightning", 4, 4, ("sdxl_lightning_4step_lora.safetensors", 1.0), "euler", "sgm_uniform"),
        ("Hyper-SD", 4, 4, ("sdxl_hyper_sd_4step_lora.safetensors", 0.8), "dpmpp_sde_gpu", "karras"),
    ],
)
def test_performance_modes(name, steps, uov, lora, sampler, scheduler):
    mode = performance_mode(name)
    assert (mode.steps, mode.uov_steps, mode.lora, mode.sampler, mode.scheduler) == (steps, uov, lora, sampler, scheduler)
    user = SamplingSettings(performance=name, sampler="euler_ancestral", scheduler="normal", cfg_scale=6.0,
                            sharpness=3.0, adaptive_cfg=5.0, adm_scaler_positive=1.2, adm_scaler_negative=0.9,
                            adm_scaler_end=0.4, refiner_model="ref.safetensors", refiner_switch=0.6)
    out = apply_performance(user)
    assert (out.steps, out.uov_steps, out.performance_lora) == (steps, uov, lora)
    if lora is None:  # Quality / Speed change only the step count
        assert out == SamplingSettings(**{**user.__dict__, "steps": steps, "uov_steps": uov})
    else:
        assert (out.sampler, out.scheduler) == (sampler, scheduler)
        assert (out.cfg_scale, out.sharpness, out.adaptive_cfg) == (1.0, 0.0, 1.0)
        assert (out.adm_scaler_positive, out.adm_scaler_negative, out.adm_scaler_end) == (1.0, 1.0, 0.0)
        assert (out.refiner_model, out.refiner_switch) == ("None", 1.0)


def test_performance_names_and_errors():
    assert PERFORMANCE_NAMES == ("Quality", "Speed", "Extreme Speed", "Lightning", "Hyper-SD")
    assert performance_lora_filenames() == (
        "sdxl_lcm_lora.safetensors", "sdxl_lightning_4step_lora.safetensors", "sdxl_hyper_sd_4step_lora.safetensors")
    with pytest.raises(ValueError, match="Speed"):
        performance_mode("Turbo")


def test_step_plan():
    speed = performance_mode("Speed")
    plan = plan_steps(speed, refiner_switch=0.5)
    assert (plan.steps, plan.switch) == (30, 15)
    plan = plan_steps(speed, refiner_switch=0.5, upscale=True)
    assert (plan.steps, plan.switch) == (18, 9)
    # overwrite_step replaces the count; the switch still comes from the mode's count
    plan = plan_steps(speed, refiner_switch=0.8, overwrite_step=10)
    assert (plan.steps, plan.switch) == (10, 24)
    plan = plan_steps(performance_mode("Quality"), refiner_switch=0.5, overwrite_switch=0.3)
    assert (plan.steps, plan.switch) == (60, 18)
