"""The job registry: SQLite at ``$RTRAIN_HOME/state.db`` in WAL mode.

Every lifecycle transition is written here before the step runs, so a crashed launcher can be
resumed and a pod can never be forgotten. Several rtrain processes may use it at once: each write is
one short ``BEGIN IMMEDIATE`` transaction and readers never block writers (WAL).
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY,
    name TEXT,
    status TEXT NOT NULL,
    phase TEXT NOT NULL,
    backend TEXT NOT NULL,
    spec TEXT NOT NULL,
    pod_id TEXT,
    pod_name TEXT,
    workdir TEXT,
    output_dir TEXT,
    adapter_dir TEXT,
    price_per_hr REAL,
    cost_usd REAL,
    steps INTEGER,
    final_loss REAL,
    events_offset INTEGER NOT NULL DEFAULT 0,
    code_sha256 TEXT,
    gpu TEXT,
    attempt INTEGER NOT NULL DEFAULT 1,
    prior_cost_usd REAL NOT NULL DEFAULT 0,
    error TEXT,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    started_at REAL,
    finished_at REAL
);
CREATE INDEX IF NOT EXISTS jobs_pod ON jobs(pod_id);
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    job_id TEXT NOT NULL REFERENCES jobs(id),
    ts REAL NOT NULL,
    kind TEXT NOT NULL,
    message TEXT NOT NULL,
    data TEXT
);
CREATE INDEX IF NOT EXISTS events_job ON events(job_id, id);
CREATE TABLE IF NOT EXISTS blob_hashes (
    path TEXT PRIMARY KEY,
    size INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL,
    sha256 TEXT NOT NULL
);
"""

#: Terminal statuses: the job will not move again by itself.
FINISHED = ("succeeded", "failed", "interrupted")
#: The job ended but its machine may still be up and billing: `rtrain down JOB` ends it.
LEAK_RISK = "leak-risk"
#: PRAGMA user_version of the schema above; ``_migrate`` brings older registries up to it.
SCHEMA_VERSION = 3


@dataclass
class JobRecord:
    id: str
    name: str | None
    status: str
    phase: str
    backend: str
    spec: str
    pod_id: str | None
    pod_name: str | None
    workdir: str | None
    output_dir: str | None
    adapter_dir: str | None
    price_per_hr: float | None
    cost_usd: float | None
    steps: int | None
    final_loss: float | None
    events_offset: int
    #: the sha256 of the trainer's code blob on the machine (a restarted trainer runs the same code)
    code_sha256: str | None
    #: the GPU alias the machine was rented with
    gpu: str | None
    #: 1, then one more for each machine a lost one was replaced (or resumed) by
    attempt: int
    #: what the earlier attempts' machines billed (``cost_usd`` is the sum over every machine)
    prior_cost_usd: float
    error: str | None
    created_at: float
    updated_at: float
    started_at: float | None
    finished_at: float | None

    @property
    def spec_dict(self) -> dict[str, Any]:
        return dict(json.loads(self.spec))

    def public(self) -> dict[str, Any]:
        """The keys ``--json`` promises, plus timestamps (ISO 8601, UTC)."""
        return {
            "job_id": self.id,
            "name": self.name,
            "status": self.status,
            "phase": self.phase,
            "backend": self.backend,
            "output_dir": self.output_dir,
            "adapter_dir": self.adapter_dir,
            "steps": self.steps,
            "final_loss": self.final_loss,
            "cost_usd": self.cost_usd,
            "pod_id": self.pod_id,
            "error": self.error,
            "created_at": iso(self.created_at),
            "updated_at": iso(self.updated_at),
        }


def iso(ts: float | None) -> str | None:
    if ts is None:
        return None
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))


_COLUMNS = tuple(f.name for f in fields(JobRecord))


class Registry:
    """Jobs and their events. Open one per process; it is cheap."""

    def __init__(self, path: Path) -> None:
        self.path = path
        if not path.exists():
            # Create it private before SQLite does; SQLite gives -wal/-shm the same mode.
            os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o600))
        self._db = sqlite3.connect(path, timeout=30.0, isolation_level=None)
        self._db.row_factory = sqlite3.Row
        try:
            self._db.execute("PRAGMA busy_timeout=30000")
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            if self._db.execute("PRAGMA quick_check").fetchone()[0] != "ok":
                raise sqlite3.DatabaseError("its pages do not check out (PRAGMA quick_check)")
            self._migrate()
        except sqlite3.DatabaseError as exc:
            self._db.close()
            from launcher.errors import UsageError

            raise UsageError(f"{path}: not a readable rtrain registry ({exc}): move it aside and rtrain starts a new "
                             "one; `rtrain ls --pods` still finds the machines its jobs left running") from None

    def _migrate(self) -> None:
        """Create the schema, or bring a registry of an earlier rtrain up to it (in one transaction)."""
        version = int(self._db.execute("PRAGMA user_version").fetchone()[0])
        if version == SCHEMA_VERSION:
            return
        with self._write() as db:
            old = {r[1] for r in db.execute("PRAGMA table_info(jobs)")}
            if old and version < 2:  # version 1: LEAK RISK in the error text, no code column, an unused offset
                db.execute("ALTER TABLE jobs ADD COLUMN code_sha256 TEXT")
                db.execute("UPDATE jobs SET status = ?, error = substr(error, 12) WHERE error LIKE 'LEAK RISK: %'",
                           (LEAK_RISK,))
                if "log_offset" in old:
                    db.execute("ALTER TABLE jobs DROP COLUMN log_offset")
            if old and version < 3:  # version 2: one machine a job
                for column in ("gpu TEXT", "attempt INTEGER NOT NULL DEFAULT 1",
                               "prior_cost_usd REAL NOT NULL DEFAULT 0"):
                    db.execute(f"ALTER TABLE jobs ADD COLUMN {column}")
            for statement in SCHEMA.split(";"):
                if statement.strip():
                    db.execute(statement)
            db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    @classmethod
    def open_default(cls) -> Registry:
        from launcher.paths import rtrain_home

        return cls(rtrain_home() / "state.db")

    def close(self) -> None:
        self._db.close()

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield self._db
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    def create_job(self, job_id: str, *, name: str | None, backend: str, spec: dict[str, Any],
                   workdir: str | None, output_dir: str, pod_name: str | None) -> JobRecord:
        """A new job, which claims ``output_dir``: a job still running (or leak-risk) into the same folder
        makes this a usage error, checked and claimed in one transaction."""
        now = time.time()
        with self._write() as db:
            taken = db.execute("SELECT id FROM jobs WHERE output_dir = ? AND status IN ('running', ?)",
                               (output_dir, LEAK_RISK)).fetchone()
            if taken is not None:
                from launcher.errors import UsageError

                raise UsageError(f"--output {output_dir}: job {taken['id']} is already writing there")
            db.execute(
                "INSERT INTO jobs (id, name, status, phase, backend, spec, pod_name, workdir, output_dir,"
                " created_at, updated_at) VALUES (?, ?, 'running', 'validate', ?, ?, ?, ?, ?, ?, ?)",
                (job_id, name, backend, json.dumps(spec, sort_keys=True), pod_name, workdir, output_dir, now, now),
            )
            db.execute(
                "INSERT INTO events (job_id, ts, kind, message) VALUES (?, ?, 'created', ?)",
                (job_id, now, f"job created for backend {backend}"),
            )
        return self.get(job_id)

    def update(self, job_id: str, **values: Any) -> None:
        bad = set(values) - set(_COLUMNS) - {"id"}
        if bad:
            raise KeyError(f"unknown job columns: {sorted(bad)}")
        values["updated_at"] = time.time()
        cols = ", ".join(f"{k} = ?" for k in values)
        with self._write() as db:
            db.execute(f"UPDATE jobs SET {cols} WHERE id = ?", (*values.values(), job_id))

    def add_event(self, job_id: str, kind: str, message: str, data: dict[str, Any] | None = None) -> None:
        with self._write() as db:
            db.execute(
                "INSERT INTO events (job_id, ts, kind, message, data) VALUES (?, ?, ?, ?, ?)",
                (job_id, time.time(), kind, message, json.dumps(data) if data is not None else None),
            )

    def set_phase(self, job_id: str, phase: str, message: str | None = None, **values: Any) -> None:
        """Record that the job entered lifecycle step ``phase`` (one transaction with its event)."""
        now = time.time()
        values.update(phase=phase, updated_at=now)
        cols = ", ".join(f"{k} = ?" for k in values)
        with self._write() as db:
            db.execute(f"UPDATE jobs SET {cols} WHERE id = ?", (*values.values(), job_id))
            db.execute(
                "INSERT INTO events (job_id, ts, kind, message, data) VALUES (?, ?, 'phase', ?, ?)",
                (job_id, now, message or phase, json.dumps({"phase": phase})),
            )

    def get(self, key: str) -> JobRecord:
        """A job by id, unique id prefix, name or pod id; KeyError when none or ambiguous (an empty key
        matches no job)."""
        if not key.strip():
            raise KeyError(f"no job {key!r}")
        rows = self._db.execute("SELECT * FROM jobs WHERE id = ? OR pod_id = ?", (key, key)).fetchall()
        if not rows:
            rows = self._db.execute(
                "SELECT * FROM jobs WHERE id LIKE ? ESCAPE '\\' OR name = ? ORDER BY created_at",
                (key.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%", key),
            ).fetchall()
        if not rows:
            raise KeyError(f"no job {key!r}")
        if len(rows) > 1:
            ids = ", ".join(r["id"] for r in rows[:5])
            raise KeyError(f"{key!r} matches several jobs ({ids}); give more of the id")
        return _record(rows[0])

    def jobs(self) -> list[JobRecord]:
        rows = self._db.execute("SELECT * FROM jobs ORDER BY created_at").fetchall()
        return [_record(r) for r in rows]

    def cached_sha256(self, path: Path) -> str | None:
        """The sha256 hashed for this exact file before (same path, size and mtime), if any."""
        st = path.stat()
        row = self._db.execute("SELECT sha256 FROM blob_hashes WHERE path = ? AND size = ? AND mtime_ns = ?",
                               (str(path.resolve()), st.st_size, st.st_mtime_ns)).fetchone()
        return str(row[0]) if row else None

    def hashed_before(self, path: Path) -> bool:
        """Whether this path, at its present size, was hashed before (touched since, perhaps not changed)."""
        row = self._db.execute("SELECT 1 FROM blob_hashes WHERE path = ? AND size = ?",
                               (str(path.resolve()), path.stat().st_size)).fetchone()
        return row is not None

    def remember_sha256(self, path: Path, sha256: str) -> None:
        st = path.stat()
        with self._write() as db:
            db.execute("INSERT OR REPLACE INTO blob_hashes (path, size, mtime_ns, sha256) VALUES (?, ?, ?, ?)",
                       (str(path.resolve()), st.st_size, st.st_mtime_ns, sha256))

    def events(self, job_id: str) -> list[dict[str, Any]]:
        rows = self._db.execute(
            "SELECT ts, kind, message, data FROM events WHERE job_id = ? ORDER BY id", (job_id,)
        ).fetchall()
        return [
            {"ts": r["ts"], "kind": r["kind"], "message": r["message"],
             "data": json.loads(r["data"]) if r["data"] else None}
            for r in rows
        ]


def _record(row: sqlite3.Row) -> JobRecord:
    return JobRecord(**{k: row[k] for k in _COLUMNS})
