"""One job's durable record and its Fooocus-API response shapes.

A `JobRecord` is plain data: the queue, the worker and the store pass it around, the store
persists it, and the HTTP layer turns it into the documented JSON through the `to_*` methods
here. Nothing in this module touches SQLite, the network or the clock except through the
optional `now_ms` arguments (tests hand in fixed times).

Behaviour follows Fooocus-API v0.4.x where it differs from HEAD (spec section 6):
- a job that has started reports stage RUNNING (HEAD's missing `start_task` left it WAITING);
- a failed job ends ERROR with one `finish_reason: ERROR` result item, a stopped job ends ERROR
  with a `USER_CANCEL` item; the sync response returns those items, query-job returns
  `job_result: null` for an ERROR job (both versions agree on that);
- seeds are strings everywhere.
"""

from __future__ import annotations

import dataclasses
import enum
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Callable


class JobStage(str, enum.Enum):
    WAITING = "WAITING"
    RUNNING = "RUNNING"
    SUCCESS = "SUCCESS"
    ERROR = "ERROR"

    @property
    def is_finished(self) -> bool:
        return self in (JobStage.SUCCESS, JobStage.ERROR)


class FinishReason(str, enum.Enum):
    SUCCESS = "SUCCESS"
    QUEUE_IS_FULL = "QUEUE_IS_FULL"
    USER_CANCEL = "USER_CANCEL"
    ERROR = "ERROR"


class JobType(str, enum.Enum):
    """The `job_type` strings of the Fooocus API (text-to-image-with-ip reports TEXT_TO_IMAGE)."""

    TEXT_TO_IMAGE = "Text to Image"
    IMAGE_UPSCALE_VARY = "Image Upscale or Variation"
    IMAGE_INPAINT_OUTPAINT = "Image Inpaint or Outpaint"
    IMAGE_PROMPT = "Image Prompt"
    IMAGE_ENHANCE = "Image Enhancement"
    NOT_FOUND = "Not Found"
    # Not a Fooocus type: raw ComfyUI /prompt submissions share the queue and the store.
    COMFY_WORKFLOW = "ComfyUI Workflow"


API_FOOOCUS = "fooocus"
API_COMFY = "comfy"

RESTART_RUNNING_REASON = "server restarted while the job was running"
RESTART_WAITING_REASON = "server restarted before the job ran and its request was not stored"

FINISHED_STATUS_TEXT = "Finished"


def now_ms() -> int:
    return int(time.time() * 1000)


def _value(x: Any) -> Any:
    return x.value if isinstance(x, enum.Enum) else x


@dataclass
class ImageResult:
    """One output image (or one failure marker) of a job."""

    seed: str
    finish_reason: FinishReason = FinishReason.SUCCESS
    url: str | None = None
    path: str | None = None  # server-local file; removed when the job is deleted or evicted
    # Only filled when the caller chooses to keep it; responses can also load it lazily from
    # `path` (see JobRecord.to_query_response) so the store need not hold megabytes of text.
    base64: str | None = None

    def __post_init__(self) -> None:
        self.seed = str(self.seed)
        self.finish_reason = FinishReason(self.finish_reason)

    def to_response(self, base64: str | None = None) -> dict:
        """The `GeneratedImageResult` shape: base64, url, seed (str), finish_reason."""
        return {
            "base64": base64,
            "url": self.url,
            "seed": self.seed,
            "finish_reason": self.finish_reason.value,
        }

    def to_dict(self) -> dict:
        return {
            "seed": self.seed,
            "finish_reason": self.finish_reason.value,
            "url": self.url,
            "path": self.path,
            "base64": self.base64,
        }

    @classmethod
    def from_dict(cls, d: dict) -> "ImageResult":
        return cls(
            seed=d["seed"],
            finish_reason=FinishReason(d.get("finish_reason", "SUCCESS")),
            url=d.get("url"),
            path=d.get("path"),
            base64=d.get("base64"),
        )


@dataclass
class WebhookState:
    """Where the job's webhook delivery stands; `outcome` is None until it has been decided."""

    attempts: int = 0
    last_error: str | None = None
    delivered_ms: int | None = None
    outcome: str | None = None  # None (not sent / in flight), "delivered", "failed"

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict | None) -> "WebhookState":
        return cls(**(d or {}))


# Loads the base64 text of a result on demand (e.g. from its file); returns None if it cannot.
Base64Loader = Callable[[ImageResult], "str | None"]


@dataclass
class JobRecord:
    job_type: str
    params: dict = field(default_factory=dict)  # JSON-able request parameters
    job_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    api: str = API_FOOOCUS
    stage: JobStage = JobStage.WAITING
    progress: int = 0
    status: str | None = None
    results: list[ImageResult] = field(default_factory=list)
    error: str | None = None  # kept for logs/history; never shown in query-job (as upstream)
    webhook_url: str | None = None
    webhook: WebhookState = field(default_factory=WebhookState)
    created_ms: int = field(default_factory=now_ms)
    started_ms: int = 0  # 0 = not started, as upstream's *_mills
    finished_ms: int = 0  # 0 = not finished
    priority: int = 0  # higher runs earlier; ties keep submission order

    def __post_init__(self) -> None:
        self.job_type = _value(self.job_type)
        self.stage = JobStage(self.stage)
        self.progress = max(0, min(100, int(self.progress)))

    # ----------------------------------------------------------------- state changes
    @property
    def is_finished(self) -> bool:
        return self.stage.is_finished

    def mark_running(self, at_ms: int | None = None) -> None:
        self.stage = JobStage.RUNNING
        self.started_ms = at_ms if at_ms is not None else now_ms()

    def set_progress(self, progress: int, status: str | None = None) -> None:
        self.progress = max(0, min(100, int(progress)))
        if status is not None:
            self.status = status

    def mark_success(self, results: list[ImageResult], at_ms: int | None = None) -> None:
        self.stage = JobStage.SUCCESS
        self.results = list(results)
        self.progress = 100
        self.status = FINISHED_STATUS_TEXT
        self.finished_ms = at_ms if at_ms is not None else now_ms()
        if not self.started_ms:
            self.started_ms = self.finished_ms

    def mark_failed(
        self,
        error: str,
        reason: FinishReason = FinishReason.ERROR,
        *,
        partial_results: list[ImageResult] = (),
        seed: int | str | None = None,
        at_ms: int | None = None,
    ) -> None:
        """Finish as ERROR (v0.4.x): images completed so far plus one ERROR/USER_CANCEL item
        carrying `seed`, the seed of the image that failed (the request's seed when no image
        had one yet, e.g. a job that never ran).

        The last progress text stays in `status`, as upstream leaves it on error.
        """
        self.stage = JobStage.ERROR
        self.error = error
        self.results = list(partial_results) + [
            ImageResult(seed=self.request_seed() if seed is None else seed, finish_reason=FinishReason(reason))
        ]
        self.finished_ms = at_ms if at_ms is not None else now_ms()

    def request_seed(self) -> str:
        """The seed the request asked for, as a string ("-1" = random or unknown)."""
        seed = self.params.get("image_seed", -1) if isinstance(self.params, dict) else -1
        return str(seed if seed is not None else -1)

    @property
    def finish_reason(self) -> FinishReason | None:
        """The job's overall reason: None while unfinished, else SUCCESS/USER_CANCEL/ERROR."""
        if not self.is_finished:
            return None
        if self.stage is JobStage.SUCCESS:
            return FinishReason.SUCCESS
        for item in self.results:
            if item.finish_reason is not FinishReason.SUCCESS:
                return item.finish_reason
        return FinishReason.ERROR

    def success_results(self) -> list[ImageResult]:
        return [r for r in self.results if r.finish_reason is FinishReason.SUCCESS]

    def file_paths(self) -> list[str]:
        """Files this job wrote, to delete when the job is deleted or evicted."""
        return [r.path for r in self.results if r.path]

    # ----------------------------------------------------------------- response shapes
    def _wants_base64(self) -> bool:
        return bool(isinstance(self.params, dict) and self.params.get("require_base64"))

    def _items(self, results: list[ImageResult], base64_loader: Base64Loader | None) -> list[dict]:
        wants = self._wants_base64()
        items = []
        for r in results:
            b64 = None
            if wants and r.finish_reason is FinishReason.SUCCESS:
                b64 = r.base64
                if b64 is None and base64_loader is not None:
                    b64 = base64_loader(r)
            items.append(r.to_response(b64))
        return items

    def to_query_response(
        self,
        *,
        step_preview: str | None = None,
        base64_loader: Base64Loader | None = None,
    ) -> dict:
        """`AsyncJobResponse` for query-job and async submit.

        `step_preview` is the latest preview (raw base64 PNG) the caller keeps in memory; pass it
        only when the request had `require_step_preview=true`. base64 appears in results only if
        the original request asked for it (`params["require_base64"]`).
        """
        # SUCCESS lists its images; a stopped or failed job lists the images it finished plus its
        # USER_CANCEL / ERROR item (v0.4.x), so a stop never hides finished work.
        job_result = None
        if self.is_finished and self.results:
            job_result = self._items(self.results, base64_loader)
        return {
            "job_id": self.job_id,
            "job_type": self.job_type,
            "job_stage": self.stage.value,
            "job_progress": self.progress,
            "job_status": self.status,
            "job_step_preview": step_preview,
            "job_result": job_result,
        }

    def to_sync_response(self, *, base64_loader: Base64Loader | None = None) -> list[dict]:
        """The list a synchronous generation request returns (ERROR/USER_CANCEL items included)."""
        return self._items(self.results, base64_loader)

    def to_history_info(self) -> dict:
        """`JobHistoryInfo` of the non-persistent job-history (and of its `queue` list)."""
        return {
            "job_id": self.job_id,
            "in_queue_mills": self.created_ms,
            "start_mills": self.started_ms,
            "finish_mills": self.finished_ms,
            "is_finished": self.is_finished,
        }

    def to_persistent_history_item(self) -> dict:
        """One `history` item of job-history under `--persistent`: request params + task_info."""
        reason = self.finish_reason
        stamp = self.finished_ms or self.created_ms
        return {
            "params": dict(self.params),
            "task_info": {
                "task_id": self.job_id,
                "task_type": self.job_type,
                "task_in_queue_mills": self.created_ms,
                "task_start_mills": self.started_ms,
                "task_finish_mills": self.finished_ms,
                "result_url": ",".join(r.url for r in self.success_results() if r.url),
                "finish_reason": reason.value if reason else None,
                "date_time": time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(stamp / 1000)),
            },
        }

    def to_webhook_payload(self) -> dict:
        """Webhook body: upstream's `{job_id, job_result: [{url, seed}]}` (successful images only,
        so a failed job sends `[]` as upstream does) plus `job_stage` and `finish_reason`."""
        reason = self.finish_reason
        return {
            "job_id": self.job_id,
            "job_result": [{"url": r.url, "seed": r.seed} for r in self.success_results()],
            "job_stage": self.stage.value,
            "finish_reason": reason.value if reason else None,
        }

    # ----------------------------------------------------------------- JSON round trip
    def to_dict(self) -> dict:
        return {
            "job_id": self.job_id,
            "job_type": self.job_type,
            "api": self.api,
            "stage": self.stage.value,
            "progress": self.progress,
            "status": self.status,
            "params": self.params,
            "results": [r.to_dict() for r in self.results],
            "error": self.error,
            "webhook_url": self.webhook_url,
            "webhook": self.webhook.to_dict(),
            "created_ms": self.created_ms,
            "started_ms": self.started_ms,
            "finished_ms": self.finished_ms,
            "priority": self.priority,
        }

    @classmethod
    def from_dict(cls, d: dict) -> "JobRecord":
        return cls(
            job_id=d["job_id"],
            job_type=d["job_type"],
            api=d.get("api", API_FOOOCUS),
            stage=JobStage(d.get("stage", "WAITING")),
            progress=d.get("progress", 0),
            status=d.get("status"),
            params=d.get("params") or {},
            results=[ImageResult.from_dict(r) for r in d.get("results") or []],
            error=d.get("error"),
            webhook_url=d.get("webhook_url"),
            webhook=WebhookState.from_dict(d.get("webhook")),
            created_ms=d.get("created_ms", 0),
            started_ms=d.get("started_ms", 0),
            finished_ms=d.get("finished_ms", 0),
            priority=d.get("priority", 0),
        )


def not_found_response() -> dict:
    """query-job body for an unknown job id (served with HTTP 404)."""
    return {
        "job_id": "",
        "job_type": JobType.NOT_FOUND.value,
        "job_stage": JobStage.ERROR.value,
        "job_progress": 0,
        "job_status": "Job not found",
        "job_step_preview": None,
        "job_result": None,
    }


def queue_full_item() -> dict:
    """The result item of a rejected submission (HTTP 200, not 4xx)."""
    return ImageResult(seed="", finish_reason=FinishReason.QUEUE_IS_FULL).to_response()


def queue_full_async_response(job_type: str) -> dict:
    return {
        "job_id": "",
        "job_type": _value(job_type),
        "job_stage": JobStage.ERROR.value,
        "job_progress": 0,
        "job_status": None,
        "job_step_preview": None,
        "job_result": [queue_full_item()],
    }
