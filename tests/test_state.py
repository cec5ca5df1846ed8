"""The registry: jobs, events, lookups, privacy, and two processes writing at once."""

from __future__ import annotations

import multiprocessing
import sqlite3
import stat
from pathlib import Path

import pytest

from launcher.state import Registry


def make_job(reg: Registry, job_id: str, name: str | None = None):
    return reg.create_job(job_id, name=name, backend="local", spec={"model": "m", "datasets": ["d"]},
                          workdir=None, output_dir=f"runs/{job_id}", pod_name=f"rtrain-{job_id}")


def test_create_update_and_lookup(tmp_path: Path) -> None:
    reg = Registry(tmp_path / "state.db")
    rec = make_job(reg, "261122-100000-aaaa", name="first")
    assert rec.status == "running" and rec.phase == "validate" and rec.spec_dict["model"] == "m"
    make_job(reg, "261122-100500-bbbb")
    reg.set_phase("261122-100000-aaaa", "provision", "provisioning", pod_id="local-x")
    reg.update("261122-100000-aaaa", steps=5, final_loss=1.5)
    rec = reg.get("261122-100000")  # unique prefix
    assert (rec.phase, rec.pod_id, rec.steps, rec.final_loss) == ("provision", "local-x", 5, 1.5)
    assert reg.get("first").id == rec.id  # by name
    assert reg.get("local-x").id == rec.id  # by pod id
    with pytest.raises(KeyError, match="several jobs"):
        reg.get("261122-10")
    with pytest.raises(KeyError, match="no job"):
        reg.get("nope")
    with pytest.raises(KeyError, match="no job"):
        reg.get("%")  # LIKE wildcards are literal
    kinds = [e["kind"] for e in reg.events(rec.id)]
    assert kinds == ["created", "phase"]
    public = rec.public()
    assert public["created_at"].endswith("Z") and public["job_id"] == rec.id
    with pytest.raises(KeyError):
        reg.update(rec.id, nonsense=1)


def test_wal_mode_and_private_files(tmp_path: Path) -> None:
    db = tmp_path / "state.db"
    reg = Registry(db)
    make_job(reg, "j1")
    mode = sqlite3.connect(db).execute("PRAGMA journal_mode").fetchone()[0]
    assert mode == "wal"
    for path in tmp_path.iterdir():
        if path.name.startswith("state.db"):
            assert stat.S_IMODE(path.stat().st_mode) == 0o600, path


def _hammer(db: str, job_id: str, n: int) -> None:
    reg = Registry(Path(db))
    for i in range(n):
        reg.add_event(job_id, "test", f"event {i}")
        reg.update(job_id, steps=i)


def test_two_processes_write_at_once(tmp_path: Path) -> None:
    db = tmp_path / "state.db"
    reg = Registry(db)
    make_job(reg, "a")
    make_job(reg, "b")
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_hammer, args=(str(db), job, 150)) for job in ("a", "b")]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    assert [p.exitcode for p in procs] == [0, 0]
    assert len([e for e in reg.events("a") if e["kind"] == "test"]) == 150
    assert len([e for e in reg.events("b") if e["kind"] == "test"]) == 150
    assert reg.get("a").steps == 149


def test_a_registry_of_an_earlier_rtrain_is_migrated(tmp_path: Path) -> None:
    # version 1 (rtrain 0.1): LEAK RISK lived in the error text, a log_offset column nothing used
    db = tmp_path / "state.db"
    old = sqlite3.connect(db)
    old.executescript("""
        CREATE TABLE jobs (id TEXT PRIMARY KEY, name TEXT, status TEXT NOT NULL, phase TEXT NOT NULL,
            backend TEXT NOT NULL, spec TEXT NOT NULL, pod_id TEXT, pod_name TEXT, workdir TEXT, output_dir TEXT,
            adapter_dir TEXT, price_per_hr REAL, cost_usd REAL, steps INTEGER, final_loss REAL,
            events_offset INTEGER NOT NULL DEFAULT 0, log_offset INTEGER NOT NULL DEFAULT 0, error TEXT,
            created_at REAL NOT NULL, updated_at REAL NOT NULL, started_at REAL, finished_at REAL);
        CREATE TABLE events (id INTEGER PRIMARY KEY AUTOINCREMENT, job_id TEXT NOT NULL, ts REAL NOT NULL,
            kind TEXT NOT NULL, message TEXT NOT NULL, data TEXT);
        INSERT INTO jobs (id, status, phase, backend, spec, pod_id, error, created_at, updated_at)
            VALUES ('old-1', 'failed', 'follow', 'runpod', '{}', 'p1', 'LEAK RISK: pod p1 may still be running: 500',
                    1, 1), ('old-2', 'succeeded', 'done', 'local', '{}', NULL, NULL, 2, 2);
    """)
    old.close()
    reg = Registry(db)
    leaked = reg.get("old-1")
    assert leaked.status == "leak-risk" and leaked.error == "pod p1 may still be running: 500"
    assert reg.get("old-2").status == "succeeded" and leaked.code_sha256 is None
    assert "log_offset" not in {r[1] for r in sqlite3.connect(db).execute("PRAGMA table_info(jobs)")}
    assert Registry(db).get("old-1").status == "leak-risk"  # opening again changes nothing
