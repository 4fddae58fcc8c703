"""ComfyUI's three example API clients, re-written from their documented behaviour, run against
our server unchanged in what they send and read, with a tiny SD1.5 checkpoint named
`v1-5-pruned-emaonly.safetensors`."""
import json
import shutil
import socket
import threading
import time
import urllib.parse
import urllib.request
import uuid

import pytest
import websocket  # websocket-client, as the examples use
from aiohttp import web

from server.app import App
from server.config import AppConfig

EXAMPLE_PROMPT = {
    "3": {"class_type": "KSampler", "inputs": {"cfg": 8, "denoise": 1, "latent_image": ["5", 0], "model": ["4", 0],
                                               "negative": ["7", 0], "positive": ["6", 0], "sampler_name": "euler",
                                               "scheduler": "normal", "seed": 8566257, "steps": 3}},
    "4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "v1-5-pruned-emaonly.safetensors"}},
    "5": {"class_type": "EmptyLatentImage", "inputs": {"batch_size": 1, "height": 64, "width": 64}},
    "6": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["4", 1], "text": "masterpiece best quality girl"}},
    "7": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["4", 1], "text": "bad hands"}},
    "8": {"class_type": "VAEDecode", "inputs": {"samples": ["3", 0], "vae": ["4", 2]}},
    "9": {"class_type": "SaveImage", "inputs": {"filename_prefix": "ComfyUI", "images": ["8", 0]}},
}


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server_address(tmp_path_factory, demo_models_dir):
    root = tmp_path_factory.mktemp("comfy_examples")
    models = root / "models"
    shutil.copytree(demo_models_dir, models)
    (models / "checkpoints" / "tiny-sd15.safetensors").rename(models / "checkpoints" / "v1-5-pruned-emaonly.safetensors")
    port = free_port()
    from nodes.model_services import make_model_manager

    config = AppConfig(port=port, models_dir=models, output_dir=root / "out", input_dir=root / "in",
                       temp_dir=root / "tmp", custom_nodes_dir=None, cpu=True)
    app = App(config, model_manager=make_model_manager(config))
    runner_ready = threading.Event()
    state = {}

    def serve():
        import asyncio
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        runner = web.AppRunner(app.make_web_app())
        loop.run_until_complete(runner.setup())
        loop.run_until_complete(web.TCPSite(runner, "127.0.0.1", port).start())
        state["loop"], state["runner"] = loop, runner
        runner_ready.set()
        loop.run_forever()
        loop.run_until_complete(runner.cleanup())

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    runner_ready.wait(30)
    yield f"127.0.0.1:{port}"
    state["loop"].call_soon_threadsafe(state["loop"].stop)
    thread.join(30)


def test_basic_api_example(server_address):
    """basic_api_example.py: urllib POST of {"prompt"} with no Content-Type and no client_id."""
    prompt = json.loads(json.dumps(EXAMPLE_PROMPT))
    prompt["3"]["inputs"]["seed"] = 5
    data = json.dumps({"prompt": prompt}).encode("utf-8")
    request = urllib.request.Request(f"http://{server_address}/prompt", data=data)
    with urllib.request.urlopen(request) as response:
        assert 200 <= response.status < 300
        prompt_id = json.loads(response.read())["prompt_id"]
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        with urllib.request.urlopen(f"http://{server_address}/history/{prompt_id}") as response:
            history = json.loads(response.read())
        if history:
            break
        time.sleep(0.2)
    assert history[prompt_id]["status"]["status_str"] == "success"


def test_websockets_api_example(server_address):
    """websockets_api_example.py: own client_id and prompt_id; wait for executing/node None; read
    /history and fetch every image through /view."""
    client_id = str(uuid.uuid4())
    ws = websocket.WebSocket()
    ws.connect(f"ws://{server_address}/ws?clientId={client_id}")
    prompt_id = str(uuid.uuid4())
    body = json.dumps({"prompt": EXAMPLE_PROMPT, "client_id": client_id, "prompt_id": prompt_id}).encode("utf-8")
    urllib.request.urlopen(urllib.request.Request(f"http://{server_address}/prompt", data=body)).read()
    while True:
        out = ws.recv()
        if isinstance(out, str):
            message = json.loads(out)
            if message["type"] == "executing":
                data = message["data"]
                if data["node"] is None and data["prompt_id"] == prompt_id:
                    break
    with urllib.request.urlopen(f"http://{server_address}/history/{prompt_id}") as response:
        history = json.loads(response.read())[prompt_id]
    images = []
    for node_id, node_output in history["outputs"].items():
        for image in node_output.get("images", []):
            query = urllib.parse.urlencode({"filename": image["filename"], "subfolder": image["subfolder"],
                                            "type": image["type"]})
            with urllib.request.urlopen(f"http://{server_address}/view?{query}") as response:
                images.append(response.read())
    ws.close()
    assert len(images) == 1 and images[0][:8] == b"\x89PNG\r\n\x1a\n"


def test_websockets_api_example_ws_images(server_address):
    """websockets_api_example_ws_images.py: prompt_id from the response; PNG frames of the
    SaveImageWebsocket node collected while it executes."""
    prompt = json.loads(json.dumps(EXAMPLE_PROMPT))
    del prompt["9"]
    prompt["save_image_websocket_node"] = {"class_type": "SaveImageWebsocket", "inputs": {"images": ["8", 0]}}
    client_id = str(uuid.uuid4())
    ws = websocket.WebSocket()
    ws.connect(f"ws://{server_address}/ws?clientId={client_id}")
    body = json.dumps({"prompt": prompt, "client_id": client_id}).encode("utf-8")
    with urllib.request.urlopen(urllib.request.Request(f"http://{server_address}/prompt", data=body)) as response:
        prompt_id = json.loads(response.read())["prompt_id"]
    output_images = {}
    current_node = ""
    while True:
        out = ws.recv()
        if isinstance(out, str):
            message = json.loads(out)
            if message["type"] == "executing":
                data = message["data"]
                if data["prompt_id"] == prompt_id:
                    if data["node"] is None:
                        break
                    current_node = data["node"]
        else:
            if current_node == "save_image_websocket_node":
                output_images.setdefault(current_node, []).append(out[8:])
    ws.close()
    frames = output_images["save_image_websocket_node"]
    assert len(frames) == 1 and frames[0][:8] == b"\x89PNG\r\n\x1a\n"
    from PIL import Image
    import io
    assert Image.open(io.BytesIO(frames[0])).size == (64, 64)
