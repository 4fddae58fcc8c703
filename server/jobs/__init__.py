"""Durable job system parts: job records, their SQLite store, webhook delivery.

Pure Python (sqlite3, asyncio, aiohttp client); knows nothing of graph/ or models/, so the
queue/record side stays separate from whoever runs the jobs.
"""

from .record import (
    API_COMFY,
    API_FOOOCUS,
    FinishReason,
    ImageResult,
    JobRecord,
    JobStage,
    JobType,
    WebhookState,
    not_found_response,
    queue_full_async_response,
    queue_full_item,
)
from .store import JobStore, RecoveryPolicy, RecoveryResult, SchemaTooNewError
from .webhooks import WebhookOutcome, WebhookSender

__all__ = [
    "API_COMFY",
    "API_FOOOCUS",
    "FinishReason",
    "ImageResult",
    "JobRecord",
    "JobStage",
    "JobStore",
    "JobType",
    "RecoveryPolicy",
    "RecoveryResult",
    "SchemaTooNewError",
    "WebhookOutcome",
    "WebhookSender",
    "WebhookState",
    "not_found_response",
    "queue_full_async_response",
    "queue_full_item",
]
