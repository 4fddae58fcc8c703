"""JobRecord response shapes and the SQLite JobStore: CRUD, paging, eviction, persistence,
restart recovery, a real SIGKILL mid-write, and a worker thread writing while we read."""

import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from server.jobs import (
    FinishReason,
    ImageResult,
    JobRecord,
    JobStage,
    JobStore,
    JobType,
    RecoveryPolicy,
    SchemaTooNewError,
    not_found_response,
    queue_full_async_response,
)
from server.jobs.record import RESTART_RUNNING_REASON, RESTART_WAITING_REASON
from server.jobs.store import SCHEMA_VERSION

REPO_ROOT = Path(__file__).resolve().parents[1]


def make_job(n: int, **kw) -> JobRecord:
    params = kw.pop("params", {"prompt": f"p{n}", "image_seed": 1000 + n})
    return JobRecord(
        job_type=kw.pop("job_type", JobType.TEXT_TO_IMAGE),
        params=params,
        job_id=kw.pop("job_id", f"job-{n:03d}"),
        created_ms=kw.pop("created_ms", 1_000 + n),
        **kw,
    )


def finish(store: JobStore, rec: JobRecord, at_ms: int) -> JobRecord:
    rec.mark_running(at_ms - 1)
    store.update(rec)
    rec.mark_success(
        [ImageResult(seed="7", url=f"http://h/files/{rec.job_id}-0.png", path=f"/o/{rec.job_id}-0.png")],
        at_ms=at_ms,
    )
    store.update(rec)
    return rec


def add(store: JobStore, n: int, **kw) -> JobRecord:
    rec = make_job(n, **kw)
    store.add(rec)
    return rec


@pytest.fixture
def store():
    s = JobStore(":memory:")
    yield s
    s.close()


# ------------------------------------------------------------------- record shapes
def test_query_response_shapes_follow_the_spec():
    rec = make_job(1, params={"prompt": "a", "image_seed": 5, "require_base64": True})
    assert rec.to_query_response() == {
        "job_id": "job-001", "job_type": "Text to Image", "job_stage": "WAITING",
        "job_progress": 0, "job_status": None, "job_step_preview": None, "job_result": None,
    }
    rec.mark_running(at_ms=2000)
    rec.set_progress(40, "Step 3/30 in the 1-th Sampling")
    q = rec.to_query_response(step_preview="iVBOR")
    assert (q["job_stage"], q["job_progress"], q["job_status"], q["job_step_preview"]) == (
        "RUNNING", 40, "Step 3/30 in the 1-th Sampling", "iVBOR")
    assert q["job_result"] is None
    rec.mark_success([ImageResult(seed=123, url="http://h/files/d/job-001-0.png", path="/x.png")],
                     at_ms=3000)
    q = rec.to_query_response(base64_loader=lambda r: "data:image/png;base64,AAA" if r.path == "/x.png" else None)
    assert q["job_stage"] == "SUCCESS" and q["job_progress"] == 100 and q["job_status"] == "Finished"
    assert q["job_result"] == [{"base64": "data:image/png;base64,AAA",
                                "url": "http://h/files/d/job-001-0.png", "seed": "123",
                                "finish_reason": "SUCCESS"}]
    assert rec.to_history_info() == {"job_id": "job-001", "in_queue_mills": 1001,
                                     "start_mills": 2000, "finish_mills": 3000, "is_finished": True}
    info = rec.to_persistent_history_item()
    assert info["params"] == rec.params
    ti = info["task_info"]
    assert (ti["task_id"], ti["task_type"], ti["result_url"], ti["finish_reason"]) == (
        "job-001", "Text to Image", "http://h/files/d/job-001-0.png", "SUCCESS")
    assert (ti["task_in_queue_mills"], ti["task_start_mills"], ti["task_finish_mills"]) == (1001, 2000, 3000)
    assert time.strptime(ti["date_time"], "%Y-%m-%d %H:%M:%S")
    assert rec.to_webhook_payload() == {
        "job_id": "job-001", "job_result": [{"url": "http://h/files/d/job-001-0.png", "seed": "123"}],
        "job_stage": "SUCCESS", "finish_reason": "SUCCESS"}


def test_base64_only_when_the_request_asked_for_it():
    rec = make_job(1)  # no require_base64
    rec.mark_success([ImageResult(seed="1", url="u", base64="BBB")])
    assert rec.to_query_response(base64_loader=lambda r: "X")["job_result"][0]["base64"] is None


def test_failure_and_cancel_are_error_items_v04_style():
    rec = make_job(2, params={"image_seed": 99})
    rec.mark_running(at_ms=10)
    rec.set_progress(30, "Step 1/30")
    done = ImageResult(seed="99", url="http://h/a.png", path="/a.png")
    rec.mark_failed("stopped", FinishReason.USER_CANCEL, partial_results=[done], at_ms=20)
    assert rec.stage is JobStage.ERROR and rec.finish_reason is FinishReason.USER_CANCEL
    q = rec.to_query_response()
    assert q["job_stage"] == "ERROR" and q["job_status"] == "Step 1/30"
    # our choice over upstream's null: a stopped job still lists what it finished
    assert [item["finish_reason"] for item in q["job_result"]] == ["SUCCESS", "USER_CANCEL"]
    assert rec.to_sync_response() == [
        {"base64": None, "url": "http://h/a.png", "seed": "99", "finish_reason": "SUCCESS"},
        {"base64": None, "url": None, "seed": "99", "finish_reason": "USER_CANCEL"},
    ]
    assert rec.file_paths() == ["/a.png"]
    assert rec.to_webhook_payload() == {"job_id": "job-002", "job_result": [{"url": "http://h/a.png", "seed": "99"}],
                                        "job_stage": "ERROR", "finish_reason": "USER_CANCEL"}
    err = make_job(3)
    err.mark_failed("boom")
    assert err.to_sync_response() == [{"base64": None, "url": None, "seed": "1003", "finish_reason": "ERROR"}]
    assert err.to_webhook_payload()["job_result"] == []


def test_fixed_responses():
    assert not_found_response() == {"job_id": "", "job_type": "Not Found", "job_stage": "ERROR",
                                    "job_progress": 0, "job_status": "Job not found",
                                    "job_step_preview": None, "job_result": None}
    assert queue_full_async_response(JobType.IMAGE_PROMPT)["job_result"] == [
        {"base64": None, "url": None, "seed": "", "finish_reason": "QUEUE_IS_FULL"}]
    assert queue_full_async_response("Image Prompt")["job_type"] == "Image Prompt"


# ------------------------------------------------------------------- store CRUD
def test_add_get_update_roundtrip(store):
    rec = make_job(1, webhook_url="http://hook", priority=3, api="comfy")
    store.add(rec)
    assert store.get("job-001") == rec
    with pytest.raises(ValueError):
        store.add(make_job(1))
    rec.mark_running(at_ms=5)
    assert store.update(rec)
    got = store.get("job-001")
    assert got.stage is JobStage.RUNNING and got.started_ms == 5 and got.api == "comfy"
    rec.mark_success([ImageResult(seed="1", url="u", path="/p")], at_ms=9)
    rec.webhook.attempts, rec.webhook.outcome = 2, "delivered"
    store.update(rec)
    assert store.get("job-001") == rec
    assert store.get("nope") is None
    assert store.update(make_job(42)) is False  # never re-creates a missing job
    assert store.get("job-042") is None
    with pytest.raises(TypeError):
        store.add(make_job(5, params={"x": object()}))


def test_history_is_newest_first_paged_and_filtered(store):
    for n in range(5):
        store.add(make_job(n))
    for n in (0, 1, 2, 3):  # job 4 stays WAITING and is not history
        finish(store, store.get(f"job-{n:03d}"), at_ms=10_000 + n)
    ids = lambda recs: [r.job_id for r in recs]
    assert ids(store.list_history()) == ["job-003", "job-002", "job-001", "job-000"]
    assert ids(store.list_history(page=0, page_size=3)) == ["job-003", "job-002", "job-001"]
    assert ids(store.list_history(page=1, page_size=3)) == ["job-000"]
    assert ids(store.list_history(page=2, page_size=3)) == []
    assert ids(store.list_history(page_size=0)) == ["job-003", "job-002", "job-001", "job-000"]
    assert ids(store.list_history(job_id="job-002")) == ["job-002"]
    assert ids(store.list_history(job_id="job-004")) == []
    assert store.queue_summary() == {"running_size": 1, "finished_size": 4, "last_job_id": "job-004"}


def test_queue_order_running_first_then_priority_then_submission(store):
    for n, prio in enumerate([0, 0, 5, 0]):
        store.add(make_job(n, priority=prio))
    running = store.get("job-003")
    running.mark_running()
    store.update(running)
    assert [r.job_id for r in store.list_queue()] == ["job-003", "job-002", "job-000", "job-001"]


def test_delete_returns_the_record(store):
    rec = finish(store, add(store, 1), at_ms=50)
    gone = store.delete("job-001")
    assert gone == rec and gone.file_paths() == ["/o/job-001-0.png"]
    assert store.get("job-001") is None and store.delete("job-001") is None


def test_evict_oldest_finished_first(store):
    for n in range(6):
        store.add(make_job(n))
    finish_times = {0: 500, 1: 100, 2: 300, 3: 200}  # finish order differs from submission
    for n, t in finish_times.items():
        finish(store, store.get(f"job-{n:03d}"), at_ms=t)
    assert store.evict_finished_beyond(0) == []  # 0 = unlimited
    evicted = store.evict_finished_beyond(2)
    assert [r.job_id for r in evicted] == ["job-001", "job-003"]
    assert evicted[0].file_paths() == ["/o/job-001-0.png"]
    assert [r.job_id for r in store.list_history()] == ["job-000", "job-002"]
    assert len(store.list_queue()) == 2  # unfinished jobs are never evicted
    assert store.evict_finished_beyond(2) == []


def test_progress_is_written_at_coarse_intervals(tmp_path):
    now = [0.0]
    path = tmp_path / "jobs.db"
    store = JobStore(path, progress_flush_interval_s=5.0, clock=lambda: now[0])
    rec = make_job(1)
    store.add(rec)
    rec.mark_running()
    store.update(rec)
    peek = sqlite3.connect(path)
    on_disk = lambda: peek.execute("SELECT progress, status FROM jobs").fetchone()
    store.update_progress("job-001", 20, "Step 1/30")
    store.update_progress("job-001", 25)
    assert store.get("job-001").progress == 25 and store.get("job-001").status == "Step 1/30"
    assert on_disk() == (0, None)  # not yet written
    now[0] = 6.0
    store.update_progress("job-001", 30, "Step 3/30")
    assert on_disk() == (30, "Step 3/30")
    store.update_progress("job-001", 40)
    rec.mark_success([], at_ms=9)  # a stage change supersedes pending progress
    store.update(rec)
    store.flush_progress()
    assert on_disk() == (100, "Finished")
    store.update_progress("job-001", 10)  # late ticks never rewind a finished job
    store.close()
    assert on_disk() == (100, "Finished")
    peek.close()


def test_persists_across_reopen_and_schema_is_versioned(tmp_path):
    path = tmp_path / "jobs.db"
    with JobStore(path) as s:
        finish(s, add(s, 1), at_ms=77)
        s.add(make_job(2))
        s.update_progress("job-002", 5, "Initializing ...")  # flushed on close
        expected = s.get("job-001")
    with JobStore(path) as s:
        assert s.schema_version == SCHEMA_VERSION
        assert s.get("job-001") == expected
        assert (s.get("job-002").progress, s.get("job-002").status) == (5, "Initializing ...")
        assert s._db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    db = sqlite3.connect(path)
    db.execute("PRAGMA user_version=99")
    db.close()
    with pytest.raises(SchemaTooNewError):
        JobStore(path)


# ------------------------------------------------------------------- restart recovery
def test_recover_after_restart(tmp_path):
    path = tmp_path / "jobs.db"
    s = JobStore(path)
    for n in range(4):
        s.add(make_job(n))
    s.add(make_job(9, params={}))  # a WAITING job whose request was not stored
    running = s.get("job-001")
    running.mark_running()
    running.set_progress(40, "Step 5/30")
    s.update(running)
    finish(s, s.get("job-003"), at_ms=5000)
    s._db.close()  # "killed": no flush, no finishing
    s._db = None

    s = JobStore(path)
    result = s.recover_after_restart(at_ms=9000)
    assert [r.job_id for r in result.requeue] == ["job-000", "job-002"]
    assert all(r.stage is JobStage.WAITING for r in result.requeue)
    assert result.requeue[0].params == {"prompt": "p0", "image_seed": 1000}
    assert sorted(r.job_id for r in result.failed) == ["job-001", "job-009"]
    crashed = s.get("job-001")
    assert crashed.stage is JobStage.ERROR and crashed.error == RESTART_RUNNING_REASON
    assert crashed.finished_ms == 9000 and crashed.status == "Error: server restarted while the job was running"
    assert crashed.to_sync_response() == [{"base64": None, "url": None, "seed": "1001", "finish_reason": "ERROR"}]
    assert s.get("job-009").error == RESTART_WAITING_REASON
    assert s.get("job-003").stage is JobStage.SUCCESS  # finished jobs untouched
    again = s.recover_after_restart()  # idempotent: WAITING jobs are offered again, nothing else
    assert [r.job_id for r in again.requeue] == ["job-000", "job-002"] and again.failed == []
    failed_all = s.recover_after_restart(RecoveryPolicy.FAIL_ALL)
    assert [r.job_id for r in failed_all.failed] == ["job-000", "job-002"] and not failed_all.requeue
    assert s.list_queue() == []
    s.close()


_WRITER = textwrap.dedent(
    """
    import sys
    from server.jobs import JobStore, JobRecord, ImageResult
    store = JobStore(sys.argv[1], progress_flush_interval_s=0.0)
    i = 0
    while True:
        rec = JobRecord(job_type="Text to Image", params={"prompt": "x" * 2000, "i": i},
                        job_id=f"job-{i:06d}")
        store.add(rec)
        rec.mark_running()
        store.update(rec)
        for step in range(3):
            store.update_progress(rec.job_id, 20 * step, f"Step {step}")
        if i % 2 == 0:
            rec.mark_success([ImageResult(seed=str(i), url="u", path="/p")])
            store.update(rec)
            print(f"done {i}", flush=True)
        else:
            print(f"running {i}", flush=True)
        i += 1
    """
)


def test_sigkill_while_writing_leaves_a_consistent_db(tmp_path):
    path = tmp_path / "jobs.db"
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT))
    proc = subprocess.Popen([sys.executable, "-c", _WRITER, str(path)], stdout=subprocess.PIPE,
                            text=True, env=env, cwd=REPO_ROOT)
    acknowledged = {}
    try:
        for line in proc.stdout:
            state, i = line.split()
            acknowledged[int(i)] = state
            if len(acknowledged) >= 40:
                break
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
        proc.stdout.close()
    assert proc.returncode == -signal.SIGKILL and len(acknowledged) >= 40

    db = sqlite3.connect(path)
    assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    db.close()
    with JobStore(path) as s:
        every = s.list_queue() + s.list_history(page_size=0)
        assert len({r.job_id for r in every}) == len(every) >= len(acknowledged)
        for i, state in acknowledged.items():  # every acknowledged commit survived the kill
            rec = s.get(f"job-{i:06d}")
            assert rec is not None and rec.params["i"] == i
            assert rec.stage is (JobStage.SUCCESS if state == "done" else JobStage.RUNNING)
        result = s.recover_after_restart()
        assert s.list_queue() == [] or all(r.stage is JobStage.WAITING for r in s.list_queue())
        assert {r.job_id for r in result.failed} >= {
            f"job-{i:06d}" for i, st in acknowledged.items() if st == "running"}


# ------------------------------------------------------------------- threads
def test_worker_thread_writes_while_loop_thread_reads(tmp_path):
    s = JobStore(tmp_path / "jobs.db", progress_flush_interval_s=0.0)
    n_jobs = 150
    errors = []

    def worker():
        try:
            for n in range(n_jobs):
                rec = make_job(n)
                s.add(rec)
                rec.mark_running()
                s.update(rec)
                s.update_progress(rec.job_id, 50, "half")
                finish(s, rec, at_ms=10_000 + n)
                s.evict_finished_beyond(100)
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)

    t = threading.Thread(target=worker)
    t.start()
    reads = 0
    while t.is_alive() or reads == 0:
        for rec in s.list_queue():
            assert rec.stage in (JobStage.WAITING, JobStage.RUNNING)
        hist = s.list_history(page_size=10)
        assert [r.finished_ms for r in hist] == sorted((r.finished_ms for r in hist), reverse=True)
        s.get(f"job-{reads % n_jobs:03d}")
        s.queue_summary()
        reads += 1
    t.join()
    assert not errors
    assert s.count_finished() == 100 and s.count_queue() == 0
    assert s.list_history(page_size=1)[0].job_id == f"job-{n_jobs - 1:03d}"
    s.close()
