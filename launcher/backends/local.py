"""The local backend: this machine is the pod.

A "pod" is the job's folder under ``$RTRAIN_HOME/local/jobs/<job-id>``; its trainer runs detached
(its own session), exactly as on a cloud pod, so the lifecycle code is the same. Terminating the pod
ends the trainer's process group and removes the folder (the verified outputs are already copied
out, as they are from a cloud pod).
"""

from __future__ import annotations

import os
import shutil
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

from launcher.backends.base import Leftover, Pod, PodRequest
from launcher.config import Settings
from launcher.errors import UsageError
from launcher.executor.local import LocalExecutor
from launcher.paths import ensure_private_dir
from launcher.runtime import PlainPython

if TYPE_CHECKING:
    from launcher.pricing import PriceTable

POD_PREFIX = "local-"


class LocalBackend:
    name: ClassVar[str] = "local"
    title: ClassVar[str] = "this machine"
    key_env: ClassVar[str | None] = None
    shares_filesystem: ClassVar[bool] = True
    uses_ssh: ClassVar[bool] = False
    lacks: ClassVar[dict[str, str]] = {
        "spot": "this machine is not rented",
        "stop_resume": "this machine is not rented",
        "watchdog": "this machine is not rented: nothing bills when the job ends",
        "keep_pod": "this machine is not rented: there is no pod to keep",
    }

    def __init__(self, settings: Settings, *, quick: bool = False) -> None:
        self.settings = settings
        self.root = settings.rtrain_home() / "local"

    @classmethod
    def api_key(cls, settings: Settings) -> str | None:
        return None

    @classmethod
    def price(cls, prices: dict[str, float], settings: Settings, spot: bool = False) -> float | None:
        return 0.0

    def resume(self, pod_id: str, request: PodRequest) -> Pod:
        raise UsageError(self.lacks["stop_resume"])

    def live_prices(self) -> PriceTable:
        raise UsageError("this machine has no prices")

    def _folder(self, pod_id: str) -> Path:
        return self.root / "jobs" / pod_id.removeprefix(POD_PREFIX)

    def _pod(self, pod_id: str) -> Pod:
        return Pod(id=pod_id, name=f"rtrain-{pod_id.removeprefix(POD_PREFIX)}", status="running",
                   price_per_hr=0.0, root=str(self.root))

    def create(self, request: PodRequest) -> Pod:
        pod_id = POD_PREFIX + request.job_id
        for folder in (self.root, self.root / "jobs", self._folder(pod_id)):
            ensure_private_dir(folder)
        return self._pod(pod_id)

    def get(self, pod_id: str) -> Pod | None:
        return self._pod(pod_id) if self._folder(pod_id).is_dir() else None

    def wait_ready(self, pod: Pod, keys: object, *, deadline_s: float,
                   on_state: Callable[[str], None] | None = None) -> Pod:
        return pod  # nothing to wait for: no image to pull, no sshd to start

    def executor(self, pod: Pod, keys: object = None) -> LocalExecutor:
        return LocalExecutor(self.settings.local_python, private=True)  # all it writes is under RTRAIN_HOME

    def runtime(self, pod: Pod) -> PlainPython:
        return PlainPython(self.settings.local_python or sys.executable)

    def release(self, job_id: str) -> None:
        """Nothing is kept for a local job but its folder."""

    def leftovers(self) -> list[Leftover]:
        return []

    def remove(self, leftover: Leftover) -> None:
        """Nothing to remove."""

    def terminate(self, pod_id: str) -> None:
        folder = self._folder(pod_id)
        pid_file = folder / "trainer.pid"
        if pid_file.is_file() and not (folder / "exit_code").exists():
            try:
                pgid = int(pid_file.read_text().strip())
            except ValueError:
                pgid = 0
            if pgid > 1:
                self._kill_group(pgid)
        shutil.rmtree(folder, ignore_errors=True)

    @staticmethod
    def _kill_group(pgid: int, grace_s: float = 10.0) -> None:
        try:
            os.killpg(pgid, signal.SIGTERM)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + grace_s
        while time.monotonic() < deadline:
            try:
                os.killpg(pgid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.1)
        try:
            os.killpg(pgid, signal.SIGKILL)
        except ProcessLookupError:
            pass

    def list(self) -> list[Pod]:
        jobs = self.root / "jobs"
        if not jobs.is_dir():
            return []
        return [self._pod(POD_PREFIX + d.name) for d in sorted(jobs.iterdir()) if d.is_dir()]
