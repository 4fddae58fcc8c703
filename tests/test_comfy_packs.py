"""ComfyUI custom-node packs written against ComfyUI's modules load and run in a real server.

The packs in fixtures/custom_nodes are ours (no third-party code), each using the ComfyUI module
surface the way real packs do: V1 (with a sub-folder without __init__.py), V3 (comfy_api.latest,
async execute), routes + WEB_DIRECTORY, send_sync progress, a missing dependency, and a
pip install at import.
"""
import asyncio
import importlib
import json
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

import comfy_compat
from comfy_compat.install_guard import InstallRefused, installs_packages
from nodes.model_services import make_model_manager
from server.app import App
from server.config import AppConfig
from waiting import DEADLINE_S, HOLD_DELAY, HOLD_STEPS, is_event, until, until_message

PACKS = Path(__file__).parent / "fixtures" / "custom_nodes"
V1_CLASSES = ("V1FolderReport", "V1DeviceReport", "V1ScaleWithUtils", "V1MaskFromImage", "V1LatentViaNodes",
              "V1CountWithProgress", "V1WaitForInterrupt", "V1QuickSample", "V1ExpandCounts")
ALL_CLASSES = V1_CLASSES + ("V3Brighten", "V3AsyncLabel", "RouteGreetings", "SignalProgress")


@pytest.fixture(scope="module")
def model_roots(tmp_path_factory):
    """Our models folder with a tiny (random) SD1.5 checkpoint and its tokenizer, and a ComfyUI
    models folder as an extra root, so folder_paths must answer across roots. Written once."""
    from models.tiny import write_tiny_sd15
    from models.tiny_text import write_tiny_tokenizer
    from nodes.loaders import TINY_TOKENIZER_DIR

    root = tmp_path_factory.mktemp("pack_models")
    models, comfy_models = root / "models", root / "comfyui" / "models"
    write_tiny_sd15(models / "checkpoints" / "base" / "tiny.safetensors")
    write_tiny_tokenizer(models / TINY_TOKENIZER_DIR)
    (comfy_models / "loras").mkdir(parents=True)
    (comfy_models / "loras" / "extra_lora.safetensors").write_bytes(b"0")
    (root / "pack_loras").mkdir()  # v1_utils adds it to loras at import
    (root / "pack_loras" / "pack_lora.safetensors").write_bytes(b"0")
    return models, comfy_models


@pytest.fixture
def pack_app_factory(tmp_path, model_roots):
    """An App with the real built-in nodes and our fixture packs."""
    models, comfy_models = model_roots

    def build(**overrides) -> App:
        options = {"custom_nodes_dir": PACKS, **overrides}
        config = AppConfig(models_dir=models, output_dir=tmp_path / "output", input_dir=tmp_path / "input",
                           temp_dir=tmp_path / "temp", cpu=True, comfyui_models=(comfy_models,), **options)
        return App(config, model_manager=make_model_manager(config))

    yield build
    if comfy_compat.is_bound():  # Apps never served are never shut down: leave no binding to later tests
        comfy_compat.unbind(comfy_compat.bound().app)


@pytest.fixture
async def served(aiohttp_client, pack_app_factory):
    app = pack_app_factory()
    client = await aiohttp_client(app.make_web_app())
    return app, client


async def run_prompt(client, prompt, client_id=None):
    body = {"prompt": prompt, **({"client_id": client_id} if client_id else {})}
    response = await client.post("/prompt", json=body)
    assert response.status == 200, await response.text()
    prompt_id = (await response.json())["prompt_id"]

    async def finished():
        history = await (await client.get(f"/history/{prompt_id}")).json()
        return history.get(prompt_id)
    return prompt_id, await until(finished, what=f"prompt {prompt_id} in /history")


def workflow():
    """Every fixture class in one workflow: V1 nodes feed V3 nodes and back."""
    return {
        "latent": {"class_type": "V1LatentViaNodes", "inputs": {"width": 32, "height": 24}},
        "scale": {"class_type": "V1ScaleWithUtils",
                  "inputs": {"image": ["latent", 1], "upscale_method": "bicubic", "width": 16, "height": 12}},
        "mask": {"class_type": "V1MaskFromImage", "inputs": {"image": ["scale", 0]}},
        "bright": {"class_type": "V3Brighten",
                   "inputs": {"image": ["scale", 0], "amount": 0.5, "clamp": "yes", "mask": ["mask", 0]}},
        "preview": {"class_type": "PreviewImage", "inputs": {"images": ["bright", 0]}},
        "count": {"class_type": "V1CountWithProgress", "inputs": {"steps": 3}},
        "label": {"class_type": "V3AsyncLabel", "inputs": {"text": "w", "width": ["bright", 1]}},
        "label_count": {"class_type": "V3AsyncLabel", "inputs": {"text": "count", "width": ["count", 0]}},
        "signal": {"class_type": "SignalProgress", "inputs": {"count": 2}},
        "label_signal": {"class_type": "V3AsyncLabel", "inputs": {"text": "signal", "width": ["signal", 0]}},
        "folders": {"class_type": "V1FolderReport", "inputs": {"ckpt_name": "base/tiny.safetensors",
                                                                "prefix": "packs/report"}},
        "devices": {"class_type": "V1DeviceReport", "inputs": {"sampler": "euler", "scheduler": "karras"}},
        "greetings": {"class_type": "RouteGreetings", "inputs": {"separator": "+"}},
        "sample": {"class_type": "V1QuickSample", "inputs": {"ckpt_name": "base/tiny.safetensors", "text": "a cat",
                                                               "seed": 3, "steps": 2}},
        "saved": {"class_type": "SaveImage", "inputs": {"images": ["sample", 0], "filename_prefix": "packs/sample"}},
        "sample_report": {"class_type": "V3AsyncLabel", "inputs": {"text": ["sample", 1], "width": 0}},
        "expand": {"class_type": "V1ExpandCounts", "inputs": {"steps": 4}},
        "label_expand": {"class_type": "V3AsyncLabel", "inputs": {"text": ["expand", 0], "width": 1}},
    }


async def test_every_class_in_object_info_and_failed_packs_reported(served):
    app, client = served
    info = await (await client.get("/object_info")).json()
    assert set(ALL_CLASSES) <= set(info)
    report = info["V1FolderReport"]
    assert report["input"]["required"]["ckpt_name"] == [["base/tiny.safetensors"]]
    assert report["display_name"] == "Folder report (v1_utils)" and report["output_node"] is True
    assert report["python_module"] == "custom_nodes.v1_utils"
    scale = info["V1ScaleWithUtils"]["input"]["required"]
    assert scale["upscale_method"] == [["nearest-exact", "bilinear", "area", "bicubic", "lanczos"]]
    assert scale["width"] == ["INT", {"default": 64, "min": 1, "max": 16384}]
    assert info["V1DeviceReport"]["input"]["required"]["sampler"][0][:2] == ["euler", "euler_ancestral"]
    assert info["V1DeviceReport"]["output"] == ["STRING", "CONDITIONING"]
    bright = info["V3Brighten"]
    assert bright["input"] == {"required": {"image": ["IMAGE"],
                                            "amount": ["FLOAT", {"default": 0.1, "min": -1.0, "max": 1.0,
                                                                 "step": 0.05, "display": "slider"}],
                                            "clamp": [["yes", "no"], {"default": "yes"}]},
                               "optional": {"mask": ["MASK"]}}
    assert bright["output"] == ["IMAGE", "INT"] and bright["output_name"] == ["brightened", "width"]
    assert bright["display_name"] == "Brighten (V3)" and bright["category"] == "v3_pack"
    assert bright["description"] == "Adds an amount to every pixel." and bright["output_tooltips"] == ["", "pixels"]
    label = info["V3AsyncLabel"]
    assert label["output_node"] is True and set(label["input"]["hidden"].values()) == {"UNIQUE_ID", "PROMPT"}
    assert label["input"]["required"]["text"] == ["STRING", {"multiline": True, "default": "hello"}]
    assert info["SignalProgress"]["display_name"] == "Signal progress"
    # a directory a pack adds to one of our folders is listed by our own nodes too
    lora_names = info["LoraLoader"]["input"]["required"]["lora_name"][0]
    assert lora_names == ["extra_lora.safetensors", "pack_lora.safetensors"]
    assert info["SignalProgress"]["python_module"] == "custom_nodes.signal_pack"

    stats = (await (await client.get("/system_stats")).json())["custom_nodes"]
    assert set(stats["loaded"]) == {"v1_utils", "v3_pack", "route_pack", "signal_pack"}
    failed = stats["failed"]
    assert set(failed) == {"broken_import", "installs_at_import"}
    assert "a_module_nobody_installed" in failed["broken_import"]["error"]
    assert failed["broken_import"]["path"].endswith("broken_import.py")
    assert failed["installs_at_import"]["error"].startswith("InstallRefused")
    assert "--allow-custom-node-installs" in failed["installs_at_import"]["error"]
    assert "Traceback" in app.registry.pack_errors["broken_import"]["traceback"]


async def test_every_class_runs_and_folder_paths_answers_equal_our_folders(served):
    app, client = served
    assert (await client.post("/route_pack/greet", json={"name": "ada"})).status == 200
    prompt_id, entry = await run_prompt(client, workflow())
    assert entry["status"]["status_str"] == "success", entry["status"]
    outputs = entry["outputs"]
    assert outputs["label"]["text"] == [f"w:16:label:{len(workflow())}"]  # V3 width output, hidden values
    assert outputs["label_count"]["text"][0].startswith("count:3:")
    assert outputs["label_signal"]["text"][0].startswith("signal:2:")
    assert outputs["greetings"]["text"] == ["ada"]
    assert outputs["preview"]["images"][0]["type"] == "temp"
    assert outputs["saved"]["images"][0]["subfolder"] == "packs"
    sampled = json.loads(outputs["sample_report"]["text"][0].rsplit(":", 3)[0])
    assert sampled["tensors"] > 100 and sampled["latent"] == [1, 4, 8, 8] and sampled["image"] == [1, 64, 64, 3]
    assert sampled["x0_kept"] is True
    assert outputs["label_expand"]["text"][0].startswith("expanded:4:expand.")  # ran inside the expansion

    folders = json.loads(outputs["folders"]["text"][0])
    ours = app.folders
    assert folders["checkpoints"] == ours.list("checkpoints") == ["base/tiny.safetensors"]
    assert folders["loras_paths"] == [str(p) for p in ours.directories("loras")]
    assert any("comfyui" in p for p in folders["loras_paths"])  # the extra root is followed
    assert folders["loras_paths"][-1].endswith("pack_loras")  # and the pack's own directory
    assert folders["ckpt_path"] == str(ours.path("checkpoints", "base/tiny.safetensors"))
    assert folders["missing_path"] is None
    assert folders["models_dir"] == str(ours.root.resolve())
    assert folders["base_path"] == str(PACKS.resolve().parent)
    config = app.config
    assert folders["output"] == folders["output_directory"] == str(config.output_dir.resolve())
    assert folders["input"] == folders["input_directory"] == str(config.input_dir.resolve())
    assert folders["temp"] == str(config.temp_dir.resolve())
    assert folders["annotated"] == str(config.output_dir.resolve() / "cat.png")
    assert folders["annotated_default"] == str(config.input_dir.resolve() / "cat.png")
    assert folders["save_path"] == [str(config.output_dir.resolve() / "packs"), "report", 1, "packs"]
    assert folders["table_checkpoints"] == [str(p) for p in ours.directories("checkpoints")]
    assert folders["pack_folder"] == [str(ours.root.resolve() / "v1_utils_models")] and folders["in_table"]

    devices = json.loads(outputs["devices"]["text"][0])
    assert devices["device"] == devices["intermediate"] == devices["offload"] == "cpu"
    assert devices["cli_cpu"] is True and devices["cli_preview"] == "none"
    assert devices["interrupted"] is False and devices["sampler"] == "euler" and devices["scheduler"] == "karras"
    assert devices["renamed"] == ["other", "unet.a", "unet.b"] and devices["noise_repeatable"]
    assert devices["pillow_size"] == [4, 4] and devices["cond_strength"] == 0.5
    assert devices["vae_type"] == "VaeSocket" and devices["validates"] is True

    import folder_paths  # the same answers in-process, outside any node
    assert folder_paths.get_filename_list("loras") == ours.list("loras") == ["extra_lora.safetensors",
                                                                             "pack_lora.safetensors"]
    assert folder_paths.get_full_path("loras", "extra_lora.safetensors") == \
        str(ours.path("loras", "extra_lora.safetensors"))
    assert folder_paths.get_folder_paths("clip") == [str(p) for p in ours.directories("text_encoders")]

    import nodes  # ComfyUI's names on our nodes package: built-ins lazily, registered mappings live
    from nodes.loaders import CheckpointLoaderSimple
    assert nodes.CheckpointLoaderSimple is CheckpointLoaderSimple and nodes.MAX_RESOLUTION == 16384
    assert nodes.NODE_CLASS_MAPPINGS["V3Brighten"] is app.registry.get("V3Brighten").node_class
    assert nodes.NODE_DISPLAY_NAME_MAPPINGS["V3Brighten"] == "Brighten (V3)"
    with pytest.raises(TypeError):
        nodes.NODE_CLASS_MAPPINGS["Mine"] = object
    with pytest.raises(AttributeError, match="no built-in node class"):
        nodes.NoSuchComfyNode


async def test_progress_bar_and_send_sync_reach_the_websocket(served):
    app, client = served
    client_id = uuid.uuid4().hex
    ws = await client.ws_connect(f"/ws?clientId={client_id}")
    prompt = {"count": {"class_type": "V1CountWithProgress", "inputs": {"steps": 3}},
              "other": {"class_type": "V1CountWithProgress", "inputs": {"steps": 2, "report_as": "count.child"}},
              "c": {"class_type": "V3AsyncLabel", "inputs": {"text": "c", "width": ["other", 0]}},
              "signal": {"class_type": "SignalProgress", "inputs": {"count": 2}},
              "a": {"class_type": "V3AsyncLabel", "inputs": {"text": "a", "width": ["count", 0]}},
              "b": {"class_type": "V3AsyncLabel", "inputs": {"text": "b", "width": ["signal", 0]}}}
    response = await client.post("/prompt", json={"prompt": prompt, "client_id": client_id})
    prompt_id = (await response.json())["prompt_id"]
    seen, texts = [], []

    async def read():
        async for message in ws:
            if message.type.name == "BINARY":
                texts.append(message.data)
                continue
            data = json.loads(message.data)
            seen.append(data)
            if is_event("executing", prompt_id, node=None)(data):
                return
    await asyncio.wait_for(read(), DEADLINE_S)
    progress = [(m["data"]["value"], m["data"]["max"]) for m in seen
                if m["type"] == "progress" and m["data"]["node"] == "count"]
    assert progress == [(1, 3), (2, 3), (3, 3)]
    assert [(m["data"]["value"], m["data"]["max"]) for m in seen
            if m["type"] == "progress" and m["data"]["node"] == "count.child"] == [(1, 2), (2, 2)]
    signals = [m["data"] for m in seen if m["type"] == "signal_pack.progress"]
    assert signals == [{"node": "signal", "value": 1, "max": 2}, {"node": "signal", "value": 2, "max": 2}]
    # send_progress_text: ComfyUI's binary TEXT frame (event 3, node id length, node id, text)
    assert b"\x00\x00\x00\x03\x00\x00\x00\x06signaldone 2" in texts
    await ws.close()


async def test_interrupt_ends_a_pack_node_that_checks_for_it(served):
    app, client = served
    client_id = uuid.uuid4().hex
    ws = await client.ws_connect(f"/ws?clientId={client_id}")
    prompt = {"wait": {"class_type": "V1WaitForInterrupt",
                       "inputs": {"slices": HOLD_STEPS, "slice_seconds": HOLD_DELAY}},
              "out": {"class_type": "V3AsyncLabel", "inputs": {"text": "x", "width": ["wait", 0]}}}
    response = await client.post("/prompt", json={"prompt": prompt, "client_id": client_id})
    prompt_id = (await response.json())["prompt_id"]
    await until_message(ws, is_event("executing", prompt_id, node="wait"))
    assert (await client.post("/interrupt", json={})).status == 200
    interrupted = await until_message(ws, is_event("execution_interrupted", prompt_id))
    assert interrupted["data"]["node_id"] == "wait"
    await ws.close()


async def test_routes_and_web_directory_are_served(served):
    app, client = served
    for prefix in ("", "/api"):
        hello = await (await client.get(f"{prefix}/route_pack/hello?name=bob")).json()
        assert hello["hello"] == "bob" and hello["supports"] == ["custom_nodes_from_web"]
        assert hello["text_event"] == 3 and hello["prestartup"] == "ran"
    ws = await client.ws_connect("/ws")
    assert (await (await client.post("/route_pack/greet", json={"name": "eve"})).json())["count"] >= 1
    greeted = await until_message(ws, is_event("route_pack.greeted"))
    assert greeted["data"] == {"name": "eve"}
    await ws.close()
    seen_before = (await (await client.get("/route_pack/app_route")).json())["prompts_seen"]
    await run_prompt(client, {"g": {"class_type": "RouteGreetings", "inputs": {"separator": "-"}}})
    assert (await (await client.get("/route_pack/app_route")).json())["prompts_seen"] == seen_before + 1
    assert "/extensions/route_pack/js/greet.js" in await (await client.get("/extensions")).json()
    script = await client.get("/extensions/route_pack/js/greet.js")
    assert script.status == 200 and "registerExtension" in await script.text()
    assert (await client.get("/extensions/route_pack/css/style.css")).status == 200
    assert (await client.get("/extensions/route_pack/../__init__.py")).status in (403, 404)


async def test_v3_validate_inputs_refuses_a_prompt(served):
    app, client = served
    prompt = {"out": {"class_type": "V3AsyncLabel", "inputs": {"text": "forbidden", "width": 1}}}
    response = await client.post("/prompt", json={"prompt": prompt})
    assert response.status == 400
    assert "forbidden" in json.dumps((await response.json())["node_errors"])


async def test_a_later_app_rebinds_and_the_older_one_unbinds_only_itself(aiohttp_client, pack_app_factory):
    from server import PromptServer

    first = pack_app_factory()
    second = pack_app_factory()
    assert PromptServer.instance is second.prompt_server and comfy_compat.bound().app is second
    # the packs were imported afresh for the second App: its routes are on its own PromptServer
    assert any(r.path == "/route_pack/hello" for r in second.prompt_server.routes)
    client = await aiohttp_client(first.make_web_app())
    await client.close()  # the first App shuts down: the second stays bound
    assert comfy_compat.bound().app is second
    comfy_compat.unbind(second)
    with pytest.raises(RuntimeError, match="folder_paths.get_filename_list needs a running"):
        import folder_paths
        folder_paths.get_filename_list("checkpoints")


def test_install_commands_are_recognised():
    for command in ("pip install x", "/usr/bin/python3 -m pip install -r requirements.txt", "pip3.11 install y",
                    "uv pip install z", "uv add z", "conda install -y q", "mamba install q", "easy_install q"):
        assert installs_packages(command), command
    for command in ("pip list", "python -m pip --version", "git clone https://example.com/pip-install-helper",
                    "ffmpeg -i a.mp4 b.gif"):
        assert not installs_packages(command), command


def test_installs_refused_unless_the_flag_allows(pack_app_factory):
    # "-c pass" ignores the words after it: a harmless command that looks like an install
    command = [sys.executable, "-c", "pass", "pip", "install", "x"]
    app = pack_app_factory()
    with pytest.raises(InstallRefused, match="pip"):
        subprocess.run(command, check=True)
    if "pip._internal.cli.main" not in sys.modules:  # pip.main([...]) in-process imports it
        with pytest.raises(InstallRefused, match="pip._internal"):
            importlib.import_module("pip._internal.cli.main")
    assert app.registry.failed_packs["installs_at_import"].startswith("InstallRefused")
    # bound by hand, without packs: with the flag the installing pack would really run pip
    allowing = pack_app_factory(allow_custom_node_installs=True, custom_nodes_dir=None)
    comfy_compat.bind(allowing)
    subprocess.run(command, check=True)
    comfy_compat.unbind(allowing)
    subprocess.run(command, check=True)  # nothing bound: nothing refused


def test_calls_we_cannot_honour_raise_errors_naming_them(pack_app_factory):
    import comfy.sample
    import comfy.samplers
    import comfy.utils
    import folder_paths
    from comfy_compat import NotProvided
    from server import PromptServer

    pack_app_factory()
    for call, message in ((lambda: comfy.sample.sample(), "comfy.sample.sample"),
                          (lambda: comfy.samplers.KSampler(), "comfy.samplers.KSampler"),
                          (lambda: comfy.utils.tiled_scale, "comfy.utils.tiled_scale"),
                          (lambda: folder_paths.get_user_directory(), "folder_paths.get_user_directory"),
                          (lambda: PromptServer.instance.prompt_queue, "PromptServer.instance.prompt_queue")):
        with pytest.raises(NotProvided, match=message.replace(".", r"\.")):
            call()
    assert not hasattr(comfy.utils, "tiled_scale")  # probes of optional features still work
