"""Fooocus jobs on the shared queue: submission, progress, stop/cancel, results, webhooks, recovery.

The job record in SQLite is the truth; the queue holds what still has to run. A job is written
when queued, on each stage change and when finished, so a killed process loses no job.
"""
from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Protocol

from nodes.previews import JOB_PREVIEWS_KEY
from server.jobs import FinishReason, ImageResult, JobRecord, JobStore, WebhookSender
from server.jobs.record import queue_full_async_response, queue_full_item
from server.downloads.fetcher import FilesToFetch
from server.queue import PromptQueue, QueueFull, QueueItem, RunSpec

from .job_downloads import deferred_plan, fetch_then_plan
from .outputs import OutputStore, png_base64, to_data_url

log = logging.getLogger(__name__)

RESTART_REQUEUE_FAILED = "server restarted and the job's request could not be planned again: {}"
# finished jobs whose last step preview stays queryable (each holds one latent or a small PNG)
FINISHED_PREVIEWS_KEPT = 32


@dataclass
class JobPlan:
    """What the worker runs for one job: one workflow run per image."""

    runs: list[RunSpec]
    seeds: list[int]
    steps_per_run: int
    warnings: list[str] = field(default_factory=list)
    # model files to fetch before the job can be planned (its runs are a placeholder until then)
    # and the ModelFetcher that fetches them (server/fooocus/job_downloads.py)
    downloads: list = field(default_factory=list)
    fetcher: Any = None


class Planner(Protocol):
    def __call__(self, job_type: str, params: dict, job_id: str) -> JobPlan: ...


class SubmitRefused(Exception):
    """The queue is full: the caller answers QUEUE_IS_FULL."""


class JobCannotRun(Exception):
    """A valid request the server cannot run as set up (e.g. a model file is missing): the job is
    recorded as failed with this message, so every job route reports it."""


class _JobObserver:
    """Follows one job on the worker thread and keeps its record current."""

    def __init__(self, jobs: "FooocusJobs", record: JobRecord, plan: JobPlan) -> None:
        self.jobs = jobs
        self.record = record
        self.plan = plan
        self.run_index = 0
        self.results: list[ImageResult] = []

    def _total_steps(self) -> int:
        return max(1, len(self.plan.runs) * max(1, self.plan.steps_per_run))

    def _status(self, text: str) -> str:
        """Status texts carry the plan's warnings (a model fallback, a skipped LoRA) to the end."""
        return f"{text} (warning: {'; '.join(self.plan.warnings)})" if self.plan.warnings else text

    def on_start(self) -> None:
        self.record.mark_running()
        first = (f"downloading {len(self.plan.downloads)} model file(s)" if self.plan.downloads
                 else f"Preparing task 1/{len(self.plan.runs)} ...")
        self.record.set_progress(1, self._status(first))
        self.jobs.store.update(self.record)

    def prepare(self, sink, cancelled: Callable[[], bool]):
        """Worker thread, before the runs: a job waiting for model files fetches them (its status
        shows each file's progress), then is planned; returns its runs (None: nothing to do)."""
        return fetch_then_plan(self, sink, cancelled) if self.plan.downloads else None

    def on_event(self, event: str, data: dict) -> None:
        if event != "progress" or not self.jobs.is_sampler_node(data.get("node")):
            return
        steps = max(1, self.plan.steps_per_run)
        done = self.run_index * steps + min(int(data.get("value", 0)), steps)
        progress = int(15 + 85 * done / self._total_steps())
        status = self._status(f"Step {int(data.get('value', 0))}/{int(data.get('max', steps))} "
                              f"in the {self.run_index + 1}-th Sampling")
        self.record.set_progress(min(progress, 99), status)
        self.jobs.store.update_progress(self.record.job_id, self.record.progress, status)

    def on_image(self, image: Any, node_id: str, full_size: bool) -> None:
        """Keep the latest step preview; it is rendered only when a client asks for it."""
        if full_size or self.record.params.get("advanced_params", {}).get("disable_preview"):
            return
        if callable(image) and self.record.job_id in self.jobs.previews_wanted:
            image = image()  # render now, inside the node (where the TAESD decoder is at hand)
        self.jobs.previews[self.record.job_id] = image

    def _seed_of(self, index: int) -> int | None:
        return self.plan.seeds[index] if 0 <= index < len(self.plan.seeds) else None

    def on_run_finished(self, index: int, outcome) -> None:
        seed = self._seed_of(index)
        for ui in outcome.outputs.values():
            for image in ui.get("fooocus_images", []):
                self.results.append(ImageResult(seed=str(-1 if seed is None else seed), url=image["url"],
                                                path=image["path"]))
            # what a node changed on its own (e.g. an expansion that read part of a long prompt)
            for warning in ui.get("fooocus_warnings", []):
                if warning not in self.plan.warnings:
                    self.plan.warnings.append(warning)
        self.run_index = index + 1
        if outcome.status == "success" and self.run_index < len(self.plan.runs):
            self.record.set_progress(self.record.progress,
                                     self._status(f"Preparing task {self.run_index + 1}/{len(self.plan.runs)} ..."))

    def on_removed(self) -> None:
        """Taken off the queue before it ran (a ComfyUI client's queue delete or job cancel)."""
        self.jobs.cancelled_waiting(self.record)

    def on_finish(self, outcome) -> None:
        record = self.record
        last_seed = self._seed_of(self.run_index - 1)  # the run that stopped or failed
        if outcome.status == "success":
            record.mark_success(self.results)
            record.status = self._status(record.status)
        elif outcome.status == "interrupted":
            record.mark_failed("stopped by request", FinishReason.USER_CANCEL, partial_results=self.results,
                               seed=last_seed)
            record.status = "Stopped by request" + (f" after {len(self.results)} image(s)" if self.results else "")
        else:
            error = outcome.error or {}
            message = error.get("exception_message") or "the job failed"
            where = f" (node {error.get('node_id')}, {error.get('node_type')})" if error.get("node_id") else ""
            record.mark_failed(message, FinishReason.ERROR, partial_results=self.results, seed=last_seed)
            record.status = f"Error: {message}{where}"
        self.jobs.finished(record)


class FooocusJobs:
    def __init__(self, *, store: JobStore, queue: PromptQueue, outputs: OutputStore, webhooks: WebhookSender,
                 planner: Planner, interrupt, queue_size: int = 100, queue_history: int = 0,
                 webhook_url: str | None = None, sampler_nodes: Callable[[str | None], bool] = lambda n: True,
                 inputs=None) -> None:
        self.store = store
        self.queue = queue
        self.outputs = outputs
        self.webhooks = webhooks
        self.planner = planner
        self.interrupt = interrupt
        self.queue_size = queue_size
        self.queue_history = queue_history
        self.webhook_url = webhook_url
        self.is_sampler_node = sampler_nodes
        self.inputs = inputs  # InputImageStore: a deleted job's stored input images go with it
        self.previews: dict[str, Any] = {}  # unfinished job id -> latest step preview (image, renderer or base64)
        self.previews_wanted: set[str] = set()  # unfinished jobs a client asked step previews of
        self.finished_previews: OrderedDict[str, Any] = OrderedDict()  # the last FINISHED_PREVIEWS_KEPT jobs'
        self._waiters: dict[str, list[tuple[asyncio.AbstractEventLoop, asyncio.Future]]] = {}

    # --- submission ---------------------------------------------------------------------------
    def submit(self, job_type: str, params: dict, *, job_id: str | None = None) -> JobRecord:
        """Plan and queue a job; raises SubmitRefused when the queue is full, ValueError when unplannable."""
        if self.queue.remaining() >= self.queue_size:
            raise SubmitRefused()
        record = JobRecord(job_type=job_type, params=params, webhook_url=params.get("webhook_url"))
        if job_id:
            record.job_id = job_id
        try:
            plan = self.planner(job_type, params, record.job_id)
        except FilesToFetch as exc:  # fetched by the worker when the job's turn comes
            plan = deferred_plan(exc, JobPlan)
        except JobCannotRun as exc:
            record.mark_failed(str(exc))
            record.status = f"Error: {exc}"
            self.store.add(record)
            self.finished(record)
            return record
        self.store.add(record)
        self._enqueue(record, plan)
        return record

    @staticmethod
    def _extra_data(record: JobRecord) -> dict:
        disabled = bool(record.params.get("advanced_params", {}).get("disable_preview"))
        # the job keeps its own step previews (query-job), whatever the server's --preview-method
        return {"disable_preview": disabled, JOB_PREVIEWS_KEY: not disabled}

    def _queue_item(self, record: JobRecord, plan: JobPlan) -> QueueItem:
        return QueueItem(self.queue.next_number(), record.job_id, plan.runs, self._extra_data(record),
                         _JobObserver(self, record, plan))

    def _enqueue(self, record: JobRecord, plan: JobPlan) -> None:
        try:
            self.queue.put(self._queue_item(record, plan), limit=self.queue_size)
        except QueueFull:
            self.store.delete(record.job_id)
            raise SubmitRefused()

    def recover(self) -> None:
        """After a restart: RUNNING jobs were marked ERROR by the store; WAITING ones are queued again."""
        result = self.store.recover_after_restart()
        for record in result.failed:
            self.webhooks.submit_record(record, self.webhook_url)
        for record in result.requeue:
            try:
                plan = self.planner(record.job_type, record.params, record.job_id)
            except FilesToFetch as exc:
                plan = deferred_plan(exc, JobPlan)
            except Exception as exc:
                record.mark_failed(RESTART_REQUEUE_FAILED.format(exc))
                record.status = record.error
                self.store.update(record)
                continue
            self.queue.put(self._queue_item(record, plan))  # jobs accepted before the restart: no limit

    # --- completion ---------------------------------------------------------------------------
    def finished(self, record: JobRecord) -> None:
        """Worker thread: persist, notify, trim history, wake synchronous waiters."""
        self.store.update(record)
        self._retire_preview(record.job_id)
        if record.webhook_url or self.webhook_url:
            self.webhooks.submit_record(record, self.webhook_url)
        if self.queue_history > 0:
            for evicted in self.store.evict_finished_beyond(self.queue_history):
                self._delete_files(evicted)
        for loop, future in self._waiters.pop(record.job_id, []):
            loop.call_soon_threadsafe(_resolve, future, record)

    async def wait(self, job_id: str) -> JobRecord:
        record = self.store.get(job_id)
        if record is not None and record.is_finished:
            return record
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self._waiters.setdefault(job_id, []).append((loop, future))
        record = self.store.get(job_id)  # it may have finished between the two reads
        if record is not None and record.is_finished:
            waiters = self._waiters.get(job_id, [])
            if (loop, future) in waiters:
                waiters.remove((loop, future))
            return record
        return await future

    # --- control ------------------------------------------------------------------------------
    def stop(self) -> None:
        """POST /v1/generation/stop: stop whatever job runs now; the queue moves on."""
        for item in self.queue.running():
            self.interrupt.request(item.prompt_id)

    def cancel(self, job_id: str) -> JobRecord | None:
        """Our extension: cancel one job by id, waiting or running. None if unknown."""
        record = self.store.get(job_id)
        if record is None:
            return None
        if record.is_finished:
            return record
        if self.queue.delete([job_id]):
            self.cancelled_waiting(record)
            return record
        if self.queue.is_running(job_id):
            self.interrupt.request(job_id)
        return record

    def cancelled_waiting(self, record: JobRecord) -> None:
        """A job removed from the queue before it ran ends as cancelled."""
        record.mark_failed("cancelled by request", FinishReason.USER_CANCEL)
        record.status = "Cancelled by request"
        self.finished(record)

    def delete(self, job_id: str) -> JobRecord | None:
        record = self.store.get(job_id)
        if record is None or not record.is_finished:
            return None
        self.store.delete(job_id)
        self._delete_files(record)
        self.previews.pop(job_id, None)
        self.finished_previews.pop(job_id, None)
        self.previews_wanted.discard(job_id)
        return record

    def _retire_preview(self, job_id: str) -> None:
        """A finished job's last preview moves to the bounded store of finished ones (it stays
        queryable after completion, as in Fooocus-API, without growing with every job)."""
        latest = self.previews.get(job_id)
        if latest is not None:
            self.finished_previews[job_id] = latest
            while len(self.finished_previews) > FINISHED_PREVIEWS_KEPT:
                self.finished_previews.popitem(last=False)
        self.previews.pop(job_id, None)
        self.previews_wanted.discard(job_id)

    def _delete_files(self, record: JobRecord) -> None:
        if self.inputs is not None and isinstance(record.params, dict):
            self.inputs.delete_job_inputs(record.params)
        for path in record.file_paths():
            try:
                Path(path).unlink(missing_ok=True)
            except OSError as exc:
                log.warning("could not delete %s of job %s: %s", path, record.job_id, exc)

    # --- reads --------------------------------------------------------------------------------
    def base64_of(self, result: ImageResult) -> str | None:
        if not result.path or not Path(result.path).is_file():
            return None
        return to_data_url(Path(result.path).read_bytes(), Path(result.path).suffix.lstrip("."))

    def query(self, job_id: str, require_step_preview: bool) -> dict | None:
        record = self.store.get(job_id)
        if record is None:
            return None
        preview = None
        if require_step_preview and not record.params.get("advanced_params", {}).get("disable_preview"):
            if not record.is_finished:
                self.previews_wanted.add(job_id)
            preview = self._rendered_preview(job_id)
        return record.to_query_response(step_preview=preview, base64_loader=self.base64_of)

    def _rendered_preview(self, job_id: str) -> str | None:
        """The latest step preview as raw base64 PNG (rendered once, then kept as text)."""
        latest = self.previews.get(job_id)
        if latest is None:
            latest = self.finished_previews.get(job_id)
        if latest is None or isinstance(latest, str):
            return latest
        try:
            image = latest() if callable(latest) else latest
            if image is None:
                return None
            text = png_base64(image)
        except Exception:
            log.exception("could not render the step preview of job %s", job_id)
            return None
        for kept in (self.previews, self.finished_previews):
            if kept.get(job_id) is latest:  # a newer step may have replaced it meanwhile
                kept[job_id] = text
        return text

    def queue_full_response(self, job_type: str, asynchronous: bool):
        return queue_full_async_response(job_type) if asynchronous else [queue_full_item()]


def _resolve(future: asyncio.Future, record: JobRecord) -> None:
    if not future.done():
        future.set_result(record)
