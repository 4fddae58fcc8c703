"""WebhookSender against real aiohttp receivers on 127.0.0.1: exact payload, retry after a
500, isolation from a hanging receiver, bounded failure on a dead port, no retry on 4xx."""

import asyncio
import socket
import threading
import time

from aiohttp import web

from server.jobs import ImageResult, JobRecord, WebhookSender


def finished_record() -> JobRecord:
    rec = JobRecord(job_type="Text to Image", params={"image_seed": 3},
                    job_id="717ec0b5-85df-4174-80d6-bddf93cd8248", webhook_url=None)
    rec.mark_running()
    rec.mark_success([ImageResult(seed="3283449865282320931", path="/o/a.png",
                                  url="http://127.0.0.1:8888/files/2023-12-29/a.png")])
    return rec


class Receiver:
    """A local webhook receiver whose answers are scripted per request."""

    def __init__(self, statuses=(200,), hang: asyncio.Event | None = None):
        self.statuses = list(statuses)
        self.hang = hang
        self.bodies = []
        self.arrivals = []
        self.arrived = asyncio.Event()  # set by the first request

    async def handle(self, request: web.Request) -> web.Response:
        self.arrivals.append(time.monotonic())
        self.bodies.append(await request.json())
        self.arrived.set()
        if self.hang is not None:
            await self.hang.wait()
        status = self.statuses.pop(0) if len(self.statuses) > 1 else self.statuses[0]
        return web.json_response({"ok": status == 200}, status=status)


async def serve(aiohttp_server, receiver: Receiver) -> str:
    app = web.Application()
    app.router.add_post("/hook", receiver.handle)
    server = await aiohttp_server(app, host="127.0.0.1")
    return str(server.make_url("/hook"))


def sender(outcomes: list, **kw) -> WebhookSender:
    kw.setdefault("timeout_s", 5.0)
    kw.setdefault("backoff_initial_s", 0.01)
    return WebhookSender(on_outcome=outcomes.append, **kw)


async def test_delivers_the_exact_payload(aiohttp_server):
    receiver = Receiver()
    url = await serve(aiohttp_server, receiver)
    outcomes = []
    rec = finished_record()
    async with sender(outcomes) as s:
        assert s.submit_record(rec) is False  # no URL anywhere: nothing to send
        assert s.submit_record(rec, fallback_url=url) is True
        await s.wait_idle()
    assert receiver.bodies == [{
        "job_id": "717ec0b5-85df-4174-80d6-bddf93cd8248",
        "job_result": [{"url": "http://127.0.0.1:8888/files/2023-12-29/a.png",
                        "seed": "3283449865282320931"}],
        "job_stage": "SUCCESS",
        "finish_reason": "SUCCESS",
    }]
    [out] = outcomes
    assert (out.delivered, out.attempts, out.status, out.error, out.url) == (True, 1, 200, None, url)
    out.apply_to(rec)
    assert (rec.webhook.outcome, rec.webhook.attempts, rec.webhook.delivered_ms) == (
        "delivered", 1, out.at_ms)


async def test_retries_after_a_500_with_backoff(aiohttp_server):
    receiver = Receiver(statuses=(500, 500, 200))
    url = await serve(aiohttp_server, receiver)
    outcomes = []
    async with sender(outcomes, max_attempts=4, backoff_initial_s=0.05, backoff_factor=2.0) as s:
        s.submit(url, {"job_id": "j1", "job_result": []}, job_id="j1")
        await s.wait_idle()
    assert len(receiver.bodies) == 3 and all(b == {"job_id": "j1", "job_result": []} for b in receiver.bodies)
    gaps = [b - a for a, b in zip(receiver.arrivals, receiver.arrivals[1:])]
    assert gaps[0] >= 0.045 and gaps[1] >= 0.095  # 0.05 s then 0.1 s
    [out] = outcomes
    assert (out.delivered, out.attempts, out.status) == (True, 3, 200)


async def test_hanging_receiver_does_not_delay_another(aiohttp_server):
    release = asyncio.Event()
    hanging = Receiver(hang=release)
    fast = Receiver()
    hang_url = await serve(aiohttp_server, hanging)
    fast_url = await serve(aiohttp_server, fast)
    outcomes = []
    delivered_fast = asyncio.Event()

    def on_outcome(out):
        outcomes.append(out)
        if out.job_id == "fast":
            delivered_fast.set()

    s = WebhookSender(on_outcome=on_outcome, timeout_s=3.0, max_attempts=1, concurrency=2)
    await s.start()
    try:
        s.submit(hang_url, {"job_id": "slow", "job_result": []}, job_id="slow")
        await asyncio.wait_for(hanging.arrived.wait(), 30)  # the slow receiver now holds one delivery slot
        s.submit(fast_url, {"job_id": "fast", "job_result": []}, job_id="fast")
        await asyncio.wait_for(delivered_fast.wait(), 30)
        # delivered while the slow one still hangs: had it waited for the slow one, it would come
        # after the slow one's 3 s timeout
        assert [o.job_id for o in outcomes] == ["fast"] and s.pending_count == 1
        await s.wait_idle()
        slow = next(o for o in outcomes if o.job_id == "slow")
        assert not slow.delivered and "timed out" in slow.error and slow.status is None
    finally:
        release.set()
        await s.stop()


async def test_dead_port_fails_after_bounded_retries():
    with socket.socket() as sock:  # find a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    outcomes = []
    async with sender(outcomes, max_attempts=3, backoff_initial_s=0.01) as s:
        t0 = time.monotonic()
        s.submit(f"http://127.0.0.1:{port}/hook", {"job_id": "d"}, job_id="d")
        await s.wait_idle()
        assert time.monotonic() - t0 < 10.0  # refused at once: far from 3 attempts x the 5 s timeout
    [out] = outcomes
    assert (out.delivered, out.attempts, out.status) == (False, 3, None)
    assert "Connect" in out.error
    rec = finished_record()
    out.apply_to(rec)
    assert (rec.webhook.outcome, rec.webhook.attempts, rec.webhook.delivered_ms) == ("failed", 3, None)
    assert rec.webhook.last_error == out.error


async def test_client_errors_are_not_retried_and_callback_errors_are_contained(aiohttp_server):
    receiver = Receiver(statuses=(404,))
    url = await serve(aiohttp_server, receiver)
    seen = []

    async def bad_callback(out):
        seen.append(out)
        raise RuntimeError("store unavailable")

    async with WebhookSender(on_outcome=bad_callback, max_attempts=5, backoff_initial_s=0.01) as s:
        s.submit(url, {"job_id": "x"}, job_id="x")
        s.submit("not a url", {"job_id": "y"}, job_id="y")
        await s.wait_idle()
    assert len(receiver.bodies) == 1
    by_id = {o.job_id: o for o in seen}
    assert (by_id["x"].delivered, by_id["x"].attempts, by_id["x"].error) == (False, 1, "HTTP 404")
    assert not by_id["y"].delivered and by_id["y"].attempts == 1


async def test_submit_from_a_worker_thread_and_after_stop(aiohttp_server):
    receiver = Receiver()
    url = await serve(aiohttp_server, receiver)
    outcomes = []
    s = sender(outcomes)
    assert s.submit(url, {}, job_id="early") is False  # not started
    await s.start()
    accepted = []
    t = threading.Thread(target=lambda: accepted.append(s.submit(url, {"job_id": "t"}, job_id="t")))
    t.start()
    t.join()
    await asyncio.sleep(0)  # let call_soon_threadsafe land
    await s.wait_idle()
    await s.stop()
    assert accepted == [True] and receiver.bodies == [{"job_id": "t"}]
    assert outcomes[0].delivered
    assert s.submit(url, {}, job_id="late") is False


async def test_stop_reports_undelivered_as_failed(aiohttp_server):
    release = asyncio.Event()
    receiver = Receiver(hang=release)
    url = await serve(aiohttp_server, receiver)
    outcomes = []
    s = sender(outcomes, timeout_s=10.0)
    await s.start()
    s.submit(url, {"job_id": "h"}, job_id="h")
    await asyncio.wait_for(receiver.arrived.wait(), 30)  # the delivery is in flight
    t0 = time.monotonic()
    await s.stop(drain_timeout_s=0.05)
    release.set()
    assert time.monotonic() - t0 < 5.0  # did not wait for the 10 s timeout
    [out] = outcomes
    assert not out.delivered and out.attempts == 1 and "stopped" in out.error
