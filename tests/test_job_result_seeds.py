"""Every result item of a Fooocus job carries the seed its image was (or would have been) made
with, also the ERROR / USER_CANCEL item of a failed or stopped job whose request asked for a
random seed (issue 15: such items said "-1")."""
import asyncio
import json
import time

from fooocus_toy import attach_toy_fooocus
from server.jobs import FinishReason, JobRecord

T2I = "/v1/generation/text-to-image"


async def client_for(aiohttp_client, toy_app_factory):
    app = toy_app_factory()
    attach_toy_fooocus(app)
    return await aiohttp_client(app.make_web_app())


async def until_finished(client, job_id, timeout=20.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        body = await (await client.get("/v1/generation/query-job", params={"job_id": job_id})).json()
        if body["job_stage"] in ("SUCCESS", "ERROR"):
            return body
        await asyncio.sleep(0.01)
    raise AssertionError(f"job {job_id} did not finish")


async def test_failed_image_item_carries_the_chosen_seed(aiohttp_client, toy_app_factory):
    client = await client_for(aiohttp_client, toy_app_factory)
    # the toy planner picks 1000 for a random seed; image 2 of "please fail" fails
    items = await (await client.post(T2I, data=json.dumps({"prompt": "please fail", "image_number": 2,
                                                           "image_seed": -1}))).json()
    assert [(i["seed"], i["finish_reason"]) for i in items] == [("1000", "SUCCESS"), ("1001", "ERROR")]
    body = await (await client.post(T2I, data=json.dumps({"prompt": "please fail", "image_number": 2,
                                                          "image_seed": 41, "async_process": True}))).json()
    final = await until_finished(client, body["job_id"])
    assert [(i["seed"], i["finish_reason"]) for i in final["job_result"]] == [("41", "SUCCESS"), ("42", "ERROR")]


async def test_stopped_image_item_carries_the_chosen_seed(aiohttp_client, toy_app_factory):
    client = await client_for(aiohttp_client, toy_app_factory)
    # "hold": the toy job's steps take 0.2 s, so it is still running when the stop lands
    body = await (await client.post(T2I, data=json.dumps({"prompt": "hold a cat", "async_process": True,
                                                          "advanced_params": {"overwrite_step": 200}}))).json()
    deadline = time.monotonic() + 20
    while (await (await client.get("/v1/generation/query-job", params={"job_id": body["job_id"]})).json())[
            "job_stage"] != "RUNNING":
        assert time.monotonic() < deadline, "the job never started"
        await asyncio.sleep(0.01)
    await client.post("/v1/generation/stop")
    final = await until_finished(client, body["job_id"])
    assert [(i["seed"], i["finish_reason"]) for i in final["job_result"]] == [("1000", "USER_CANCEL")]


def test_a_job_that_never_ran_reports_the_requested_seed():
    record = JobRecord(job_type="Text to Image", params={"image_seed": 5})
    record.mark_failed("no such model", FinishReason.ERROR)
    assert record.results[0].seed == "5"
    record.mark_failed("boom", FinishReason.ERROR, seed=77)
    assert record.results[0].seed == "77"
