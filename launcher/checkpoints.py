"""Checkpoints leave the machine as they are written, so that a lost machine costs at most one
checkpoint interval of training.

The trainer writes ``manifest.json`` (sha256 and size of every file) last into each checkpoint
(remote/trainer.py). After each ``checkpoint`` event a background thread copies that checkpoint
over its own SSH connection as one tar stream, checks every file against the manifest, and renames it
into ``$RTRAIN_HOME/jobs/<job>/checkpoints/checkpoint-<step>``, keeping only the newest (with ``--s3``
it is pushed to ``<prefix>/<job>/checkpoints/`` too). Recovery restores the newest copy onto a new
machine, as content-addressed blobs.

The launcher also keeps the trainer's events as it consumes them (``events.jsonl`` there, exactly the
bytes up to the registry's offset): a new machine gets them back, so the events of every attempt
stay in one file and the saved offset stays right.
"""

from __future__ import annotations

import json
import shutil
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from launcher.downloads import discard, fetch_tree, staging_for
from launcher.executor.base import Executor
from launcher.paths import ensure_private_dir
from remote.outputs import MANIFEST, sha256_file

PREFIX = "checkpoint-"


def state_dir(home: Path, job_id: str) -> Path:
    """What the launcher keeps for a job between attempts (0700)."""
    return ensure_private_dir(home / "jobs" / job_id)


def step_of(folder: Path) -> int | None:
    tail = folder.name.removeprefix(PREFIX)
    return int(tail) if folder.name.startswith(PREFIX) and tail.isdigit() else None


def newest_copy(home: Path, job_id: str) -> Path | None:
    """The newest verified checkpoint copied off the machine, if any."""
    folder = home / "jobs" / job_id / "checkpoints"
    found = [p for p in folder.glob(f"{PREFIX}*") if step_of(p) is not None and (p / MANIFEST).is_file()]
    return max(found, key=lambda p: step_of(p) or 0) if found else None


def verify_checkpoint(folder: Path) -> int:
    """Every file against the checkpoint's manifest; ValueError naming the first that differs."""
    files: dict[str, dict[str, Any]] = json.loads((folder / MANIFEST).read_text())["files"]
    for rel, want in files.items():
        path = folder / rel
        if not path.is_file() or path.stat().st_size != want["size"] or sha256_file(path) != want["sha256"]:
            raise ValueError(f"{path}: does not match the checkpoint's manifest")
    return sum(int(f["size"]) for f in files.values())


class CheckpointMirror:
    """Copies checkpoints off the machine in the background, newest first, one at a time."""

    def __init__(self, open_executor: Callable[[], Executor], jobdir: str, home: Path, job_id: str, *,
                 s3_url: str | None = None, on_copied: Callable[[int, int], None] | None = None) -> None:
        self.open_executor, self.jobdir, self.home, self.job_id = open_executor, jobdir, home, job_id
        self.s3_url, self.on_copied = s3_url, on_copied
        self.local = state_dir(home, job_id) / "checkpoints"
        self._wanted: int | None = None
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._ex: Executor | None = None
        self.failures: list[str] = []

    def offer(self, step: int) -> None:
        """A checkpoint of ``step`` was written on the machine: copy it (or the newest after it)."""
        with self._lock:
            self._wanted = max(step, self._wanted or 0)
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="checkpoint-mirror", daemon=True)
                self._thread.start()

    def wait(self, timeout: float) -> None:
        thread = self._thread
        if thread is not None:
            thread.join(timeout)

    def close(self) -> None:
        if self._ex is not None:
            self._ex.close()

    def _run(self) -> None:
        while True:
            with self._lock:
                step, self._wanted = self._wanted, None
            if step is None:
                return
            try:
                self._copy(step)
            except Exception as exc:  # a copy that fails is retried at the next checkpoint; recovery says what it has
                self.failures.append(f"checkpoint-{step}: {type(exc).__name__}: {exc}")

    def _copy(self, step: int) -> None:
        newest = newest_copy(self.home, self.job_id)
        if newest is not None and (step_of(newest) or 0) >= step:
            return
        if self._ex is None:
            self._ex = self.open_executor()
        ensure_private_dir(self.local)
        final = self.local / f"{PREFIX}{step}"
        staging = staging_for(final)
        try:
            fetch_tree(self._ex, f"{self.jobdir}/checkpoints/{PREFIX}{step}", staging)
            size = verify_checkpoint(staging)
            discard(final)
            staging.rename(final)
        except BaseException:
            discard(staging)
            raise
        for older in self.local.glob(f"{PREFIX}*"):
            if older != final and (step_of(older) or 0) < step:
                shutil.rmtree(older, ignore_errors=True)
        if self.s3_url:
            from launcher.s3 import push_folder

            manifest = json.loads((final / MANIFEST).read_text())["files"]
            push_folder(final, f"{self.s3_url.rstrip('/')}/{self.job_id}/checkpoints/{final.name}", manifest)
        if self.on_copied is not None:
            self.on_copied(step, size)
