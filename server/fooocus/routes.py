"""Fooocus-API HTTP routes: generation, jobs, engines, files.

Requests are validated at the edge (422 with pydantic's error list naming the field), turned into
a job and planned into workflow runs by the planner; the job system does the rest.
"""
from __future__ import annotations

import asyncio
import io
import json
import logging
from typing import Any, Callable

import pydantic
from aiohttp import web

from server.frontend_routes import frontend_index
from server.jobs import JobStage, JobType
from server.jobs.record import not_found_response

from .jobs import FooocusJobs, SubmitRefused
from .outputs import OutputStore, convert_for_accept
from .requests import CommonRequest, JobHistoryRequest, QueryJobRequest
from .validation import Vocabulary, json_decode_error_response, validate_request, validation_error_response

log = logging.getLogger(__name__)

FORBIDDEN = {"detail": "Forbidden"}
SQLITE_MAX_INT = 2 ** 63 - 1


def unprocessable(body: dict) -> web.Response:
    return web.json_response(body, status=422)


async def read_json_body(request: web.Request) -> Any:
    """The body as JSON whatever its Content-Type (the API document's examples rely on that)."""
    raw = await request.read()
    if not raw.strip():
        return {}
    try:
        return json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        error = exc if isinstance(exc, json.JSONDecodeError) else json.JSONDecodeError(str(exc), "", 0)
        raise web.HTTPUnprocessableEntity(text=json.dumps(json_decode_error_response(error, raw)),
                                          content_type="application/json")


def query_model(model, request: web.Request):
    try:
        return model.model_validate(dict(request.query))
    except pydantic.ValidationError as exc:
        raise web.HTTPUnprocessableEntity(text=json.dumps(validation_error_response(exc, loc_prefix=("query",))),
                                          content_type="application/json")


def _dump_request(parsed: pydantic.BaseModel, exclude=()) -> dict:
    return parsed.model_dump(mode="json", exclude=set(exclude))


def wants_png(request: web.Request) -> bool:
    accept = request.query.get("accept") or request.headers.get("Accept", "")
    return accept.strip() == "image/png"


class FooocusRoutes:
    def __init__(self, jobs: FooocusJobs, outputs: OutputStore, vocabulary: Callable[[], Vocabulary],
                 list_models: Callable[[], dict], style_names: Callable[[], list[str]],
                 free_models: Callable[[], None] | None = None,
                 request_params: Callable[..., dict] | None = None,
                 ) -> None:
        self.request_params = request_params or _dump_request
        self.jobs = jobs
        self.outputs = outputs
        self.vocabulary = vocabulary
        self.list_models = list_models
        self.style_names = style_names
        self.free_models = free_models

    def routes(self) -> list[tuple[str, str, Any]]:
        return [
            ("GET", "/", self.index),
            ("POST", "/v1/generation/text-to-image", self.text_to_image),
            ("GET", "/v1/generation/query-job", self.query_job),
            ("GET", "/v1/generation/job-queue", self.job_queue),
            ("GET", "/v1/generation/job-history", self.job_history),
            ("POST", "/v1/generation/stop", self.stop),
            ("POST", "/v1/generation/cancel", self.cancel),
            ("GET", "/v1/engines/all-models", self.all_models),
            ("POST", "/v1/engines/refresh-models", self.all_models),
            ("GET", "/v1/engines/styles", self.styles),
            ("GET", "/v1/engines/clean_vram", self.clean_vram),
            ("GET", "/files/{date}/{file_name}", self.files),
        ]

    async def index(self, request: web.Request) -> web.StreamResponse:
        page = frontend_index()  # the web UI (ComfyUI's frontend) when its package is installed
        if page is not None:
            return web.FileResponse(page, headers={"Cache-Control": "no-cache"})
        return web.Response(text='Swagger-UI to: <a href="/docs">/docs</a>', content_type="text/html")

    # --- generation ---------------------------------------------------------------------------
    async def text_to_image(self, request: web.Request) -> web.StreamResponse:
        body = await read_json_body(request)
        try:
            parsed = validate_request(CommonRequest, body, self.vocabulary())
        except pydantic.ValidationError as exc:
            return unprocessable(validation_error_response(exc, body))
        return await self.generate(request, JobType.TEXT_TO_IMAGE.value, parsed)

    async def generate(self, request: web.Request, job_type: str, parsed: pydantic.BaseModel, *,
                       stored_images: dict[str, str | None] | None = None,
                       exclude: tuple[str, ...] = ()) -> web.StreamResponse:
        """Submit a validated request. `stored_images`: image fields already stored in the input
        folder (field -> stored name), written into the job's parameters in place of the image."""
        stored_images = stored_images or {}
        stream = wants_png(request) and not getattr(parsed, "async_process", False)
        params = self.request_params(parsed, exclude=(*exclude, *stored_images))
        params.update(stored_images)
        if stream:
            params["image_number"] = 1
        try:
            # planning validates a workflow per image and writes the job to SQLite: off the event
            # loop, so websockets and query-job stay responsive during a burst of submissions
            record = await asyncio.get_running_loop().run_in_executor(None, self.jobs.submit, job_type, params)
        except SubmitRefused:
            if stream:
                return web.Response(status=409, text="QUEUE_IS_FULL")
            return web.json_response(self.jobs.queue_full_response(job_type, bool(params.get("async_process"))))
        except ValueError as exc:  # the request names something that cannot be run
            return unprocessable({"detail": [{"type": "value_error", "loc": ["body"], "msg": str(exc),
                                              "input": None}]})
        if params.get("async_process"):
            # The answer describes the job as queued: the worker thread may already be changing
            # this record, and a submit answer is WAITING with nothing to report yet.
            return web.json_response({"job_id": record.job_id, "job_type": record.job_type,
                                      "job_stage": JobStage.WAITING.value, "job_progress": 0, "job_status": None,
                                      "job_step_preview": None, "job_result": None})
        record = await self.jobs.wait(record.job_id)
        if stream:
            return self._png_response(record)
        return web.json_response(record.to_sync_response(base64_loader=self.jobs.base64_of))

    def _png_response(self, record) -> web.Response:
        reasons = [r.finish_reason.value for r in record.results]
        images = [r for r in record.success_results() if r.path]
        if "USER_CANCEL" in reasons and not images:
            return web.Response(status=400, text="USER_CANCEL")
        if not images:
            return web.Response(status=500, text="ERROR" if "ERROR" in reasons else "")
        from PIL import Image
        with Image.open(images[0].path) as image:
            buffer = io.BytesIO()
            image.save(buffer, format="PNG")
        return web.Response(body=buffer.getvalue(), content_type="image/png")

    # --- jobs ---------------------------------------------------------------------------------
    async def query_job(self, request: web.Request) -> web.Response:
        query = query_model(QueryJobRequest, request)
        response = self.jobs.query(query.job_id, query.require_step_preview)
        if response is None:
            return web.json_response(not_found_response(), status=404)
        return web.json_response(response)

    async def job_queue(self, request: web.Request) -> web.Response:
        return web.json_response(self.jobs.store.queue_summary())

    async def job_history(self, request: web.Request) -> web.Response:
        query = query_model(JobHistoryRequest, request)
        if query.delete:
            if not query.job_id:
                return unprocessable({"detail": [{"type": "missing", "loc": ["query", "job_id"],
                                                  "msg": "job_id is required with delete=true", "input": None}]})
            deleted = self.jobs.delete(query.job_id)
            return web.json_response({"message": "Deleted" if deleted else "Not found"})
        queue = [r.to_history_info() for r in self.jobs.store.list_queue()
                 if query.job_id is None or r.job_id == query.job_id]
        history = []
        if query.page * query.page_size <= SQLITE_MAX_INT:  # a farther page is empty (SQLite cannot bind it)
            history = [r.to_history_info() for r in self.jobs.store.list_history(query.page, query.page_size,
                                                                                 query.job_id)]
        return web.json_response({"queue": queue, "history": history})

    async def stop(self, request: web.Request) -> web.Response:
        self.jobs.stop()
        return web.json_response({"msg": "success"})

    async def cancel(self, request: web.Request) -> web.Response:
        job_id = request.query.get("job_id")
        if not job_id and request.can_read_body:
            body = await read_json_body(request)
            job_id = body.get("job_id") if isinstance(body, dict) else None
        if not job_id:
            return unprocessable({"detail": [{"type": "missing", "loc": ["query", "job_id"], "msg": "Field required",
                                              "input": None}]})
        record = self.jobs.cancel(str(job_id))
        if record is None:
            return web.json_response(not_found_response(), status=404)
        return web.json_response(self.jobs.query(record.job_id, False))

    # --- engines and files --------------------------------------------------------------------
    async def all_models(self, request: web.Request) -> web.Response:
        if request.method == "POST":  # POST /v1/engines/refresh-models
            return web.json_response(self.list_models(refresh=True))
        return web.json_response(self.list_models())

    async def styles(self, request: web.Request) -> web.Response:
        return web.json_response(self.style_names())

    async def clean_vram(self, request: web.Request) -> web.Response:
        if self.free_models is not None:
            self.free_models()
        return web.json_response({"message": "ok"})

    async def files(self, request: web.Request) -> web.StreamResponse:
        try:
            path = self.outputs.resolve(request.match_info["date"], request.match_info["file_name"])
        except (OSError, ValueError):  # e.g. a name longer than the file system allows
            path = None
        if path is None:
            raise web.HTTPNotFound(text="file not found")
        converted = convert_for_accept(path, request.headers.get("Accept"))
        if converted is not None:
            data, media = converted
            return web.Response(body=data, content_type=media)
        return web.FileResponse(path)
