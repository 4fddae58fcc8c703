"""Webhook delivery that can never hold up generation.

Upstream Fooocus-API POSTs the webhook synchronously in its worker thread (15 s timeout, no
retry), so a slow receiver delays the next job. Here `WebhookSender.submit` only enqueues (it may
be called from the event loop or from a worker thread) and returns at once; `concurrency` tasks
on the event loop take deliveries from an asyncio queue, one attempt at a time. A failed attempt
is put back on the queue after an exponential backoff timer, so waiting for a retry holds no
delivery slot and one dead or hanging receiver (bounded by `timeout_s` per attempt) cannot block
deliveries to others while a slot is free.

An attempt succeeds on any 2xx. Connection errors, timeouts, 5xx, 408 and 429 are retried up to
`max_attempts` in all; other statuses and malformed URLs fail at once. The final result of each
delivery goes to `on_outcome(WebhookOutcome)` (a plain function or a coroutine function), which
the server uses to store it in the job record; errors are logged, never raised to the caller.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import threading
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable

import aiohttp

from .record import JobRecord, now_ms

_RETRYABLE_STATUSES = frozenset({408, 429})


@dataclass(frozen=True)
class WebhookOutcome:
    job_id: str
    url: str
    delivered: bool
    attempts: int
    status: int | None  # last HTTP status received, None if no response came
    error: str | None  # last error text, None when delivered
    at_ms: int

    def apply_to(self, record: JobRecord) -> None:
        """Copy this outcome into the record's webhook state (the caller then stores it)."""
        record.webhook.attempts = self.attempts
        record.webhook.last_error = self.error
        record.webhook.delivered_ms = self.at_ms if self.delivered else None
        record.webhook.outcome = "delivered" if self.delivered else "failed"


OutcomeCallback = Callable[[WebhookOutcome], "Awaitable[Any] | Any"]


@dataclass(eq=False)
class _Delivery:
    job_id: str
    url: str
    payload: dict
    attempts: int = 0
    status: int | None = None
    error: str | None = None
    retry_timer: asyncio.TimerHandle | None = field(default=None, repr=False)


class WebhookSender:
    def __init__(
        self,
        *,
        on_outcome: OutcomeCallback | None = None,
        timeout_s: float = 15.0,
        max_attempts: int = 3,
        backoff_initial_s: float = 1.0,
        backoff_factor: float = 2.0,
        backoff_max_s: float = 60.0,
        concurrency: int = 4,
        max_pending: int = 1000,
        logger: logging.Logger | None = None,
    ) -> None:
        if max_attempts < 1 or concurrency < 1:
            raise ValueError("max_attempts and concurrency must be at least 1")
        self._on_outcome = on_outcome
        self._timeout_s = timeout_s
        self._max_attempts = max_attempts
        self._backoff_initial_s = backoff_initial_s
        self._backoff_factor = backoff_factor
        self._backoff_max_s = backoff_max_s
        self._concurrency = concurrency
        self._max_pending = max_pending
        self._log = logger or logging.getLogger(__name__)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread: int | None = None
        self._session: aiohttp.ClientSession | None = None
        self._queue: asyncio.Queue[_Delivery] | None = None
        self._workers: list[asyncio.Task] = []
        self._pending: set[_Delivery] = set()  # accepted, no outcome reported yet
        self._callbacks: set[asyncio.Task] = set()
        self._idle: asyncio.Event | None = None
        self._accepting = False

    # ----------------------------------------------------------------- lifecycle
    async def start(self) -> None:
        if self._session is not None:
            return
        self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        self._session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=self._timeout_s)
        )
        self._queue = asyncio.Queue()
        self._idle = asyncio.Event()
        self._idle.set()
        self._workers = [
            asyncio.create_task(self._work(), name=f"webhook-sender-{i}")
            for i in range(self._concurrency)
        ]
        self._accepting = True

    async def stop(self, drain_timeout_s: float = 5.0) -> None:
        """Stop accepting, give in-flight deliveries up to `drain_timeout_s`, then report the
        rest as failed and close the HTTP session."""
        if self._session is None:
            return
        self._accepting = False
        if drain_timeout_s > 0:
            try:
                await asyncio.wait_for(self._idle.wait(), drain_timeout_s)
            except asyncio.TimeoutError:
                pass
        for task in self._workers:
            task.cancel()
        await asyncio.gather(*self._workers, return_exceptions=True)
        self._workers = []
        for delivery in list(self._pending):
            if delivery.retry_timer is not None:
                delivery.retry_timer.cancel()
            delivery.error = delivery.error or "webhook sender stopped before delivery"
            self._finish(delivery, delivered=False)
        if self._callbacks:
            await asyncio.gather(*self._callbacks, return_exceptions=True)
        await self._session.close()
        self._session = None

    async def __aenter__(self) -> "WebhookSender":
        await self.start()
        return self

    async def __aexit__(self, *exc) -> None:
        await self.stop()

    # ----------------------------------------------------------------- submitting
    @property
    def pending_count(self) -> int:
        return len(self._pending)

    def submit(self, url: str, payload: dict, *, job_id: str) -> bool:
        """Queue one delivery; callable from any thread; never blocks, never raises.

        Returns False (and logs) if the sender is not running; the delivery is then dropped
        without an outcome. A full backlog is reported through `on_outcome` as a failure.
        """
        if not self._accepting or self._loop is None:
            self._log.warning("webhook for job %s to %s dropped: sender not running", job_id, url)
            return False
        delivery = _Delivery(job_id=job_id, url=url, payload=payload)
        if threading.get_ident() == self._loop_thread:
            self._accept(delivery)
            return True
        try:
            self._loop.call_soon_threadsafe(self._accept, delivery)
        except RuntimeError:  # loop already closed
            self._log.warning("webhook for job %s to %s dropped: loop closed", job_id, url)
            return False
        return True

    def submit_record(self, record: JobRecord, fallback_url: str | None = None) -> bool:
        """Queue the finished job's payload to its own webhook_url, else to `fallback_url`
        (`--webhook-url`). Returns False when there is nowhere to send it."""
        url = record.webhook_url or fallback_url
        if not url:
            return False
        return self.submit(url, record.to_webhook_payload(), job_id=record.job_id)

    async def wait_idle(self) -> None:
        """Wait until every accepted delivery has its outcome reported (tests, shutdown)."""
        if self._idle is not None:
            await self._idle.wait()
        if self._callbacks:
            await asyncio.gather(*list(self._callbacks), return_exceptions=True)

    # ----------------------------------------------------------------- loop-thread internals
    def _accept(self, delivery: _Delivery) -> None:
        if len(self._pending) >= self._max_pending:
            delivery.error = f"webhook backlog full ({self._max_pending} pending)"
            self._pending.add(delivery)
            self._finish(delivery, delivered=False)
            return
        self._pending.add(delivery)
        self._idle.clear()
        self._queue.put_nowait(delivery)

    def _requeue(self, delivery: _Delivery) -> None:
        delivery.retry_timer = None
        if delivery in self._pending:
            self._queue.put_nowait(delivery)

    async def _work(self) -> None:
        while True:
            delivery = await self._queue.get()
            retry = await self._attempt(delivery)
            if retry is None:
                self._finish(delivery, delivered=True)
            elif retry and delivery.attempts < self._max_attempts:
                delay = min(
                    self._backoff_max_s,
                    self._backoff_initial_s * self._backoff_factor ** (delivery.attempts - 1),
                )
                self._log.info(
                    "webhook for job %s to %s failed (attempt %d: %s), retrying in %.2fs",
                    delivery.job_id, delivery.url, delivery.attempts, delivery.error, delay,
                )
                delivery.retry_timer = self._loop.call_later(delay, self._requeue, delivery)
            else:
                self._finish(delivery, delivered=False)

    async def _attempt(self, delivery: _Delivery) -> bool | None:
        """One POST. Returns None on success, else whether the failure is worth retrying."""
        delivery.attempts += 1
        try:
            async with self._session.post(delivery.url, json=delivery.payload) as resp:
                delivery.status = resp.status
                if 200 <= resp.status < 300:
                    delivery.error = None
                    return None
                delivery.error = f"HTTP {resp.status}"
                return resp.status >= 500 or resp.status in _RETRYABLE_STATUSES
        except asyncio.TimeoutError:
            delivery.error = f"timed out after {self._timeout_s:g}s"
            return True
        except aiohttp.InvalidURL as e:
            delivery.error = f"invalid URL: {e}"
            return False
        except aiohttp.ClientError as e:
            delivery.error = f"{type(e).__name__}: {e}"
            return True
        except Exception as e:  # e.g. payload not JSON-able: retrying cannot help
            delivery.error = f"{type(e).__name__}: {e}"
            return False

    def _finish(self, delivery: _Delivery, *, delivered: bool) -> None:
        self._pending.discard(delivery)
        if not self._pending and self._idle is not None:
            self._idle.set()
        outcome = WebhookOutcome(
            job_id=delivery.job_id,
            url=delivery.url,
            delivered=delivered,
            attempts=delivery.attempts,
            status=delivery.status,
            error=None if delivered else delivery.error,
            at_ms=now_ms(),
        )
        if not delivered:
            self._log.warning(
                "webhook for job %s to %s failed after %d attempt(s): %s",
                delivery.job_id, delivery.url, delivery.attempts, delivery.error,
            )
        self._report(outcome)

    def _report(self, outcome: WebhookOutcome) -> None:
        if self._on_outcome is None:
            return
        try:
            result = self._on_outcome(outcome)
        except Exception:
            self._log.exception("webhook outcome callback failed for job %s", outcome.job_id)
            return
        if inspect.isawaitable(result):
            task = asyncio.ensure_future(self._guard(result, outcome.job_id))
            self._callbacks.add(task)
            task.add_done_callback(self._callbacks.discard)

    async def _guard(self, awaitable: Awaitable, job_id: str) -> None:
        try:
            await awaitable
        except Exception:
            self._log.exception("webhook outcome callback failed for job %s", job_id)
