"""Load: 200 prompts from 20 concurrent clients all complete; /ping stays fast while jobs run.

The checks hold on a loaded 2-core machine: what they prove is that jobs never run on the event
loop, so they are set against a job that holds the worker for HOLD_S seconds (a server running it
on the loop would answer no /ping at all meanwhile), and the p99 bound is generous.
"""
import asyncio
import time

from waiting import until

HOLD_S = 2.0  # one step of the first prompt sleeps this long
P99_BOUND_S = 0.25


async def test_200_prompts_from_20_clients_none_lost_and_ping_fast(aiohttp_client, toy_app_factory):
    app = toy_app_factory()
    client = await aiohttp_client(app.make_web_app())
    submitted: list[str] = []
    holding = {"n": {"class_type": "Number", "inputs": {"value": -1}},
               "slow": {"class_type": "Slow", "inputs": {"x": ["n", 0], "steps": 1, "delay": HOLD_S}},
               "out": {"class_type": "Output", "inputs": {"value": ["slow", 0]}}}

    async def one_client(index: int):
        for n in range(10):
            prompt = {"n": {"class_type": "Number", "inputs": {"value": index * 10 + n}},
                      "slow": {"class_type": "Slow", "inputs": {"x": ["n", 0], "steps": 2, "delay": 0.002}},
                      "out": {"class_type": "Output", "inputs": {"value": ["slow", 0]}}}
            response = await client.post("/prompt", json={"prompt": prompt, "client_id": f"client-{index}"})
            assert response.status == 200
            submitted.append((await response.json())["prompt_id"])

    ping_latencies: list[float] = []
    answered: list[float] = []  # wall-clock times of the answers
    done = asyncio.Event()

    async def pinger():
        while not done.is_set():
            started = time.perf_counter()
            response = await client.get("/ping")
            assert response.status == 200
            ping_latencies.append(time.perf_counter() - started)
            answered.append(time.time())
            await asyncio.sleep(0.005)

    ping_task = asyncio.create_task(pinger())
    hold_id = (await (await client.post("/prompt", json={"prompt": holding})).json())["prompt_id"]
    await asyncio.gather(*(one_client(i) for i in range(20)))

    async def all_done():
        return len(await (await client.get("/history")).json()) >= 201
    await until(all_done, timeout=300, interval=0.1, what="201 finished prompts")
    done.set()
    await ping_task
    history = await (await client.get("/history")).json()
    hold = history.pop(hold_id)
    assert hold["status"]["status_str"] == "success"
    times = {event: data["timestamp"] / 1000 for event, data in hold["status"]["messages"]}
    during_hold = [t for t in answered if times["execution_start"] < t < times["execution_success"]]
    assert len(during_hold) >= 5, f"{len(during_hold)} pings answered while a job held the worker {HOLD_S} s"
    assert len(submitted) == 200 and len(set(submitted)) == 200
    assert set(history) == set(submitted)
    assert all(entry["status"]["status_str"] == "success" for entry in history.values())
    values = sorted(entry["outputs"]["out"]["values"][0] for entry in history.values())
    assert values == sorted(i * 10 + n for i in range(20) for n in range(10))
    ping_latencies.sort()
    p99 = ping_latencies[int(len(ping_latencies) * 0.99) - 1]
    assert len(ping_latencies) > 20
    assert p99 < P99_BOUND_S, f"/ping p99 {p99 * 1000:.1f} ms"
