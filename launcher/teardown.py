"""Ending machines, whatever is going on: retries, Ctrl-C held back while it happens, and ``rtrain
down`` for a job, a machine no job here knows, or a leftover (a registered SSH key)."""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from launcher.backends.base import Backend
from launcher.config import Settings
from launcher.errors import UsageError
from launcher.state import LEAK_RISK, JobRecord, Registry

#: what stops a job: Ctrl-C, `kill`/`timeout`, a closed terminal
STOP_SIGNALS = tuple(getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, name))


class StopGuard:
    """Signals while a job runs. The first SIGINT/SIGTERM/SIGHUP interrupts what is running
    (KeyboardInterrupt) and the job is stopping from then on, as it is after a failure (``stop()``):
    every later signal is held back, so nothing skips the teardown. ``hold()`` holds signals through a
    critical section (a create call whose answer must be recorded) and delivers one at its end."""

    def __init__(self) -> None:
        self.stopping = False
        self._holding = False
        self._pending: int | None = None
        self._old: dict[int, Any] = {}

    def __enter__(self) -> StopGuard:
        try:
            self._old = {s: signal.signal(s, self._handle) for s in STOP_SIGNALS}
        except ValueError:  # not the main thread: nothing to guard
            self._old = {}
        return self

    def __exit__(self, *exc: object) -> None:
        for s, handler in self._old.items():
            signal.signal(s, handler)

    def _handle(self, signum: int, frame: Any) -> None:
        if self.stopping or self._holding:
            self._pending = signum
            return
        self.stopping = True
        raise KeyboardInterrupt

    def stop(self) -> None:
        """The job is stopping (failed, or interrupted): hold every signal from now on."""
        self.stopping = True

    @contextmanager
    def hold(self) -> Iterator[None]:
        self._holding = True
        try:
            yield
        finally:
            self._holding = False
        if self._pending is not None and not self.stopping:
            self.stopping = True
            raise KeyboardInterrupt


def terminate_with_retries(backend: Backend, pod_id: str, attempts: int = 5) -> None:
    from tenacity import retry, stop_after_attempt, wait_exponential

    retry(stop=stop_after_attempt(attempts), wait=wait_exponential(multiplier=0.5, max=8), reraise=True)(
        backend.terminate
    )(pod_id)


def down(target: str, settings: Settings, registry: Registry) -> str:
    """End what ``target`` names: a job's machine (by job id, unique id prefix, name or machine id),
    else an rtrain machine or leftover no job of this machine knows. One line saying what was ended."""
    if not target.strip():
        raise UsageError("down: name a job (id, id prefix or name), a machine id, or a leftover")
    try:
        rec = registry.get(target)
    except KeyError as exc:
        if "several" in str(exc.args[0]):
            raise UsageError(str(exc.args[0])) from None
        return down_unknown(target, settings)
    return down_job(rec, settings, registry)


def down_job(rec: JobRecord, settings: Settings, registry: Registry) -> str:
    from launcher.backends import AUTO, get_backend
    from launcher.keys import delete_job_keys

    if rec.backend == AUTO:  # never got a machine (the choice is recorded with the machine)
        registry.update(rec.id, status="interrupted" if rec.status == "running" else rec.status,
                        error=rec.error or "stopped by rtrain down", finished_at=rec.finished_at or time.time())
        return f"job {rec.id} has no machine"
    backend = get_backend(rec.backend, settings)
    if rec.pod_id is not None:
        terminate_with_retries(backend, rec.pod_id)
    backend.release(rec.id)
    now = time.time()
    values: dict[str, Any] = {"finished_at": rec.finished_at or now}
    if rec.price_per_hr is not None and rec.started_at is not None:
        values["cost_usd"] = round(rec.price_per_hr * (now - rec.started_at) / 3600, 4)  # it billed until now
    if rec.status == "running":
        values.update(status="interrupted", error="stopped by rtrain down")
    elif rec.status == LEAK_RISK:
        values.update(status="succeeded" if rec.phase == "done" else "failed",
                      error=f"{rec.error} (ended later by rtrain down)")
    registry.update(rec.id, **values)
    what = f"{rec.pod_id}" if rec.pod_id else f"what {backend.title} kept"
    registry.add_event(rec.id, "down", f"{what} terminated by rtrain down")
    delete_job_keys(settings.rtrain_home(), rec.id)
    return f"terminated {what} (job {rec.id})" if rec.pod_id else f"job {rec.id} has no machine; {what} removed"


def down_unknown(target: str, settings: Settings) -> str:
    """A machine or leftover no job of this machine knows (another laptop's, a lost registry): ended
    when it is rtrain's, on any provider with a key."""
    from launcher.backends import backend_class, get_backend, with_keys

    providers = with_keys(settings)
    if not providers:
        raise UsageError(f"no job {target!r} here, and no provider key is set to look for a machine with that id")
    for name in providers:
        backend = get_backend(name, settings, quick=True)
        pod = backend.get(target)
        if pod is not None and pod.name.startswith("rtrain-"):
            backend.terminate(pod.id)
            return f"terminated {pod.id} ({pod.name} on {backend.title}, not a job of this machine)"
        leftover = next((x for x in backend.leftovers() if target in (x.id, x.name)), None)
        if leftover is not None:
            backend.remove(leftover)
            return f"removed {leftover.kind} {leftover.name} from {backend.title}"
    titles = ", ".join(backend_class(n).title for n in providers)
    raise UsageError(f"no job {target!r} here, and no rtrain machine or leftover with that id on {titles}")
