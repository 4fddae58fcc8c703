"""A Fooocus job that waits for model files (first use of a capability with downloads on).

The planner raised FilesToFetch at its file check, so the job was queued with a placeholder run
and the files. When the worker reaches it, `fetch_then_plan` downloads each file, the job's
status reading "downloading <file> NN%" (query-job's `job_status`) and a `download_progress`
event going to websocket listeners, then plans the job as if the files had been there all along
and hands the worker its runs. A failed download fails the job with the downloader's message
(file, URL, cause); a stop or cancel interrupts the download (the `.part` file stays for a resume).
"""
from __future__ import annotations

from typing import Callable

from graph.errors import Interrupted
from server.downloads.downloader import DownloadCancelled
from server.downloads.fetcher import FilesToFetch
from server.queue import RunSpec

MAX_ROUNDS = 3  # a plan may reveal another missing file (another capability) after the first fetch
DOWNLOAD_PROGRESS_SPAN = 13  # job_progress climbs 1..14 while downloading; sampling starts at 15


def deferred_plan(exc: FilesToFetch, plan_type):
    """A plan that only carries downloads; its one run is an empty placeholder for the queue."""
    return plan_type([RunSpec({}, [])], [], 0, [], downloads=list(exc.files), fetcher=exc.fetcher)


def fetch_then_plan(observer, sink, cancelled: Callable[[], bool]) -> list[RunSpec]:
    from .jobs import JobCannotRun  # jobs.py imports this module

    record = observer.record
    for _ in range(MAX_ROUNDS):
        plan = observer.plan
        for file in plan.downloads:
            _fetch(observer, plan.fetcher, file, sink, cancelled)
        try:
            planned = observer.jobs.planner(record.job_type, record.params, record.job_id)
        except FilesToFetch as exc:
            observer.plan = deferred_plan(exc, type(plan))
            continue
        observer.plan = planned
        record.set_progress(record.progress, observer._status(f"Preparing task 1/{len(planned.runs)} ..."))
        observer.jobs.store.update_progress(record.job_id, record.progress, record.status)
        return planned.runs
    missing = ", ".join(f"{f.folder}/{f.name}" for f in observer.plan.downloads)
    raise JobCannotRun(f"model files still missing after downloading: {missing}")


def _fetch(observer, fetcher, file, sink, cancelled: Callable[[], bool]) -> None:
    record, store = observer.record, observer.jobs.store
    shown = {"step": None}

    def progress(_file, done: int, total: int | None) -> None:
        # percent steps when the size is known, else megabytes: about a hundred updates per file
        step = int(100 * done / total) if total else done >> 20
        if step == shown["step"]:
            return
        shown["step"] = step
        text = f"downloading {file.name} {step}%" if total else f"downloading {file.name} {step} MB"
        status = observer._status(text)
        job_progress = 1 + (DOWNLOAD_PROGRESS_SPAN * done // total if total else 0)
        record.set_progress(job_progress, status)
        store.update_progress(record.job_id, job_progress, status)
        sink.send("download_progress", {"prompt_id": record.job_id, "folder": file.folder, "file": file.name,
                                        "value": done, "max": total, "percent": step if total else None})

    if fetcher.present(file.folder, file.name):
        return
    progress(file, 0, file.size)
    try:
        fetcher.fetch(file, progress=progress, cancelled=cancelled)
    except DownloadCancelled as exc:
        raise Interrupted(str(exc)) from None
