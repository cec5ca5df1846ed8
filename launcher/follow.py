"""Following a trainer on its machine: its events into the registry and onto the screen, from the byte
offset the registry saved (a resumed launcher continues exactly where the last one stopped), a
trainer killed from outside (the OOM killer, a pod restart) restarted from its newest checkpoint, and
its exit code read once every complete event line is in."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from launcher.config import Settings
from launcher.errors import Interrupted, TrainingError, UsageError
from launcher.events import EventStream
from launcher.remote_trainer import EVENTS, LOG, RemoteTrainer
from launcher.state import Registry
from launcher.ui import Reporter

#: The exit status bash reports for a trainer killed by SIGKILL (the OOM killer, a pod restart).
KILLED = 137


@dataclass
class Follower:
    job_id: str
    trainer: RemoteTrainer
    registry: Registry
    ui: Reporter
    settings: Settings
    #: where the trainer's code blob is on the machine (a restart runs the same code)
    code_path: str
    poll_s: float = 0.5
    #: a folder where the events consumed are kept, byte for byte (a new machine gets them back)
    events_copy: Path | None = None
    #: hears the step of each checkpoint the trainer wrote
    on_checkpoint: Callable[[int], None] | None = None
    #: the latest of each trainer event kind, and the step count so far
    seen: dict[str, Any] = field(default_factory=dict)

    def _copy_events(self, offset: int, data: bytes) -> None:
        """Append ``data`` (the bytes consumed from ``offset``) to the local copy, which is then exactly
        ``offset + len(data)`` bytes long; a copy that does not line up is started over or dropped."""
        if self.events_copy is None:
            return
        path = self.events_copy / EVENTS
        size = path.stat().st_size if path.exists() else 0
        if size > offset:  # the launcher died after copying, before the registry saved the offset
            with path.open("r+b") as fh:
                fh.truncate(offset)
            size = offset
        if size != offset:  # bytes before the offset are missing here (another laptop followed them)
            path.unlink(missing_ok=True)
            if offset:
                return
        with path.open("ab") as fh:
            fh.write(data)

    def follow(self) -> None:
        """Until the trainer has ended and its events are all read; raises what its exit means."""
        stream = EventStream(offset=self.registry.get(self.job_id).events_offset)
        dead_seen, restarts, delay = 0, 0, 0.1
        while True:
            before = stream.offset
            status, data = self.trainer.probe(stream.offset)
            for event in stream.feed(data):
                self.on_event(event)
            consumed = stream.offset - before
            if consumed:
                self._copy_events(before, data[:consumed])
                self.registry.update(self.job_id, events_offset=stream.offset, steps=self.seen.get("steps_done"))
                delay = 0.1
            elif status.exit_code is not None:  # ended, and every complete line is read (a torn one is dropped)
                if status.exit_code != KILLED or not self.restart(restarts):
                    break
                restarts += 1
                continue
            dead_seen = dead_seen + 1 if status.state == "DEAD" else 0
            if dead_seen >= 2:  # twice in a row: the exit_code file is written right after the trainer ends
                if not self.restart(restarts):
                    raise TrainingError("the trainer died without an exit code (killed? out of memory?); "
                                        f"see `rtrain logs {self.job_id}`")
                restarts, dead_seen = restarts + 1, 0
            if not consumed:
                time.sleep(delay)
                delay = min(self.poll_s, delay * 2)
        self.ui.stop_progress()
        self.check_exit(status.exit_code)

    def restart(self, restarts: int) -> bool:
        """Start a killed trainer again from its newest checkpoint, if it has one and may restart."""
        checkpoint = self.trainer.newest_checkpoint()
        if checkpoint is None or restarts >= self.settings.max_restarts:
            return False
        self.ui.stop_progress()
        self.ui.warn(f"the trainer was killed: restarting it from {checkpoint}")
        self.registry.add_event(self.job_id, "restart", f"trainer killed; restarted from {checkpoint}")
        self.trainer.start(self.code_path, restart=True)
        return True

    def on_event(self, event: dict[str, Any]) -> None:
        self.ui.training_event(event)
        kind = event["event"]
        if kind == "step":
            self.seen["steps_done"] = event.get("step")
        elif kind in ("start", "done", "error", "checkpoint"):
            self.seen[kind] = event
            data = {k: v for k, v in event.items() if k not in ("event", "ts")}
            self.registry.add_event(self.job_id, f"trainer.{kind}", str(event.get("message", kind)), data)
            if kind == "checkpoint" and self.on_checkpoint is not None and isinstance(event.get("step"), int):
                self.on_checkpoint(event["step"])

    def check_exit(self, code: int | None) -> None:
        if code == 0 and "done" in self.seen:
            done = self.seen["done"]
            self.registry.update(self.job_id, steps=done.get("steps"), final_loss=done.get("final_loss"))
            return
        err = self.seen.get("error", {})
        if code == 130:
            raise Interrupted("the trainer was interrupted")
        message = err.get("message") or f"the trainer exited with code {code}"
        if code == 2:  # the job or its data, found wanting where the tokenizer is (before any weights)
            raise UsageError(f"the trainer refused the job: {message}")
        lines = self.trainer.log_tail()
        if lines:
            self.ui.info(f"last lines of {LOG}:")
            for line in lines:
                self.ui.info(f"  | {line}")
        raise TrainingError(f"training failed: {message}")
