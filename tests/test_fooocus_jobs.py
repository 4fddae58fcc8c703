"""The Fooocus job system end to end over toy workflows: stages, stop, cancel, queue limits,
errors, history, API key, webhooks."""
import asyncio
import json
import re
import time

import pytest
from aiohttp import web

from fooocus_toy import attach_toy_fooocus
from waiting import DEADLINE_S, until


async def make_client(aiohttp_client, toy_app_factory, **config):
    webhook_options = config.pop("webhook_options", {"backoff_initial_s": 0.05, "timeout_s": 2.0})
    app = toy_app_factory(**config)
    api = attach_toy_fooocus(app, **webhook_options)
    client = await aiohttp_client(app.make_web_app())
    return client, api


async def poll(client, job_id, until, timeout=DEADLINE_S):
    seen = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        response = await client.get("/v1/generation/query-job", params={"job_id": job_id})
        body = await response.json()
        if not seen or seen[-1] != body["job_stage"]:
            seen.append(body["job_stage"])
        if until(body):
            return body, seen
        await asyncio.sleep(0.01)
    raise AssertionError(f"timeout; stages seen {seen}")


def t2i(**fields):
    return json.dumps({"prompt": "a cat", **fields})


def holding(**fields):
    """A toy job of 200 steps of 0.2 s: it holds the worker until it is stopped."""
    return t2i(prompt="hold the worker", async_process=True, advanced_params={"overwrite_step": 200}, **fields)


async def test_async_submit_waiting_running_success(aiohttp_client, toy_app_factory):
    client, _ = await make_client(aiohttp_client, toy_app_factory)
    blocker = await (await client.post("/v1/generation/text-to-image",
                                       data=holding())).json()
    await poll(client, blocker["job_id"], lambda b: b["job_stage"] == "RUNNING")
    # 2 images of 25 steps: about a second RUNNING, plenty for the poll to see it
    response = await client.post("/v1/generation/text-to-image",
                                 data=t2i(async_process=True, image_number=2, advanced_params={"overwrite_step": 25}))
    body = await response.json()
    assert body["job_stage"] == "WAITING" and body["job_progress"] == 0 and body["job_result"] is None
    assert body["job_type"] == "Text to Image"
    waiting, _ = await poll(client, body["job_id"], lambda b: True)
    assert waiting["job_stage"] == "WAITING"  # the blocker still runs
    await client.post("/v1/generation/stop")
    final, seen = await poll(client, body["job_id"], lambda b: b["job_stage"] == "SUCCESS")
    assert seen[0] == "WAITING" and "RUNNING" in seen and seen[-1] == "SUCCESS"
    assert final["job_progress"] == 100 and final["job_status"] == "Finished"
    assert [r["finish_reason"] for r in final["job_result"]] == ["SUCCESS", "SUCCESS"]
    assert [r["seed"] for r in final["job_result"]] == ["1000", "1001"]
    url = final["job_result"][0]["url"]
    path = url.split("/files/", 1)[1]
    image = await client.get(f"/files/{path}")
    assert image.status == 200 and (await image.read())[:4] == b"\x89PNG"
    assert (await client.get(f"/files/{path}", headers={"Accept": "image/webp"})).headers["Content-Type"] == "image/webp"
    assert (await client.get("/files/2020-01-01/../../etc")).status == 404


async def test_running_progress_is_between_15_and_100(aiohttp_client, toy_app_factory):
    client, _ = await make_client(aiohttp_client, toy_app_factory)
    body = await (await client.post("/v1/generation/text-to-image",
                                    data=holding())).json()
    running, _ = await poll(client, body["job_id"], lambda b: b["job_stage"] == "RUNNING" and b["job_progress"] > 15)
    assert 15 < running["job_progress"] < 100 and running["job_status"].startswith("Step ")
    await client.post("/v1/generation/stop")
    await poll(client, body["job_id"], lambda b: b["job_stage"] == "ERROR")


async def test_sync_request_returns_the_images(aiohttp_client, toy_app_factory):
    client, _ = await make_client(aiohttp_client, toy_app_factory)
    response = await client.post("/v1/generation/text-to-image", data=t2i(image_number=2, require_base64=True,
                                                                          image_seed=7))
    items = await response.json()
    assert [i["seed"] for i in items] == ["7", "8"]
    assert all(i["finish_reason"] == "SUCCESS" and i["base64"].startswith("data:image/png;base64,") for i in items)


async def test_png_streaming(aiohttp_client, toy_app_factory):
    client, _ = await make_client(aiohttp_client, toy_app_factory)
    response = await client.post("/v1/generation/text-to-image?accept=image/png", data=t2i(image_number=3))
    assert response.status == 200 and response.headers["Content-Type"] == "image/png"
    assert (await response.read())[:4] == b"\x89PNG"
    response = await client.post("/v1/generation/text-to-image", data=t2i(), headers={"Accept": "image/png"})
    assert response.headers["Content-Type"] == "image/png"


async def test_stop_during_multi_image_job_keeps_finished_images(aiohttp_client, toy_app_factory):
    client, _ = await make_client(aiohttp_client, toy_app_factory)
    # 100 steps of 20 ms per image: the stop lands within the second image's 2 s
    body = await (await client.post("/v1/generation/text-to-image",
                                    data=t2i(async_process=True, image_number=4,
                                             advanced_params={"overwrite_step": 100}))).json()
    await poll(client, body["job_id"], lambda b: b["job_status"] and "2-th Sampling" in b["job_status"])
    assert await (await client.post("/v1/generation/stop")).json() == {"msg": "success"}
    final, _ = await poll(client, body["job_id"], lambda b: b["job_stage"] not in ("WAITING", "RUNNING"))
    reasons = [r["finish_reason"] for r in final["job_result"]]
    assert reasons == ["SUCCESS", "USER_CANCEL"]
    assert final["job_result"][0]["url"]
    # the queue moves on
    after = await (await client.post("/v1/generation/text-to-image", data=t2i())).json()
    assert after[0]["finish_reason"] == "SUCCESS"


async def test_cancel_queued_and_running_jobs(aiohttp_client, toy_app_factory):
    client, _ = await make_client(aiohttp_client, toy_app_factory)
    running = await (await client.post("/v1/generation/text-to-image",
                                       data=holding())).json()
    queued = await (await client.post("/v1/generation/text-to-image", data=t2i(async_process=True))).json()
    await poll(client, running["job_id"], lambda b: b["job_stage"] == "RUNNING")
    cancelled = await (await client.post("/v1/generation/cancel", params={"job_id": queued["job_id"]})).json()
    assert cancelled["job_stage"] == "ERROR" and cancelled["job_result"][0]["finish_reason"] == "USER_CANCEL"
    await client.post("/v1/generation/cancel", data=json.dumps({"job_id": running["job_id"]}))
    final, _ = await poll(client, running["job_id"], lambda b: b["job_stage"] == "ERROR")
    assert final["job_result"][-1]["finish_reason"] == "USER_CANCEL"
    assert (await client.post("/v1/generation/cancel", params={"job_id": "nope"})).status == 404
    assert (await client.post("/v1/generation/cancel")).status == 422


async def test_queue_full(aiohttp_client, toy_app_factory):
    client, _ = await make_client(aiohttp_client, toy_app_factory, queue_size=2)
    for _ in range(2):
        await client.post("/v1/generation/text-to-image", data=holding())
    full = await (await client.post("/v1/generation/text-to-image", data=t2i(async_process=True))).json()
    assert full["job_id"] == "" and full["job_stage"] == "ERROR"
    assert full["job_result"] == [{"base64": None, "url": None, "seed": "", "finish_reason": "QUEUE_IS_FULL"}]
    sync_full = await (await client.post("/v1/generation/text-to-image", data=t2i())).json()
    assert sync_full[0]["finish_reason"] == "QUEUE_IS_FULL"
    stream = await client.post("/v1/generation/text-to-image?accept=image/png", data=t2i())
    assert stream.status == 409
    await client.post("/v1/generation/stop")


async def test_failing_job_reports_error_message_and_next_job_succeeds(aiohttp_client, toy_app_factory):
    client, _ = await make_client(aiohttp_client, toy_app_factory)
    items = await (await client.post("/v1/generation/text-to-image", data=t2i(prompt="please fail",
                                                                             image_number=2))).json()
    assert [i["finish_reason"] for i in items] == ["SUCCESS", "ERROR"]
    body = await (await client.post("/v1/generation/text-to-image",
                                    data=t2i(prompt="please fail", image_number=2, async_process=True))).json()
    final, _ = await poll(client, body["job_id"], lambda b: b["job_stage"] == "ERROR")
    assert re.search(r"Error: boom \d+ \(node sample, Fail\)", final["job_status"]), final["job_status"]
    assert (await (await client.post("/v1/generation/text-to-image", data=t2i())).json())[0]["finish_reason"] == "SUCCESS"
    unplannable = await client.post("/v1/generation/text-to-image", data=t2i(prompt="unplannable"))
    assert unplannable.status == 422 and "base_model_name" in (await unplannable.json())["detail"][0]["msg"]


async def test_job_queue_history_paging_and_delete(aiohttp_client, toy_app_factory):
    client, api = await make_client(aiohttp_client, toy_app_factory)
    ids = []
    for _ in range(5):
        ids.append((await (await client.post("/v1/generation/text-to-image", data=t2i(async_process=True))).json())["job_id"])
    for job_id in ids:
        await poll(client, job_id, lambda b: b["job_stage"] == "SUCCESS")
    queue = await (await client.get("/v1/generation/job-queue")).json()
    assert queue == {"running_size": 0, "finished_size": 5, "last_job_id": ids[-1]}
    history = await (await client.get("/v1/generation/job-history")).json()
    assert history["queue"] == [] and [h["job_id"] for h in history["history"]] == ids[::-1]
    assert set(history["history"][0]) == {"job_id", "in_queue_mills", "start_mills", "finish_mills", "is_finished"}
    page = await (await client.get("/v1/generation/job-history", params={"page": 1, "page_size": 2})).json()
    assert [h["job_id"] for h in page["history"]] == ids[::-1][2:4]
    one = await (await client.get("/v1/generation/job-history", params={"job_id": ids[0]})).json()
    assert [h["job_id"] for h in one["history"]] == [ids[0]]
    files = api.store.get(ids[0]).file_paths()
    deleted = await (await client.get("/v1/generation/job-history", params={"job_id": ids[0], "delete": "true"})).json()
    assert deleted == {"message": "Deleted"}
    assert not any(__import__("os").path.exists(p) for p in files)
    assert (await client.get("/v1/generation/query-job", params={"job_id": ids[0]})).status == 404
    again = await (await client.get("/v1/generation/job-history", params={"job_id": ids[0], "delete": "true"})).json()
    assert again == {"message": "Not found"}
    assert (await client.get("/v1/generation/job-history", params={"page": -1})).status == 422


async def test_query_job_unknown_and_missing(aiohttp_client, toy_app_factory):
    client, _ = await make_client(aiohttp_client, toy_app_factory)
    response = await client.get("/v1/generation/query-job", params={"job_id": "nope"})
    assert response.status == 404
    assert await response.json() == {"job_id": "", "job_type": "Not Found", "job_stage": "ERROR", "job_progress": 0,
                                     "job_status": "Job not found", "job_step_preview": None, "job_result": None}
    missing = await client.get("/v1/generation/query-job")
    assert missing.status == 422 and (await missing.json())["detail"][0]["loc"] == ["query", "job_id"]


async def test_queue_history_limit_evicts_files(aiohttp_client, toy_app_factory):
    client, api = await make_client(aiohttp_client, toy_app_factory, queue_history=2)
    ids = []
    for _ in range(3):
        items = await (await client.post("/v1/generation/text-to-image", data=t2i())).json()
        ids.append(items[0]["url"])
    history = await (await client.get("/v1/generation/job-history")).json()
    assert len(history["history"]) == 2
    first_path = ids[0].split("/files/", 1)[1]
    assert (await client.get(f"/files/{first_path}")).status == 404


async def test_api_key(aiohttp_client, toy_app_factory):
    client, _ = await make_client(aiohttp_client, toy_app_factory, apikey="sesame")
    assert (await client.get("/v1/generation/job-queue")).status == 403
    assert await (await client.get("/ping")).json() == {"detail": "Forbidden"}
    assert (await client.post("/prompt", json={})).status == 403
    ok = await client.get("/v1/generation/job-queue", headers={"X-API-KEY": "sesame"})
    assert ok.status == 200
    items = await (await client.post("/v1/generation/text-to-image", data=t2i(),
                                     headers={"X-API-KEY": "sesame"})).json()
    path = items[0]["url"].split("/files/", 1)[1]
    assert (await client.get(f"/files/{path}")).status == 200  # files stay public
    assert (await client.get("/v1/generation/job-queue", headers={"X-API-KEY": "wrong"})).status == 403


async def test_without_api_key_everything_is_open(aiohttp_client, toy_app_factory):
    client, _ = await make_client(aiohttp_client, toy_app_factory)
    assert await (await client.get("/ping")).json() == "pong"
    response = await client.get("/v1/engines/styles", headers={"Origin": "http://example.test"})
    assert await response.json() == ["Fooocus V2", "Fooocus Enhance"]
    assert response.headers["Access-Control-Allow-Origin"] == "http://example.test"
    preflight = await client.options("/v1/generation/text-to-image", headers={
        "Origin": "http://example.test", "Access-Control-Request-Method": "POST"})
    assert preflight.status == 200 and "POST" in preflight.headers["Access-Control-Allow-Methods"]


async def test_bad_bodies_are_422(aiohttp_client, toy_app_factory):
    client, _ = await make_client(aiohttp_client, toy_app_factory)
    response = await client.post("/v1/generation/text-to-image", data=b"{oops")
    body = await response.json()
    assert response.status == 422 and body["detail"][0]["type"] == "json_invalid"
    response = await client.post("/v1/generation/text-to-image", data=t2i(image_number=33))
    body = await response.json()
    assert response.status == 422 and body["detail"][0]["loc"] == ["body", "image_number"]
    response = await client.post("/v1/generation/text-to-image", data=json.dumps([1, 2]))
    assert response.status == 422


class Receiver:
    def __init__(self, fail_first=0, hang=False):
        self.fail_first = fail_first
        self.hang = hang
        self.payloads = []
        self.calls = 0
        self.released = asyncio.Event()  # ends a hang

    async def handle(self, request):
        self.calls += 1
        if self.hang:
            await asyncio.wait_for(self.released.wait(), 30)
        if self.calls <= self.fail_first:
            return web.Response(status=500)
        self.payloads.append(await request.json())
        return web.json_response({"ok": True})


async def start_receiver(aiohttp_server, receiver):
    app = web.Application()
    app.router.add_post("/hook", receiver.handle)
    server = await aiohttp_server(app)
    return f"http://127.0.0.1:{server.port}/hook"


async def test_webhook_delivered_and_retried(aiohttp_client, aiohttp_server, toy_app_factory):
    receiver = Receiver(fail_first=1)
    url = await start_receiver(aiohttp_server, receiver)
    client, api = await make_client(aiohttp_client, toy_app_factory)
    items = await (await client.post("/v1/generation/text-to-image", data=t2i(webhook_url=url, image_seed=5))).json()

    async def delivered():
        return receiver.payloads
    payload = (await until(delivered, what="a webhook delivery"))[0]
    assert receiver.calls == 2
    assert payload["job_result"] == [{"url": items[0]["url"], "seed": "5"}]
    assert payload["job_stage"] == "SUCCESS" and payload["finish_reason"] == "SUCCESS"
    async def recorded():
        record = api.store.get(payload["job_id"])
        return record if record.webhook.outcome else None
    record = await until(recorded, what="the webhook outcome on the job record")
    assert record.webhook.outcome == "delivered" and record.webhook.attempts == 2


async def test_hanging_webhook_does_not_block_the_next_job(aiohttp_client, aiohttp_server, toy_app_factory):
    receiver = Receiver(hang=True)
    url = await start_receiver(aiohttp_server, receiver)
    client, api = await make_client(aiohttp_client, toy_app_factory,
                                    webhook_options={"timeout_s": 25, "max_attempts": 1}, webhook_url=url)
    first = await (await client.post("/v1/generation/text-to-image", data=t2i())).json()
    job_id = first[0]["url"].rsplit("/", 1)[1].rsplit("-", 1)[0]

    async def hanging():
        return receiver.calls
    await until(hanging, what="the first webhook reaching its receiver")
    # delivered on the worker, the hanging webhook would hold the queue for its 25 s timeout
    second = await asyncio.wait_for(client.post("/v1/generation/text-to-image", data=t2i()), 20)
    assert first[0]["finish_reason"] == (await second.json())[0]["finish_reason"] == "SUCCESS"
    assert api.store.get(job_id).webhook.outcome is None  # the first delivery is still hanging
    receiver.released.set()
