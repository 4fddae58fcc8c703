"""Load on the Fooocus job system: 500 async submissions from 50 concurrent clients are each either
accepted (and then finish) or refused with QUEUE_IS_FULL, none lost or duplicated; query-job stays
fast while jobs run; the ComfyUI websocket sees Fooocus jobs with their job_id as prompt_id."""
import asyncio
import json
import time

from fooocus_toy import attach_toy_fooocus


async def test_500_async_submissions_from_50_clients(aiohttp_client, toy_app_factory):
    app = toy_app_factory(queue_size=100)
    attach_toy_fooocus(app)
    client = await aiohttp_client(app.make_web_app())
    body = json.dumps({"prompt": "p", "async_process": True, "advanced_params": {"overwrite_step": 1}})
    accepted, refused = [], []
    query_latencies = []

    async def one_client():
        for _ in range(10):
            response = await client.post("/v1/generation/text-to-image", data=body)
            assert response.status == 200
            answer = await response.json()
            if answer["job_id"]:
                assert answer["job_stage"] == "WAITING"
                accepted.append(answer["job_id"])
            else:
                assert answer["job_result"][0]["finish_reason"] == "QUEUE_IS_FULL"
                refused.append(answer)

    await asyncio.gather(*(one_client() for _ in range(50)))
    deadline = time.monotonic() + 120
    while app.queue.remaining() and time.monotonic() < deadline:  # generation runs: query-job stays fast
        started = time.perf_counter()
        response = await client.get("/v1/generation/query-job", params={"job_id": accepted[-1]})
        assert response.status == 200
        query_latencies.append(time.perf_counter() - started)
        await asyncio.sleep(0.005)
    assert len(accepted) + len(refused) == 500
    assert len(set(accepted)) == len(accepted) and len(accepted) >= 100 and refused
    stages = []
    for job_id in accepted:
        stages.append((await (await client.get("/v1/generation/query-job", params={"job_id": job_id})).json())["job_stage"])
    assert set(stages) == {"SUCCESS"}
    history = await (await client.get("/v1/generation/job-history", params={"page_size": 1000})).json()
    assert sorted(h["job_id"] for h in history["history"]) == sorted(accepted)
    query_latencies.sort()
    p99 = query_latencies[max(0, int(len(query_latencies) * 0.99) - 1)]
    assert len(query_latencies) > 20 and p99 < 0.05, f"query-job p99 {p99 * 1000:.1f} ms"


async def test_websocket_sees_fooocus_jobs(aiohttp_client, toy_app_factory):
    app = toy_app_factory()
    attach_toy_fooocus(app)
    client = await aiohttp_client(app.make_web_app())
    ws = await client.ws_connect("/ws?clientId=watcher")
    await ws.receive_json()
    job = await (await client.post("/v1/generation/text-to-image",
                                   data=json.dumps({"prompt": "p", "async_process": True, "image_number": 2}))).json()
    events = []

    async def collect():
        async for message in ws:
            data = json.loads(message.data)
            events.append(data)
            if data["type"] == "executing" and data["data"]["node"] is None and data["data"]["prompt_id"] == job["job_id"]:
                return
    await asyncio.wait_for(collect(), 30)
    mine = [e for e in events if isinstance(e["data"], dict) and e["data"].get("prompt_id") == job["job_id"]]
    types = [e["type"] for e in mine]
    assert types.count("execution_start") == 2 and types.count("execution_success") == 2  # one run per image
    assert "progress" in types and types[-1] == "executing"
    assert [e["data"]["node"] for e in mine if e["type"] == "executing"][-1] is None
