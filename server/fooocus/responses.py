"""Response bodies of the Fooocus-API routes (specs/fooocus_api.md §6).

Serialise with `model.model_dump(mode="json")`: enums become their strings, seeds stay strings.
"""

from __future__ import annotations

from enum import Enum
from typing import Any, Optional

from pydantic import BaseModel, ConfigDict, Field, field_validator

# The job records own these strings; the response models document the same ones.
from server.jobs.record import FinishReason, JobStage  # noqa: F401  (re-exported for the OpenAPI models)


class TaskType(str, Enum):
    """`job_type` strings (text-to-image-with-ip reports Text to Image)."""

    TEXT_TO_IMAGE = "Text to Image"
    UPSCALE_OR_VARY = "Image Upscale or Variation"
    INPAINT_OR_OUTPAINT = "Image Inpaint or Outpaint"
    IMAGE_PROMPT = "Image Prompt"
    IMAGE_ENHANCE = "Image Enhancement"
    NOT_FOUND = "Not Found"


class GeneratedImageResult(BaseModel):
    """One image of a result list. `seed` is a string (64-bit seeds overflow JS numbers)."""

    base64: Optional[str] = None
    url: Optional[str] = None
    seed: str = ""
    finish_reason: FinishReason = FinishReason.SUCCESS

    @field_validator("seed", mode="before")
    @classmethod
    def _seed_as_string(cls, value: Any) -> Any:
        return str(value) if isinstance(value, int) and not isinstance(value, bool) else value

    @classmethod
    def queue_full(cls) -> "GeneratedImageResult":
        return cls(base64=None, url=None, seed="", finish_reason=FinishReason.QUEUE_IS_FULL)


class AsyncJobResponse(BaseModel):
    """Async submit answer and query-job answer."""

    job_id: str
    job_type: TaskType
    job_stage: JobStage
    job_progress: int = Field(0, ge=0, le=100)
    job_status: Optional[str] = None
    job_step_preview: Optional[str] = None
    job_result: Optional[list[GeneratedImageResult]] = None

    @classmethod
    def submitted(cls, job_id: str, job_type: TaskType) -> "AsyncJobResponse":
        return cls(job_id=job_id, job_type=job_type, job_stage=JobStage.WAITING)

    @classmethod
    def queue_full(cls, job_type: TaskType) -> "AsyncJobResponse":
        return cls(
            job_id="",
            job_type=job_type,
            job_stage=JobStage.ERROR,
            job_result=[GeneratedImageResult.queue_full()],
        )

    @classmethod
    def not_found(cls) -> "AsyncJobResponse":
        """Body of the 404 answer of query-job."""
        return cls(
            job_id="",
            job_type=TaskType.NOT_FOUND,
            job_stage=JobStage.ERROR,
            job_status="Job not found",
        )


class JobQueueInfo(BaseModel):
    """GET /v1/generation/job-queue. running_size counts waiting + running jobs."""

    running_size: int
    finished_size: int
    last_job_id: Optional[str] = None


class JobHistoryInfo(BaseModel):
    """One job in job-history (times are epoch milliseconds, 0 = not yet)."""

    job_id: str
    in_queue_mills: int = 0
    start_mills: int = 0
    finish_mills: int = 0
    is_finished: bool = False


class JobHistoryResponse(BaseModel):
    """GET /v1/generation/job-history without --persistent; history is oldest first."""

    queue: list[JobHistoryInfo] = Field(default_factory=list)
    history: list[JobHistoryInfo] = Field(default_factory=list)


class PersistedTaskInfo(BaseModel):
    """`task_info` of a persisted history row."""

    task_id: str
    task_type: str
    task_in_queue_mills: int = 0
    task_start_mills: int = 0
    task_finish_mills: int = 0
    result_url: str = ""  # result URLs joined with ","
    finish_reason: str = ""
    date_time: str = ""  # "YYYY-mm-dd HH:MM:SS"


class PersistedHistoryItem(BaseModel):
    params: dict[str, Any] = Field(default_factory=dict)
    task_info: PersistedTaskInfo


class PersistentJobHistoryResponse(BaseModel):
    """GET /v1/generation/job-history with --persistent; history newest first."""

    history: list[PersistedHistoryItem] = Field(default_factory=list)
    queue: list[JobHistoryInfo] = Field(default_factory=list)


class MessageResponse(BaseModel):
    """{"message": ...}: history delete ("Deleted"/"Not found"), clean_vram ("ok")."""

    message: str


class DescribeImageResponse(BaseModel):
    describe: str


class AllModelsResponse(BaseModel):
    model_config = ConfigDict(protected_namespaces=())

    model_filenames: list[str] = Field(default_factory=list)
    lora_filenames: list[str] = Field(default_factory=list)


class StopResponse(BaseModel):
    msg: str = "success"


class WebhookImage(BaseModel):
    url: Optional[str] = None
    seed: str = "-1"

    @field_validator("seed", mode="before")
    @classmethod
    def _seed_as_string(cls, value: Any) -> Any:
        return str(value) if isinstance(value, int) and not isinstance(value, bool) else value


class WebhookPayload(BaseModel):
    """POSTed to the webhook when any job ends; no base64; job_result [] on failure."""

    job_id: str
    job_result: list[WebhookImage] = Field(default_factory=list)
