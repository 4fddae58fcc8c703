"""JobStore: every job's record in one SQLite file, the durable half of the job system.

The queue (in memory, owned by the server) decides what runs next; this store only remembers.
It is written when a job is queued (`add`), on each stage change and when it finishes
(`update` writes the whole record). Progress ticks (`update_progress`) are kept in memory and
written at most every `progress_flush_interval_s` seconds (and on `flush_progress`, `update`
and `close`): a crash loses at most that much progress text, never a stage change.

Threads: one sqlite3 connection guarded by one lock. Every public method may be called from
the event-loop thread and from worker threads; calls are short single statements or one
transaction (WAL mode, `synchronous=NORMAL`: a killed process never leaves a torn database and
keeps every committed write; only an OS crash/power loss can drop the last commits).

Restart recovery (`recover_after_restart`, call once right after opening, before serving):
- a job found RUNNING was interrupted mid-run: it becomes ERROR with the reason
  "server restarted while the job was running" (one ERROR result item, v0.4.x style);
- a job found WAITING whose request params are stored is returned, in submission order,
  for the caller to put back on the queue (the record stays WAITING, same job_id, so clients
  polling query-job keep working); with an empty `params` it cannot be rerun and becomes ERROR.
  `RecoveryPolicy.FAIL_ALL` marks the WAITING jobs ERROR too instead of returning them.
The caller also owns the webhooks of jobs failed here (they are returned in `failed`).

Schema versioning: `PRAGMA user_version` holds the schema version; `_MIGRATIONS[i]` upgrades
version i to i+1 in one transaction. A database newer than this code is refused.
"""

from __future__ import annotations

import contextlib
import enum
import json
import os
import sqlite3
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Iterable

from .record import (
    RESTART_RUNNING_REASON,
    RESTART_WAITING_REASON,
    ImageResult,
    JobRecord,
    JobStage,
    WebhookState,
    now_ms,
)

_COLUMNS = (
    "job_id", "job_type", "api", "stage", "progress", "status", "params", "results", "error",
    "webhook_url", "webhook", "created_ms", "started_ms", "finished_ms", "priority",
)

_MIGRATIONS: list[tuple[str, ...]] = [
    # 0 -> 1: the jobs table. `seq` is the submission order (ties of created_ms are common).
    (
        """
        CREATE TABLE jobs (
            seq INTEGER PRIMARY KEY AUTOINCREMENT,
            job_id TEXT NOT NULL UNIQUE,
            job_type TEXT NOT NULL,
            api TEXT NOT NULL,
            stage TEXT NOT NULL,
            progress INTEGER NOT NULL DEFAULT 0,
            status TEXT,
            params TEXT NOT NULL,      -- JSON object
            results TEXT NOT NULL,     -- JSON list of ImageResult dicts
            error TEXT,
            webhook_url TEXT,
            webhook TEXT NOT NULL,     -- JSON WebhookState
            created_ms INTEGER NOT NULL,
            started_ms INTEGER NOT NULL DEFAULT 0,
            finished_ms INTEGER NOT NULL DEFAULT 0,
            priority INTEGER NOT NULL DEFAULT 0
        )
        """,
        "CREATE INDEX jobs_by_stage ON jobs(stage, seq)",
        "CREATE INDEX jobs_by_finish ON jobs(finished_ms, seq)",
    ),
]
SCHEMA_VERSION = len(_MIGRATIONS)

# SQL lists of stage values (constants, never user input).
_FINISHED = "('SUCCESS','ERROR')"
_UNFINISHED = "('WAITING','RUNNING')"
_SET_ALL = ",".join(f"{c}=?" for c in _COLUMNS[1:])


PAGE_CACHE_KIB = 256


class RecoveryPolicy(str, enum.Enum):
    REQUEUE_WAITING = "requeue_waiting"  # RUNNING -> ERROR, WAITING returned for re-queueing
    FAIL_ALL = "fail_all"  # RUNNING and WAITING -> ERROR


@dataclass
class RecoveryResult:
    requeue: list[JobRecord] = field(default_factory=list)  # still WAITING, submission order
    failed: list[JobRecord] = field(default_factory=list)  # now ERROR (already written)


class SchemaTooNewError(RuntimeError):
    pass


def _row_to_record(row: sqlite3.Row) -> JobRecord:
    return JobRecord(
        job_id=row["job_id"],
        job_type=row["job_type"],
        api=row["api"],
        stage=JobStage(row["stage"]),
        progress=row["progress"],
        status=row["status"],
        params=json.loads(row["params"]),
        results=[ImageResult.from_dict(r) for r in json.loads(row["results"])],
        error=row["error"],
        webhook_url=row["webhook_url"],
        webhook=WebhookState.from_dict(json.loads(row["webhook"])),
        created_ms=row["created_ms"],
        started_ms=row["started_ms"],
        finished_ms=row["finished_ms"],
        priority=row["priority"],
    )


def _record_to_values(rec: JobRecord) -> tuple:
    return (
        rec.job_id,
        rec.job_type,
        rec.api,
        rec.stage.value,
        rec.progress,
        rec.status,
        json.dumps(rec.params, separators=(",", ":")),
        json.dumps([r.to_dict() for r in rec.results], separators=(",", ":")),
        rec.error,
        rec.webhook_url,
        json.dumps(rec.webhook.to_dict(), separators=(",", ":")),
        rec.created_ms,
        rec.started_ms,
        rec.finished_ms,
        rec.priority,
    )


class JobStore:
    def __init__(
        self,
        path: str | os.PathLike,
        *,
        progress_flush_interval_s: float = 2.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._lock = threading.RLock()
        self._flush_interval = progress_flush_interval_s
        self._clock = clock
        self._last_flush = clock()
        self._pending_progress: dict[str, tuple[int, str | None]] = {}
        # isolation_level=None: we issue BEGIN/COMMIT ourselves, single statements autocommit.
        self._db = sqlite3.connect(
            os.fspath(path), check_same_thread=False, isolation_level=None, timeout=10.0
        )
        self._db.row_factory = sqlite3.Row
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        # SQLite's default page cache (2 MiB) fills as the table grows and then stays: memory a
        # long-running server holds for rows it rarely reads again (queries hit recent jobs, and
        # the OS caches the file anyway)
        self._db.execute(f"PRAGMA cache_size=-{PAGE_CACHE_KIB}")
        self._migrate()

    # ----------------------------------------------------------------- lifecycle
    def _migrate(self) -> None:
        with self._lock:
            version = self._db.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                self._db.close()
                raise SchemaTooNewError(
                    f"job database schema version {version} is newer than this server's "
                    f"{SCHEMA_VERSION}"
                )
            for target in range(version + 1, SCHEMA_VERSION + 1):
                with self._transaction():
                    for stmt in _MIGRATIONS[target - 1]:
                        self._db.execute(stmt)
                    self._db.execute(f"PRAGMA user_version={target}")

    @contextlib.contextmanager
    def _transaction(self):
        """One write transaction; the caller holds the lock."""
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    def _write_locked(self, rec: JobRecord) -> bool:
        values = _record_to_values(rec)
        cur = self._db.execute(
            f"UPDATE jobs SET {_SET_ALL} WHERE job_id=?", values[1:] + (values[0],)
        )
        return cur.rowcount > 0

    @property
    def schema_version(self) -> int:
        with self._lock:
            return self._db.execute("PRAGMA user_version").fetchone()[0]

    def close(self) -> None:
        with self._lock:
            if self._db is None:
                return
            self._flush_pending_locked()
            self._db.close()
            self._db = None

    def __enter__(self) -> "JobStore":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ----------------------------------------------------------------- writes
    def add(self, record: JobRecord) -> None:
        """Persist a newly queued job. Raises ValueError if the job_id already exists."""
        values = _record_to_values(record)  # fails early (TypeError) on non-JSON params
        placeholders = ",".join("?" * len(_COLUMNS))
        with self._lock:
            try:
                self._db.execute(
                    f"INSERT INTO jobs ({','.join(_COLUMNS)}) VALUES ({placeholders})", values
                )
            except sqlite3.IntegrityError as e:
                raise ValueError(f"job {record.job_id} already exists") from e

    def update(self, record: JobRecord) -> bool:
        """Write the whole record (stage changes, results, webhook state).

        Returns False if the job is no longer stored (deleted meanwhile); never re-creates it.
        """
        with self._lock:
            self._pending_progress.pop(record.job_id, None)
            return self._write_locked(record)

    def update_progress(self, job_id: str, progress: int, status: str | None = None) -> None:
        """Cheap progress tick: kept in memory, written at coarse intervals."""
        with self._lock:
            prev = self._pending_progress.get(job_id)
            if status is None and prev is not None:
                status = prev[1]
            self._pending_progress[job_id] = (max(0, min(100, int(progress))), status)
            if self._clock() - self._last_flush >= self._flush_interval:
                self._flush_pending_locked()

    def flush_progress(self) -> None:
        with self._lock:
            self._flush_pending_locked()

    def _flush_pending_locked(self) -> None:
        self._last_flush = self._clock()
        if not self._pending_progress or self._db is None:
            return
        rows = [
            (progress, status, status, job_id)
            for job_id, (progress, status) in self._pending_progress.items()
        ]
        self._pending_progress.clear()
        with self._transaction():
            self._db.executemany(
                "UPDATE jobs SET progress=?, status=CASE WHEN ? IS NULL THEN status ELSE ? END "
                f"WHERE job_id=? AND stage IN {_UNFINISHED}",
                rows,
            )

    def delete(self, job_id: str) -> JobRecord | None:
        """Remove a job; returns its last record (so its files can be removed) or None."""
        with self._lock:
            with self._transaction():
                rec = self._get_locked(job_id)
                if rec is not None:
                    self._db.execute("DELETE FROM jobs WHERE job_id=?", (job_id,))
            self._pending_progress.pop(job_id, None)
            return rec

    def evict_finished_beyond(self, limit: int) -> list[JobRecord]:
        """Keep at most `limit` finished jobs (`--queue-history`; 0 or less = unlimited).

        Deletes and returns the oldest finished jobs (by finish time, then submission order).
        """
        if limit <= 0:
            return []
        with self._lock:
            with self._transaction():
                rows = self._db.execute(
                    f"SELECT * FROM jobs WHERE stage IN {_FINISHED} "
                    "ORDER BY finished_ms DESC, seq DESC LIMIT -1 OFFSET ?",
                    (limit,),
                ).fetchall()
                evicted = [_row_to_record(r) for r in reversed(rows)]
                self._db.executemany(
                    "DELETE FROM jobs WHERE job_id=?", [(r.job_id,) for r in evicted]
                )
            return evicted

    def recover_after_restart(
        self,
        policy: RecoveryPolicy = RecoveryPolicy.REQUEUE_WAITING,
        *,
        at_ms: int | None = None,
    ) -> RecoveryResult:
        """Settle jobs a previous process left unfinished; see the module docstring."""
        policy = RecoveryPolicy(policy)
        at = at_ms if at_ms is not None else now_ms()
        result = RecoveryResult()
        with self._lock:
            with self._transaction():
                rows = self._db.execute(
                    f"SELECT * FROM jobs WHERE stage IN {_UNFINISHED} ORDER BY seq"
                ).fetchall()
                for rec in map(_row_to_record, rows):
                    if rec.stage is JobStage.RUNNING:
                        rec.mark_failed(RESTART_RUNNING_REASON, at_ms=at)
                        rec.status = f"Error: {RESTART_RUNNING_REASON}"  # query-job says why
                    elif policy is RecoveryPolicy.FAIL_ALL or not rec.params:
                        rec.mark_failed(RESTART_WAITING_REASON, at_ms=at)
                        rec.status = f"Error: {RESTART_WAITING_REASON}"
                    else:
                        result.requeue.append(rec)
                        continue
                    self._write_locked(rec)
                    result.failed.append(rec)
        return result

    # ----------------------------------------------------------------- reads
    def _get_locked(self, job_id: str) -> JobRecord | None:
        row = self._db.execute("SELECT * FROM jobs WHERE job_id=?", (job_id,)).fetchone()
        return self._with_pending(_row_to_record(row)) if row is not None else None

    def _with_pending(self, rec: JobRecord) -> JobRecord:
        pending = self._pending_progress.get(rec.job_id)
        if pending is not None and not rec.is_finished:
            rec.progress = pending[0]
            if pending[1] is not None:
                rec.status = pending[1]
        return rec

    def _select(self, sql: str, args: Iterable = ()) -> list[JobRecord]:
        with self._lock:
            rows = self._db.execute(sql, tuple(args)).fetchall()
            return [self._with_pending(_row_to_record(r)) for r in rows]

    def get(self, job_id: str) -> JobRecord | None:
        with self._lock:
            return self._get_locked(job_id)

    def list_history(
        self, page: int = 0, page_size: int = 20, job_id: str | None = None
    ) -> list[JobRecord]:
        """Finished jobs, newest finished first, `offset = page * page_size` (upstream's
        persistent history). `page_size <= 0` returns all; `job_id` narrows to that job."""
        page = max(0, int(page))
        page_size = int(page_size)
        where = f"stage IN {_FINISHED}"
        args: list = []
        if job_id is not None:
            where += " AND job_id=?"
            args.append(job_id)
        sql = f"SELECT * FROM jobs WHERE {where} ORDER BY finished_ms DESC, seq DESC"
        if page_size > 0:
            sql += " LIMIT ? OFFSET ?"
            args += [page_size, page * page_size]
        return self._select(sql, args)

    def list_queue(self) -> list[JobRecord]:
        """Unfinished jobs in run order: RUNNING first, then WAITING by priority (higher
        first), then submission order."""
        return self._select(
            f"SELECT * FROM jobs WHERE stage IN {_UNFINISHED} "
            "ORDER BY (stage='RUNNING') DESC, priority DESC, seq"
        )

    def count_queue(self) -> int:
        with self._lock:
            return self._db.execute(
                f"SELECT COUNT(*) FROM jobs WHERE stage IN {_UNFINISHED}"
            ).fetchone()[0]

    def count_finished(self) -> int:
        with self._lock:
            return self._db.execute(
                f"SELECT COUNT(*) FROM jobs WHERE stage IN {_FINISHED}"
            ).fetchone()[0]

    def last_job_id(self) -> str | None:
        """The most recently submitted job still stored (job-queue's `last_job_id`)."""
        with self._lock:
            row = self._db.execute("SELECT job_id FROM jobs ORDER BY seq DESC LIMIT 1").fetchone()
            return row[0] if row else None

    def queue_summary(self) -> dict:
        """The job-queue response body."""
        with self._lock:
            return {
                "running_size": self.count_queue(),
                "finished_size": self.count_finished(),
                "last_job_id": self.last_job_id(),
            }
