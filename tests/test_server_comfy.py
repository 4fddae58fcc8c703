"""The ComfyUI-compatible server in-process, with a real websocket client."""
import asyncio
import json
import uuid

import pytest
from PIL import Image

from toy_nodes import CALLS
from waiting import DEADLINE_S, HOLD_DELAY, HOLD_STEPS, is_event, until, until_message


def chain_prompt(value=1, steps=2, delay=0.001):
    return {"n": {"class_type": "Number", "inputs": {"value": value}},
            "slow": {"class_type": "Slow", "inputs": {"x": ["n", 0], "steps": steps, "delay": delay}},
            "out": {"class_type": "Output", "inputs": {"value": ["slow", 0]}}}


def holding_prompt(value=1):
    """Holds the worker until interrupted (minutes otherwise)."""
    return chain_prompt(value, steps=HOLD_STEPS, delay=HOLD_DELAY)


@pytest.fixture
async def client(aiohttp_client, toy_app_factory):
    app = toy_app_factory()
    return await aiohttp_client(app.make_web_app())


async def receive_until_done(ws, prompt_id, timeout=DEADLINE_S):
    messages = []
    async def loop():
        async for msg in ws:
            if msg.type.name == "TEXT":
                data = json.loads(msg.data)
                messages.append(data)
                if data["type"] == "executing" and data["data"]["node"] is None and data["data"]["prompt_id"] == prompt_id:
                    return
            else:
                messages.append(("binary", msg.data))
    await asyncio.wait_for(loop(), timeout)
    return messages


async def test_full_message_order_with_client_id(client):
    client_id = uuid.uuid4().hex
    ws = await client.ws_connect(f"/ws?clientId={client_id}")
    hello = await ws.receive_json()
    assert hello["type"] == "status" and hello["data"]["sid"] == client_id
    prompt_id = str(uuid.uuid4())
    response = await client.post("/prompt", data=json.dumps({"prompt": chain_prompt(), "client_id": client_id,
                                                              "prompt_id": prompt_id}))
    assert response.status == 200
    body = await response.json()
    assert body["prompt_id"] == prompt_id and body["node_errors"] == {} and "number" in body
    messages = await receive_until_done(ws, prompt_id)
    types = [m["type"] for m in messages]
    start = types.index("execution_start")
    assert types[:start] and set(types[:start]) == {"status"}
    assert types[start + 1] == "execution_cached"
    executing = [m["data"]["node"] for m in messages if m["type"] == "executing"]
    assert executing == ["n", "slow", "out", None]
    assert types.count("progress") == 2
    # progress_state snapshots: each node announced running before its `executing`, finished after
    for index, message in enumerate(messages):
        if message["type"] == "executing" and message["data"]["node"] is not None:
            before = messages[index - 1]
            assert before["type"] == "progress_state"
            assert before["data"]["nodes"][message["data"]["node"]]["state"] == "running"
    last_state = [m for m in messages if m["type"] == "progress_state"][-1]["data"]
    assert last_state["prompt_id"] == prompt_id
    assert {n: e["state"] for n, e in last_state["nodes"].items()} == {"n": "finished", "slow": "finished",
                                                                      "out": "finished"}
    assert last_state["nodes"]["slow"]["value"] == last_state["nodes"]["slow"]["max"] == 2
    success = types.index("execution_success")
    assert types.index("executed") < success
    assert types[success + 1:] == ["status", "executing"]
    history = await (await client.get(f"/history/{prompt_id}")).json()
    entry = history[prompt_id]
    assert entry["status"]["status_str"] == "success" and entry["status"]["completed"] is True
    assert [m[0] for m in entry["status"]["messages"]] == ["execution_start", "execution_cached", "execution_success"]
    assert entry["outputs"] == {"out": {"values": [1]}}
    assert entry["prompt"][1] == prompt_id and entry["prompt"][4] == ["out"]
    await ws.close()


async def test_json_is_read_whatever_the_content_type(client):
    response = await client.post("/prompt", data=json.dumps({"prompt": chain_prompt()}).encode(),
                                 headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert response.status == 200


async def test_api_aliases(client):
    for path in ("/api/prompt", "/api/queue", "/api/history", "/api/object_info", "/api/system_stats",
                 "/api/models", "/api/features", "/api/embeddings", "/api/ping"):
        response = await client.get(path)
        assert response.status == 200, path
    response = await client.post("/api/prompt", json={"prompt": chain_prompt()})
    assert response.status == 200


async def test_validation_errors_are_400_with_node_errors(client):
    bad = {"1": {"class_type": "Number", "inputs": {"value": 99999}},
           "2": {"class_type": "Output", "inputs": {"value": ["1", 0]}}}
    response = await client.post("/prompt", json={"prompt": bad})
    assert response.status == 400
    body = await response.json()
    assert body["error"]["type"] == "prompt_outputs_failed_validation"
    assert body["node_errors"]["1"]["errors"][0]["type"] == "value_bigger_than_max"
    response = await client.post("/prompt", json={"prompt": {"1": {"class_type": "Missing", "inputs": {}}}})
    assert (await response.json())["error"]["type"] == "invalid_prompt"
    response = await client.post("/prompt", json={"nothing": 1})
    assert (await response.json())["error"]["type"] == "no_prompt"


@pytest.mark.parametrize("body", [b"{not json", b"", b"[1,2]", b"\xff\xfe"])
async def test_malformed_bodies_are_400(client, body):
    response = await client.post("/prompt", data=body)
    assert response.status == 400
    assert "error" in await response.json()
    assert (await client.get("/ping")).status == 200


async def test_wrong_types_and_missing_links_are_400(client):
    for prompt in ({"1": {"class_type": "Output", "inputs": {"value": ["nope", 0]}}},
                   {"1": {"class_type": "Number", "inputs": {"value": {"a": 1}}},
                    "2": {"class_type": "Output", "inputs": {"value": ["1", 0]}}},
                   "not a dict", [1, 2]):
        response = await client.post("/prompt", json={"prompt": prompt})
        assert response.status == 400, prompt
        assert (await response.json())["error"]["message"]


async def test_interrupt_stops_running_prompt(client):
    ws = await client.ws_connect("/ws?clientId=c1")
    await ws.receive_json()
    response = await client.post("/prompt", json={"prompt": holding_prompt(), "client_id": "c1"})
    prompt_id = (await response.json())["prompt_id"]
    await until_message(ws, is_event("progress", prompt_id))
    assert (await client.post("/interrupt", json={"prompt_id": "other"})).status == 200
    assert (await client.post("/interrupt")).status == 200
    messages = await receive_until_done(ws, prompt_id)
    assert "execution_interrupted" in [m["type"] for m in messages]
    entry = (await (await client.get(f"/history/{prompt_id}")).json())[prompt_id]
    assert entry["status"]["completed"] is False and entry["status"]["status_str"] == "error"


async def test_queue_priority_delete_and_clear(client, toy_app_factory):
    # hold the worker on a prompt that runs until interrupted, and wait until it runs, so the rest waits
    ws = await client.ws_connect("/ws?clientId=queue-test")
    await ws.receive_json()
    blocker = await (await client.post("/prompt", json={"prompt": holding_prompt(), "client_id": "queue-test"})).json()
    await until_message(ws, is_event("execution_start", blocker["prompt_id"]))
    ids = []
    for value in range(3):
        body = await (await client.post("/prompt", json={"prompt": chain_prompt(value=value + 10)})).json()
        ids.append(body["prompt_id"])
    front = await (await client.post("/prompt", json={"prompt": chain_prompt(value=50), "front": True})).json()
    queue = await (await client.get("/queue")).json()
    pending = [item[1] for item in queue["queue_pending"]]
    assert pending[0] == front["prompt_id"] and pending[1:] == ids
    await client.post("/queue", json={"delete": [ids[1]]})
    queue = await (await client.get("/queue")).json()
    assert ids[1] not in [item[1] for item in queue["queue_pending"]]
    await client.post("/queue", json={"clear": True})
    queue = await (await client.get("/queue")).json()
    assert queue["queue_pending"] == []
    assert (await (await client.get("/prompt")).json())["exec_info"]["queue_remaining"] == 1  # the blocker
    assert [item[1] for item in queue["queue_running"]] == [blocker["prompt_id"]]
    await client.post("/interrupt")
    await until_message(ws, is_event("execution_interrupted", blocker["prompt_id"]))


async def test_history_paging_delete_clear(client):
    ids = []
    for value in range(4):
        body = await (await client.post("/prompt", json={"prompt": chain_prompt(value=value)})).json()
        ids.append(body["prompt_id"])
    async def all_four():
        return len(await (await client.get("/history")).json()) == 4
    await until(all_four, what="4 history entries")
    history = await (await client.get("/history")).json()
    assert list(history) == ids
    assert list(await (await client.get("/history?max_items=2")).json()) == ids[-2:]
    assert list(await (await client.get("/history?max_items=2&offset=1")).json()) == ids[1:3]
    assert (await client.get("/history?max_items=abc")).status == 400
    assert await (await client.get("/history/unknown")).json() == {}
    await client.post("/history", json={"delete": [ids[0]]})
    assert ids[0] not in await (await client.get("/history")).json()
    await client.post("/history", json={"clear": True})
    assert await (await client.get("/history")).json() == {}


async def test_upload_and_view(client, tmp_path):
    png = tmp_path / "a.png"
    Image.new("RGBA", (8, 8), (255, 0, 0, 128)).save(png)
    data = png.read_bytes()

    async def upload(name, content, **fields):
        import aiohttp
        form = aiohttp.FormData()
        form.add_field("image", content, filename=name, content_type="image/png")
        for key, value in fields.items():
            form.add_field(key, value)
        return await client.post("/upload/image", data=form)

    response = await upload("a.png", data)
    assert await response.json() == {"name": "a.png", "subfolder": "", "type": "input"}
    assert (await (await upload("a.png", data)).json())["name"] == "a.png"  # identical content reuses the name
    assert (await (await upload("a.png", data + b"x")).json())["name"] == "a (1).png"
    assert (await (await upload("b.png", data, subfolder="sub")).json())["subfolder"] == "sub"
    view = await client.get("/view", params={"filename": "a.png", "type": "input"})
    assert view.status == 200 and await view.read() == data
    assert 'filename="a.png"' in view.headers["Content-Disposition"]
    assert (await client.get("/view", params={"filename": "a.png [input]"})).status == 200
    assert (await client.get("/view", params={"filename": "b.png", "subfolder": "sub", "type": "input"})).status == 200
    converted = await client.get("/view", params={"filename": "a.png", "type": "input", "preview": "webp;50"})
    assert converted.headers["Content-Type"] == "image/webp"
    alpha = await client.get("/view", params={"filename": "a.png", "type": "input", "channel": "a"})
    assert alpha.status == 200
    # traversal and bad names
    assert (await client.get("/view", params={"filename": "../secret", "type": "input"})).status == 400
    assert (await client.get("/view", params={"filename": "/etc/passwd"})).status == 400
    assert (await client.get("/view", params={"filename": "a.png", "subfolder": "../..", "type": "input"})).status == 403
    assert (await client.get("/view", params={"filename": "nope.png"})).status == 404
    assert (await client.get("/view", params={"filename": "a.png", "type": "bogus"})).status == 400
    assert (await client.get("/view")).status == 400
    assert (await upload("../evil.png", data)).status == 400
    assert (await upload("ok.png", data, subfolder="../../x")).status == 403
    assert (await client.post("/upload/image", data=b"not multipart")).status == 400
    assert (await client.get("/ping")).status == 200


async def test_object_info_and_models(client):
    info = await (await client.get("/object_info")).json()
    assert info["Scale"]["input"]["required"]["factor"] == ["FLOAT", {"default": 1.0, "min": 0.0, "max": 10.0}]
    assert info["Scale"]["input"]["optional"]["mode"] == [["mul", "div"]]
    assert info["Scale"]["input_order"] == {"required": ["x", "factor"], "optional": ["mode"]}
    assert info["Output"]["output_node"] is True
    one = await (await client.get("/object_info/Add")).json()
    assert list(one) == ["Add"] and one["Add"]["output_name"] == ["sum"]
    assert await (await client.get("/object_info/Nope")).json() == {}
    folders = await (await client.get("/models")).json()
    assert "checkpoints" in folders and "loras" in folders
    assert await (await client.get("/models/checkpoints")).json() == []
    assert (await client.get("/models/nonsense")).status == 404
    stats = await (await client.get("/system_stats")).json()
    assert "system" in stats and stats["devices"]


async def test_node_failure_reports_error_and_server_keeps_serving(client):
    ws = await client.ws_connect("/ws?clientId=c2")
    await ws.receive_json()
    body = await (await client.post("/prompt", json={"client_id": "c2", "prompt": {
        "n": {"class_type": "Number", "inputs": {"value": 4}},
        "f": {"class_type": "Fail", "inputs": {"x": ["n", 0]}},
        "out": {"class_type": "Output", "inputs": {"value": ["f", 0]}}}})).json()
    messages = await receive_until_done(ws, body["prompt_id"])
    errors = [m["data"] for m in messages if m["type"] == "execution_error"]
    assert errors[0]["exception_message"] == "boom 4" and errors[0]["node_id"] == "f"
    follow = await (await client.post("/prompt", json={"client_id": "c2", "prompt": chain_prompt()})).json()
    messages = await receive_until_done(ws, follow["prompt_id"])
    assert "execution_success" in [m["type"] for m in messages]


async def test_free_request(client):
    assert (await client.post("/free", json={"unload_models": True, "free_memory": True})).status == 200
    assert (await client.post("/free", data=b"[]")).status == 400


async def test_feature_flags_negotiation(client):
    ws = await client.ws_connect("/ws?clientId=f1")
    await ws.receive_json()
    await ws.send_json({"type": "feature_flags", "data": {"supports_preview_metadata": True}})
    reply = await asyncio.wait_for(ws.receive_json(), DEADLINE_S)
    assert reply["type"] == "feature_flags" and reply["data"]["supports_preview_metadata"] is True


async def test_request_body_size_limit(aiohttp_client, toy_app_factory):
    client = await aiohttp_client(toy_app_factory(max_upload_size_mb=0.01).make_web_app())
    big = json.dumps({"prompt": chain_prompt(), "extra_data": {"padding": "x" * 20000}})
    response = await client.post("/prompt", data=big)
    assert response.status == 413
    assert (await client.post("/prompt", json={"prompt": chain_prompt()})).status == 200
    assert (await client.get("/features")).status == 200
    assert (await (await client.get("/features")).json())["max_upload_size"] == int(0.01 * 1024 * 1024)


async def test_reconnecting_client_is_told_the_running_node(client):
    ws = await client.ws_connect("/ws?clientId=again")
    await ws.receive_json()
    body = await (await client.post("/prompt", json={"client_id": "again", "prompt": holding_prompt()})).json()
    await until_message(ws, is_event("progress", body["prompt_id"]))
    # the client comes back on a new socket (the old one is dropped without a goodbye)
    again = await client.ws_connect("/ws?clientId=again")
    first = await again.receive_json()
    assert first["type"] == "status" and first["data"]["sid"] == "again"
    second = await until_message(again, is_event("executing"))
    assert second["data"] == {"node": "slow", "display_node": "slow", "prompt_id": body["prompt_id"]}
    await client.post("/interrupt")
    await again.close()
