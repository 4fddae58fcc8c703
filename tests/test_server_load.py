"""Load: 200 prompts from 20 concurrent clients all complete; /ping stays fast while jobs run."""
import asyncio
import time

import pytest


async def test_200_prompts_from_20_clients_none_lost_and_ping_fast(aiohttp_client, toy_app_factory):
    app = toy_app_factory()
    client = await aiohttp_client(app.make_web_app())
    submitted: list[str] = []

    async def one_client(index: int):
        for n in range(10):
            prompt = {"n": {"class_type": "Number", "inputs": {"value": index * 10 + n}},
                      "slow": {"class_type": "Slow", "inputs": {"x": ["n", 0], "steps": 2, "delay": 0.002}},
                      "out": {"class_type": "Output", "inputs": {"value": ["slow", 0]}}}
            response = await client.post("/prompt", json={"prompt": prompt, "client_id": f"client-{index}"})
            assert response.status == 200
            submitted.append((await response.json())["prompt_id"])

    ping_latencies: list[float] = []
    done = asyncio.Event()

    async def pinger():
        while not done.is_set():
            started = time.perf_counter()
            response = await client.get("/ping")
            assert response.status == 200
            ping_latencies.append(time.perf_counter() - started)
            await asyncio.sleep(0.005)

    ping_task = asyncio.create_task(pinger())
    await asyncio.gather(*(one_client(i) for i in range(20)))
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        history = await (await client.get("/history")).json()
        if len(history) >= 200:
            break
        await asyncio.sleep(0.1)
    done.set()
    await ping_task
    history = await (await client.get("/history")).json()
    assert len(submitted) == 200 and len(set(submitted)) == 200
    assert set(history) == set(submitted)
    assert all(entry["status"]["status_str"] == "success" for entry in history.values())
    values = sorted(entry["outputs"]["out"]["values"][0] for entry in history.values())
    assert values == sorted(i * 10 + n for i in range(20) for n in range(10))
    ping_latencies.sort()
    p99 = ping_latencies[int(len(ping_latencies) * 0.99) - 1]
    assert len(ping_latencies) > 20
    assert p99 < 0.1, f"/ping p99 {p99 * 1000:.1f} ms"
