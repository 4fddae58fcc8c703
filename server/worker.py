"""The one worker: takes queue items and runs them on the executor, off the event loop.

It owns the order of the end of a prompt: terminal event, history entry written, `status`,
then `executing {node: null}`. Any failure of a job, or of the code around it, is logged and
recorded; the thread never dies from a job.
"""
from __future__ import annotations

import gc
import logging
import threading
import time
from typing import Any, Callable

from graph import Executor, InterruptFlag
from graph.errors import Interrupted
from graph.executor import ExecutionOutcome, now_ms
from nodes.previews import prompt_preview_method

from .events import EventHub
from .heap import heap_trimmer
from .queue import PromptQueue, QueueItem

log = logging.getLogger(__name__)

HISTORY_MESSAGE_TYPES = ("execution_start", "execution_cached", "execution_success", "execution_error",
                         "execution_interrupted")
SECRET_EXTRA_KEYS = ("api_key_comfy_org", "auth_token_comfy_org")


class _ItemSink:
    """Routes one prompt's events to its websocket client (or everyone) and to its observer.

    Step previews reach websockets only when the prompt's preview method is not none (ComfyUI's
    rule: clients that keep every binary frame as an output image see only saved images then);
    the observer gets them whatever the method (Fooocus' require_step_preview)."""

    def __init__(self, hub: EventHub, item: QueueItem, step_previews: bool) -> None:
        self.hub = hub
        self.item = item
        self.sid = item.client_id
        self.step_previews = step_previews
        self.executing: str | None = None  # the node running now (a reconnecting client is told)

    def wants(self, event: str) -> bool:
        return self.hub.has_listener(self.sid)

    def send(self, event: str, data: dict) -> None:
        if event == "executing":
            self.executing = data.get("node")
        observer = self.item.observer
        if observer is not None:
            try:
                observer.on_event(event, data)
            except Exception:
                log.exception("job observer failed on %s", event)
        self.hub.publish(event, data, sid=self.sid)

    def send_image(self, image: Any, *, prompt_id: str, node_id: str, full_size: bool) -> None:
        observer = self.item.observer
        if observer is not None and hasattr(observer, "on_image"):
            try:
                observer.on_image(image, node_id=node_id, full_size=full_size)
            except Exception:
                log.exception("job observer failed on an image")
        if full_size or self.step_previews:
            self.hub.publish_image(image, sid=self.sid, prompt_id=prompt_id, node_id=node_id, full_size=full_size)


def _merge(first: ExecutionOutcome, later: ExecutionOutcome) -> ExecutionOutcome:
    """One outcome for a job of several runs: later runs' UI lists are appended, the worst status wins."""
    outputs = {node: {key: list(values) for key, values in ui.items()} for node, ui in first.outputs.items()}
    for node, ui in later.outputs.items():
        target = outputs.setdefault(node, {})
        for key, values in ui.items():
            target.setdefault(key, []).extend(values)
    start = [m for m in first.messages if m[0] in ("execution_start", "execution_cached")]
    return ExecutionOutcome(later.status if later.status != "success" else first.status, outputs,
                            start + [m for m in later.messages if m[0] not in ("execution_start", "execution_cached")],
                            first.executed + later.executed, first.cached + later.cached,
                            later.error or first.error, {**first.meta, **later.meta},
                            first.node_seconds + later.node_seconds)


class Worker:
    def __init__(self, queue: PromptQueue, executor: Executor, hub: EventHub, interrupt: InterruptFlag,
                 free_models: Callable[[], None] | None = None, preview_method: str = "none") -> None:
        self.queue = queue
        self.executor = executor
        self.hub = hub
        self.interrupt = interrupt
        self.free_models = free_models
        self.preview_method = preview_method  # the server's --preview-method
        self._thread: threading.Thread | None = None
        self._free_request: dict[str, bool] = {}
        self._trim_heap = heap_trimmer()
        self._free_lock = threading.Lock()
        self._stopping = False
        self.current: QueueItem | None = None
        self._sink: _ItemSink | None = None
        self._last_gc = 0.0

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="prompt-worker", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        self._stopping = True
        self.queue.close()
        self.interrupt.request()
        if self._thread is not None:
            self._thread.join(timeout)

    def executing_node(self, prompt_id: str) -> str | None:
        """The node the worker runs now for `prompt_id`, if that prompt is the running one."""
        sink = self._sink
        if sink is None or self.current is None or self.current.prompt_id != prompt_id:
            return None
        return sink.executing

    def request_free(self, unload_models: bool, free_memory: bool) -> None:
        """POST /free: applied after the running prompt, or at once by the idle worker."""
        with self._free_lock:
            self._free_request["unload_models"] = self._free_request.get("unload_models", False) or unload_models
            self._free_request["free_memory"] = self._free_request.get("free_memory", False) or free_memory
        if self.current is None:
            self._apply_free()

    def _apply_free(self) -> None:
        with self._free_lock:
            request, self._free_request = self._free_request, {}
        if request.get("free_memory"):
            self.executor.reset()
        if (request.get("unload_models") or request.get("free_memory")) and self.free_models is not None:
            self.free_models()
        if request:
            gc.collect()

    def _loop(self) -> None:
        while not self._stopping:
            item = self.queue.get(timeout=0.5)
            if item is None:
                if self._free_request:
                    self._apply_free()
                continue
            self.current = item
            try:
                self._run(item)
            except Exception:  # never let one job end the worker
                log.exception("worker failed around prompt %s", item.prompt_id)
                self.queue.task_done(item, None)
            finally:
                self.current = None
            if self._free_request:
                self._apply_free()

    def _run(self, item: QueueItem) -> None:
        self.interrupt.clear()
        step_previews = prompt_preview_method(item.extra_data, self.preview_method) != "none"
        sink = self._sink = _ItemSink(self.hub, item, step_previews)
        observer = item.observer
        if observer is not None:
            observer.on_start()
        started = time.perf_counter()
        outcome = ExecutionOutcome("success")
        runs = item.runs
        prepare = getattr(observer, "prepare", None)
        if prepare is not None:
            runs, failed = self._prepare(item, prepare, sink)
            if failed is not None:
                outcome = failed
        for index, run in enumerate(runs):
            result = self._execute(item, run, sink)
            outcome = result if index == 0 else _merge(outcome, result)
            if observer is not None and hasattr(observer, "on_run_finished"):
                try:
                    observer.on_run_finished(index, result)
                except Exception:
                    log.exception("job observer failed after run %d of prompt %s", index, item.prompt_id)
            if result.status != "success":
                break
        log.info("prompt %s %s in %.2f s", item.prompt_id, outcome.status, time.perf_counter() - started)
        self.queue.task_done(item, self._history_entry(item, outcome))  # triggers the `status` broadcast
        if observer is not None:  # after the history entry, so whoever the observer wakes finds it
            try:
                observer.on_finish(outcome)
            except Exception:
                log.exception("job observer failed to finish prompt %s", item.prompt_id)
        self.hub.publish("executing", {"node": None, "prompt_id": item.prompt_id}, sid=item.client_id)
        if time.monotonic() - self._last_gc > 10:
            self._last_gc = time.monotonic()
            gc.collect()
            if self._trim_heap is not None:
                self._trim_heap()

    def _prepare(self, item: QueueItem, prepare, sink: _ItemSink) -> tuple[list, ExecutionOutcome | None]:
        """The observer's work before the runs (a Fooocus job's model downloads, then its plan):
        `prepare(sink, cancelled)` returns the runs to execute (None: the queued ones), or raises
        Interrupted (stopped) or an error that becomes the prompt's error without running it."""
        try:
            runs = prepare(sink, lambda: self.interrupt.is_set_for(item.prompt_id))
        except Interrupted as exc:
            data = {"prompt_id": item.prompt_id, "node_id": None, "node_type": None, "executed": [],
                    "timestamp": now_ms()}
            sink.send("execution_interrupted", data)
            log.info("prompt %s stopped before its runs: %s", item.prompt_id, exc)
            return [], ExecutionOutcome("interrupted", messages=[("execution_interrupted", data)])
        except Exception as exc:
            log.warning("prompt %s could not be prepared: %s", item.prompt_id, exc)
            error = {"prompt_id": item.prompt_id, "exception_message": str(exc), "exception_type": type(exc).__name__,
                     "traceback": [], "node_id": None, "node_type": None, "executed": [], "current_inputs": {},
                     "current_outputs": [], "timestamp": now_ms()}
            sink.send("execution_error", error)
            return [], ExecutionOutcome("error", error=error, messages=[("execution_error", error)])
        if runs is None:
            return item.runs, None
        item.runs = list(runs)  # the history entry and /queue show the planned graph
        return item.runs, None

    def _execute(self, item: QueueItem, run, sink: _ItemSink) -> ExecutionOutcome:
        try:
            return self.executor.execute(run.prompt, item.prompt_id, run.outputs, run.constants, links=run.links,
                                         order=run.order,
                                         extra_data=item.extra_data, sink=sink, interrupt=self.interrupt)
        except Exception as exc:  # an engine bug: record it as the prompt's error
            log.exception("executor failed on prompt %s", item.prompt_id)
            error = {"prompt_id": item.prompt_id, "exception_message": str(exc), "exception_type": type(exc).__name__,
                     "traceback": [], "node_id": None, "node_type": None, "executed": [], "current_inputs": {},
                     "current_outputs": [], "timestamp": now_ms()}
            sink.send("execution_error", error)
            return ExecutionOutcome("error", error=error, messages=[("execution_error", error)])

    @staticmethod
    def _history_entry(item: QueueItem, outcome: ExecutionOutcome) -> dict:
        extra = {k: v for k, v in item.extra_data.items() if k not in SECRET_EXTRA_KEYS}
        status_str = "success" if outcome.status == "success" else "error"
        return {
            "prompt": [item.number, item.prompt_id, item.prompt, extra, item.outputs],
            "outputs": outcome.outputs,
            "status": {"status_str": status_str, "completed": outcome.completed,
                       "messages": [[event, data] for event, data in outcome.messages
                                    if event in HISTORY_MESSAGE_TYPES]},
            "meta": outcome.meta,
            "timing": {"node_seconds": outcome.node_seconds},
        }
