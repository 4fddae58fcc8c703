"""What the Fooocus image-route tests do as clients: start an App with the Fooocus API over the
demo models, encode images, and wait for a job to end."""
from __future__ import annotations

import asyncio
import base64
import time

from server.fooocus.setup import attach_fooocus_api


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("utf-8")


async def start_fooocus_server(aiohttp_client, demo_app_factory, **overrides):
    """(client, app, api) of an in-process server over the demo models."""
    app = demo_app_factory(**overrides)
    api = attach_fooocus_api(app)
    return await aiohttp_client(app.make_web_app()), app, api


async def wait_for_job(client, job_id: str, timeout: float = 800.0) -> dict:
    """query-job until the job is SUCCESS or ERROR (generous: the image jobs run at ~1 MP on a CPU)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        body = await (await client.get("/v1/generation/query-job", params={"job_id": job_id})).json()
        if body["job_stage"] in ("SUCCESS", "ERROR"):
            return body
        await asyncio.sleep(0.05)
    raise AssertionError(f"job {job_id} did not finish")
