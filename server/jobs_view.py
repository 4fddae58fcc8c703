"""ComfyUI's unified job routes (`/api/jobs`, upstream PR #11054), which the frontend's queue and
history panels read, and its cancel routes: one view over the shared queue and the history, so
Fooocus API jobs show beside ComfyUI prompts and a cancel from the UI reaches either.

Shapes follow upstream comfy_execution/jobs.py: a job is {id, status, priority, create_time,
execution_start_time, execution_end_time, execution_error, outputs_count, preview_output,
workflow_id}; a job's detail adds outputs, execution_status and workflow {prompt, extra_data}.
"""
from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING

from aiohttp import web

if TYPE_CHECKING:
    from .app import App

PENDING, IN_PROGRESS, COMPLETED, FAILED, CANCELLED = "pending", "in_progress", "completed", "failed", "cancelled"
STATUSES = (PENDING, IN_PROGRESS, COMPLETED, FAILED, CANCELLED)
MEDIA_KEYS = {"images": "images", "video": "video", "audio": "audio", "gifs": "video"}
# Fooocus nodes' own lists (the job record's copy of what "images" lists): not outputs of their own
PRIVATE_PREFIX = "fooocus_"


def _bad(message: str) -> web.Response:
    return web.json_response({"error": message}, status=400)


def _meta(extra_data: dict) -> tuple[int, str | None]:
    created = extra_data.get("create_time")
    workflow = ((extra_data.get("extra_pnginfo") or {}).get("workflow") or {})
    workflow_id = workflow.get("id") if isinstance(workflow, dict) else None
    return (created if isinstance(created, (int, float)) else 0), workflow_id


def _outputs_summary(outputs: dict) -> tuple[int, int, dict | None]:
    """(items, previewable items, the first previewable item with nodeId and mediaType);
    a saved output image is preferred to a temporary preview."""
    count = previewable = 0
    preview = fallback = None
    for node_id, ui in (outputs or {}).items():
        if not isinstance(ui, dict):
            continue
        for key, items in ui.items():
            if not isinstance(items, list) or key.startswith(PRIVATE_PREFIX):
                continue
            media = MEDIA_KEYS.get(key)
            for item in items:
                count += 1
                if media is None or not isinstance(item, dict) or "filename" not in item:
                    continue
                previewable += 1
                entry = {"filename": item["filename"], "subfolder": item.get("subfolder", ""),
                         "type": item.get("type", "output"), "nodeId": str(node_id), "mediaType": media}
                if entry["type"] == "output" and preview is None:
                    preview = entry
                elif fallback is None:
                    fallback = entry
    return count, previewable, preview or fallback


def queue_job(item_list: list, status: str) -> dict:
    number, prompt_id, _prompt, extra_data, _outputs = item_list[:5]
    created, workflow_id = _meta(extra_data)
    return {"id": prompt_id, "status": status, "priority": number, "create_time": created,
            "outputs_count": 0, "previewable_outputs_count": 0, "workflow_id": workflow_id}


def history_job(prompt_id: str, entry: dict, detail: bool = False) -> dict:
    number, _, prompt, extra_data, _ = entry["prompt"][:5]
    created, workflow_id = _meta(extra_data)
    status_info = entry.get("status") or {}
    started = ended = error = None
    interrupted = False
    for message in status_info.get("messages", []):
        if not (isinstance(message, (list, tuple)) and len(message) >= 2 and isinstance(message[1], dict)):
            continue
        event, data = message[0], message[1]
        if event == "execution_start":
            started = data.get("timestamp")
        elif event in ("execution_success", "execution_error", "execution_interrupted"):
            ended = data.get("timestamp")
            error = data if event == "execution_error" else error
            interrupted = interrupted or event == "execution_interrupted"
    if status_info.get("status_str") == "error":
        status = CANCELLED if interrupted else FAILED
    else:
        status = COMPLETED
    count, previewable, preview = _outputs_summary(entry.get("outputs", {}))
    job = {"id": prompt_id, "status": status, "priority": number, "create_time": created,
           "execution_start_time": started, "execution_end_time": ended, "execution_error": error,
           "outputs_count": count, "previewable_outputs_count": previewable, "preview_output": preview,
           "workflow_id": workflow_id}
    if detail:
        job.update(outputs=entry.get("outputs", {}), execution_status=status_info,
                   workflow={"prompt": prompt, "extra_data": extra_data})
    return job


def _duration(job: dict) -> float:
    start, end = job.get("execution_start_time"), job.get("execution_end_time")
    return (end - start) if isinstance(start, (int, float)) and isinstance(end, (int, float)) else 0


def remove_items(app: "App", removed) -> None:
    """Items taken off the queue before they ran: their owners (a Fooocus job's record) learn it."""
    for item in removed:
        hook = getattr(item.observer, "on_removed", None)
        if hook is not None:
            hook()


class JobRoutes:
    def __init__(self, app: "App") -> None:
        self.app = app

    def routes(self) -> list[tuple[str, str, object]]:
        return [
            ("GET", "/jobs", self.list_jobs),
            ("POST", "/jobs/cancel", self.cancel_many),
            ("GET", "/jobs/{job_id}", self.get_job),
            ("POST", "/jobs/{job_id}/cancel", self.cancel_one),
        ]

    def _all(self) -> list[dict]:
        queue = self.app.queue
        jobs = [queue_job(item.as_list(), IN_PROGRESS) for item in queue.running()]
        jobs += [queue_job(item.as_list(), PENDING) for item in queue.pending()]
        jobs += [history_job(pid, entry) for pid, entry in queue.history().items()]
        return jobs

    async def list_jobs(self, request: web.Request) -> web.Response:
        query = request.query
        wanted = None
        if query.get("status"):
            wanted = [s.strip().lower() for s in query["status"].split(",") if s.strip()]
            invalid = [s for s in wanted if s not in STATUSES]
            if invalid:
                return _bad(f"status: invalid value(s) {', '.join(invalid)}; valid: {', '.join(STATUSES)}")
        sort_by = query.get("sort_by", "created_at").lower()
        if sort_by not in ("created_at", "execution_duration"):
            return _bad("sort_by must be 'created_at' or 'execution_duration'")
        order = query.get("sort_order", "desc").lower()
        if order not in ("asc", "desc"):
            return _bad("sort_order must be 'asc' or 'desc'")
        try:
            limit = int(query["limit"]) if "limit" in query else None
            offset = int(query.get("offset", 0))
        except ValueError:
            return _bad("limit and offset must be integers")
        if limit is not None and limit <= 0:
            return _bad("limit must be a positive integer")
        if offset < 0:
            return _bad("offset must be non-negative")
        jobs = self._all()
        if wanted is not None:
            jobs = [job for job in jobs if job["status"] in wanted]
        if query.get("workflow_id"):
            jobs = [job for job in jobs if job.get("workflow_id") == query["workflow_id"]]
        key = _duration if sort_by == "execution_duration" else (lambda job: job["create_time"] or 0)
        jobs.sort(key=key, reverse=order == "desc")
        total = len(jobs)
        page = jobs[offset:offset + limit] if limit is not None else jobs[offset:]
        return web.json_response({"jobs": page, "pagination": {"offset": offset, "limit": limit, "total": total,
                                                               "has_more": offset + len(page) < total}})

    async def get_job(self, request: web.Request) -> web.Response:
        job_id = request.match_info["job_id"]
        queue = self.app.queue
        for item in queue.running():
            if item.prompt_id == job_id:
                return web.json_response({**queue_job(item.as_list(), IN_PROGRESS),
                                          "workflow": {"prompt": item.prompt, "extra_data": item.extra_data}})
        for item in queue.pending():
            if item.prompt_id == job_id:
                return web.json_response({**queue_job(item.as_list(), PENDING),
                                          "workflow": {"prompt": item.prompt, "extra_data": item.extra_data}})
        entry = queue.history_item(job_id)
        if entry is None:
            return web.json_response({"error": "Job not found"}, status=404)
        return web.json_response(history_job(job_id, entry, detail=True))

    def cancel(self, job_id: str) -> bool:
        """A waiting job leaves the queue, a running one is interrupted; False if neither."""
        removed = self.app.queue.delete([job_id])
        if removed:
            remove_items(self.app, removed)
            return True
        if self.app.queue.is_running(job_id):
            self.app.interrupt.request(job_id)
            return True
        return False

    async def cancel_one(self, request: web.Request) -> web.Response:
        job_id = request.match_info["job_id"]
        if not self.cancel(job_id):
            return web.json_response({"error": f"job {job_id!r} is neither waiting nor running"}, status=404)
        return web.json_response({"id": job_id, "cancelled": True, "time": time.time()})

    async def cancel_many(self, request: web.Request) -> web.Response:
        try:
            body = json.loads(await request.read() or b"null")
        except (json.JSONDecodeError, UnicodeDecodeError):
            return _bad("the body must be JSON: {\"job_ids\": [...]}")
        ids = body.get("job_ids") if isinstance(body, dict) else None
        if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
            return _bad("job_ids must be a list of job id strings")
        cancelled = [job_id for job_id in ids if self.cancel(job_id)]
        return web.json_response({"cancelled": cancelled})
