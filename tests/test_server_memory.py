"""Nothing in memory grows with every job: the ComfyUI history holds at most --max-history
prompts (Fooocus jobs included), finished jobs' step previews are kept for the most recent
ones only, node instances are bounded, and per-job maps are emptied when their job ends."""
import json
import uuid

from fooocus_toy import attach_toy_fooocus
from graph.cache import NodeInstances
from main import build_parser, config_from_args
from server.fooocus.jobs import FINISHED_PREVIEWS_KEPT
from waiting import is_event, until, until_message


def chain(value: int, ids=("n", "slow", "out")) -> dict:
    n, slow, out = ids
    return {n: {"class_type": "Number", "inputs": {"value": value}},
            slow: {"class_type": "Slow", "inputs": {"x": [n, 0], "steps": 1, "delay": 0.0}},
            out: {"class_type": "Output", "inputs": {"value": [slow, 0]}}}


def test_the_flags_reach_the_config():
    config = config_from_args(build_parser().parse_args(["--max-history", "3", "--preview-method", "taesd"]))
    assert (config.max_history, config.preview_method) == (3, "taesd")
    defaults = config_from_args(build_parser().parse_args([]))
    assert (defaults.max_history, defaults.preview_method) == (10_000, "none")  # ComfyUI's


async def test_history_keeps_the_last_max_history_prompts(aiohttp_client, toy_app_factory):
    app = toy_app_factory(max_history=3)
    attach_toy_fooocus(app)
    client = await aiohttp_client(app.make_web_app())
    ws = await client.ws_connect("/ws?clientId=cap")
    await ws.receive_json()
    ids = []
    for value in range(5):
        body = await (await client.post("/prompt", json={"prompt": chain(value), "client_id": "cap"})).json()
        ids.append(body["prompt_id"])
        await until_message(ws, is_event("executing", body["prompt_id"], node=None))
    history = await (await client.get("/history")).json()
    assert list(history) == ids[2:]  # oldest first, the two oldest evicted
    assert await (await client.get(f"/history/{ids[0]}")).json() == {}
    assert (await (await client.get(f"/history/{ids[4]}")).json())[ids[4]]["outputs"] == {"out": {"values": [4]}}
    # Fooocus jobs count against the same cap; their durable record stays in the job store
    items = await (await client.post("/v1/generation/text-to-image", data=json.dumps({"prompt": "p"}))).json()
    job_id = items[0]["url"].rsplit("/", 1)[1].rsplit("-", 1)[0]
    history = await until(lambda: _history_with(client, job_id), what="the Fooocus job in /history")
    assert list(history) == [ids[3], ids[4], job_id]
    later = []
    for value in (8, 9):
        body = await (await client.post("/prompt", json={"prompt": chain(value), "client_id": "cap"})).json()
        later.append(body["prompt_id"])
        await until_message(ws, is_event("executing", body["prompt_id"], node=None))
    assert list(await (await client.get("/history")).json()) == [job_id, *later][-3:]
    later.append((await (await client.post("/prompt", json={"prompt": chain(7), "client_id": "cap"})).json())["prompt_id"])
    await until_message(ws, is_event("executing", later[-1], node=None))
    assert list(await (await client.get("/history")).json()) == later  # the Fooocus job is out of /history
    answer = await (await client.get("/v1/generation/query-job", params={"job_id": job_id})).json()
    assert answer["job_stage"] == "SUCCESS"
    await ws.close()


async def _history_with(client, prompt_id):
    history = await (await client.get("/history")).json()
    return history if prompt_id in history else None


async def test_per_job_state_is_bounded(aiohttp_client, toy_app_factory):
    app = toy_app_factory(max_history=5)
    api = attach_toy_fooocus(app)
    client = await aiohttp_client(app.make_web_app())
    jobs = FINISHED_PREVIEWS_KEPT + 4
    job_ids = []
    for index in range(jobs):
        # a ComfyUI client on its own socket, with node ids of its own making, then a Fooocus job
        client_id = uuid.uuid4().hex
        ws = await client.ws_connect(f"/ws?clientId={client_id}")
        await ws.receive_json()
        await ws.send_json({"type": "feature_flags", "data": {"supports_preview_metadata": True}})
        fresh = tuple(uuid.uuid4().hex for _ in range(3))
        body = await (await client.post("/prompt", json={"prompt": chain(index, fresh), "client_id": client_id})).json()
        await until_message(ws, is_event("executing", body["prompt_id"], node=None))
        await ws.close()
        items = await (await client.post("/v1/generation/text-to-image", data=json.dumps({"prompt": "p"}))).json()
        job_ids.append(items[0]["url"].rsplit("/", 1)[1].rsplit("-", 1)[0])
    assert len(app.queue.history()) == 5
    # the last step preview of recent jobs stays queryable after they finish; older ones go
    assert list(api.jobs.finished_previews) == job_ids[-FINISHED_PREVIEWS_KEPT:]
    assert api.jobs.previews == {} and api.jobs.previews_wanted == set() and api.jobs._waiters == {}
    newest = {"job_id": job_ids[-1], "require_step_preview": "true"}
    assert (await (await client.get("/v1/generation/query-job", params=newest)).json())["job_step_preview"]
    oldest = {"job_id": job_ids[0], "require_step_preview": "true"}
    assert (await (await client.get("/v1/generation/query-job", params=oldest)).json())["job_step_preview"] is None
    assert api.jobs.previews_wanted == set()  # asking about finished jobs adds nothing
    await until(lambda: _no_sockets(app), what="the closed sockets to be forgotten")
    assert app.queue.running() == [] and app.queue.pending() == []


async def _no_sockets(app):
    return not app.hub.sockets and not app.hub.features


def test_node_instances_keep_the_most_recently_used():
    made = []
    instances = NodeInstances(limit=3)
    for key in ("a", "b", "c"):
        instances.get((key, "Slow"), lambda: made.append(key) or object())
    first_a = instances.get(("a", "Slow"), object)  # used again: now the most recent
    instances.get(("d", "Slow"), object)
    assert len(instances) == 3 and made == ["a", "b", "c"]
    assert instances.get(("a", "Slow"), object) is first_a
    assert instances.get(("b", "Slow"), lambda: "new b") == "new b"  # b was the least recent: dropped


def test_prompts_with_fresh_node_ids_do_not_grow_the_executor(toy_app_factory):
    from graph import validate_prompt

    app = toy_app_factory()
    limit = app.executor._instances.limit
    for value in range(limit // 3 + 20):
        prompt = chain(value % 1000, tuple(uuid.uuid4().hex for _ in range(3)))
        result = validate_prompt(prompt, app.registry)
        assert app.executor.execute(prompt, "p", result.outputs, result.constants).status == "success"
    assert len(app.executor._instances) == limit


def test_history_entries_are_stored_compressed_and_served_as_json():
    from server.history import PromptHistory
    from workflows import WORKFLOW_DIR

    workflow = json.loads((WORKFLOW_DIR / "text_to_image.json").read_text())
    history = PromptHistory(limit=2)
    entries = {}
    for prompt_id in ("first", "null", 'a "quoted" id'):
        entries[prompt_id] = {"prompt": [1, prompt_id, workflow, {"client_id": "c"}, ["save"]],
                              "outputs": {"save": {"images": [{"filename": "x.png"}], "odd": [complex(1, 2)]}},
                              "status": {"status_str": "success", "completed": True, "messages": []}}
        history.add(prompt_id, entries[prompt_id])
    assert len(history) == 2 and history.get("first") is None  # the oldest went
    for prompt_id in ("null", 'a "quoted" id'):
        expected = json.loads(json.dumps(entries[prompt_id], default=repr))  # what JSON can hold; repr otherwise
        assert history.get(prompt_id) == expected
        assert expected["outputs"]["save"]["odd"] == ["(1+2j)"]
        # against the preset dictionary of our workflows an entry takes a fraction of its JSON
        assert len(history._entries[prompt_id]) * 5 < len(json.dumps(expected, separators=(",", ":")))
    assert json.loads(history.json()) == history.entries() and list(history.entries()) == ["null", 'a "quoted" id']
    assert list(json.loads(history.json(max_items=1))) == ['a "quoted" id']
    history.delete(["null"])
    assert list(history.entries()) == ['a "quoted" id']
