"""When the job's machine goes away: notice it in seconds, then carry on elsewhere.

Noticing: when the SSH connection drops, the provider is asked what happened before any reconnect
(``watch_machine``): a machine it reports stopped, lost or gone raises PodLost at once, instead of
minutes of reconnecting to nothing.

Recovering (``recover``, bounded by ``--max-recoveries``): the lost machine's bill is closed in the
registry; a stopped machine whose provider can resume it (RunPod ``podResume``/``podBidResume``: its
volume, and the checkpoints on it, survive) is resumed; otherwise it is terminated and a new one is
provisioned from the same offers. ``restore`` then puts the job back on the machine: what it lacks of
the job's blobs, the newest checkpoint (copied off the old machine as it was written, if the machine
has none newer), and the events so far; the trainer restarts from that checkpoint with the same data
order, optimizer and scheduler state.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from launcher.backends import get_backend
from launcher.backends.base import NoCapacity, PodRequest
from launcher.checkpoints import newest_copy, state_dir, step_of
from launcher.errors import PodLost, ProviderError
from launcher.remote_trainer import EVENTS
from launcher.teardown import terminate_with_retries
from launcher.uploads import upload_job, upload_model_folder, write_remote_file

if TYPE_CHECKING:
    from launcher.job import Lifecycle

#: the steps after a recovery: reconnect, put the job back, follow it to the end
RECOVERY_STEPS = ("wait_ssh", "restore", "follow", "download", "push")
#: seconds between two questions to the provider while the connection is down
ASK_EVERY_S = 2.0


def watch_machine(lc: Lifecycle) -> None:
    """The executor's on_drop hook: ask the provider (quickly) whether the machine is still there."""
    now = time.monotonic()
    if now - lc.last_asked < ASK_EVERY_S or lc.backend is None or lc.pod is None:
        return
    lc.last_asked = now
    backend = lc.backend
    try:
        pod = get_backend(backend.name, lc.settings, quick=True).get(lc.pod.id)
    except ProviderError:
        return  # the provider does not answer either: keep trying SSH until its own deadline
    if pod is None:
        raise PodLost(f"{backend.title} no longer knows machine {lc.pod.id} (it was terminated)")
    if pod.status in ("exited", "lost", "terminated"):
        resumable = pod.status == "exited" and "stop_resume" not in backend.lacks
        raise PodLost(f"machine {lc.pod.id} is {pod.provider_status or pod.status} on {backend.title}",
                      resumable=resumable)


def recover(lc: Lifecycle, lost: PodLost) -> None:
    """Close the lost attempt; resume its machine or provision a new one (ProviderError when no
    recovery is left, naming what happened and where the newest checkpoint is)."""
    assert lc.backend is not None
    lc.ui.stop_progress()
    rec = lc.registry.get(lc.id)
    newest = newest_copy(lc.settings.rtrain_home(), lc.id)
    kept = f"; the newest checkpoint (step {step_of(newest)}) is kept in {newest}" if newest else ""
    if rec.attempt > lc.spec.max_recoveries:
        raise ProviderError(f"{lost} at step {rec.steps or 0}; --max-recoveries {lc.spec.max_recoveries}: "
                            f"not recovering{kept}")
    now = time.time()
    billed = rec.price_per_hr * (now - rec.started_at) / 3600 if rec.price_per_hr and rec.started_at else 0.0
    lc.registry.add_event(lc.id, "attempt", f"attempt {rec.attempt} on {rec.backend} {rec.pod_id} ended: {lost}",
                          {"attempt": rec.attempt, "backend": rec.backend, "pod_id": rec.pod_id, "gpu": rec.gpu,
                           "started_at": rec.started_at, "ended_at": now, "steps": rec.steps,
                           "cost_usd": round(billed, 4), "reason": str(lost)})
    lc.registry.update(lc.id, prior_cost_usd=round(rec.prior_cost_usd + billed, 4), attempt=rec.attempt + 1)
    lc.ui.warn(f"{lost}: recovering (attempt {rec.attempt + 1} of at most {lc.spec.max_recoveries + 1})")
    if lc.mirror is not None:
        lc.mirror.wait(10.0)  # a copy in flight may still land; one from a dead machine will not
        for failure in lc.mirror.failures:
            lc.ui.warn(f"a checkpoint could not be copied off the machine: {failure}")
        lc.mirror.close()
        lc.mirror = None
    lc.ex = None
    if lost.resumable and resume_same(lc):
        return
    assert lc.pod is not None
    lc._phase("provision", f"ending lost machine {lc.pod.id}, then provisioning another")
    terminate_with_retries(lc.backend, lc.pod.id)
    lc.pod = None
    lc.provision()


def resume_same(lc: Lifecycle) -> bool:
    """Resume the stopped machine (its disk, and the checkpoints on it, survive); False when it cannot."""
    assert lc.backend is not None and lc.pod is not None
    gpu = lc.registry.get(lc.id).gpu or (lc.spec.gpu or [""])[0]
    request = PodRequest(job_id=lc.id, name=lc.pod.name, gpus=[gpu], gpu_count=lc.spec.gpu_count, spot=lc.spec.spot)
    lc._phase("provision", f"resuming machine {lc.pod.id} ({lc.backend.title} keeps its disk)")
    try:
        with lc.guard.hold():
            pod = lc.backend.resume(lc.pod.id, request)
    except (NoCapacity, ProviderError) as exc:
        lc.ui.warn(f"cannot resume {lc.pod.id}: {exc}")
        lc.registry.add_event(lc.id, "resume", f"cannot resume {lc.pod.id}: {exc}")
        return False
    lc.pod = pod
    lc.registry.update(lc.id, price_per_hr=pod.price_per_hr, started_at=time.time())
    lc.ui.price_per_hr = pod.price_per_hr
    lc.registry.add_event(lc.id, "resume", f"machine {pod.id} resumed")
    return True


def restore(lc: Lifecycle) -> None:
    """The job back on a machine after a recovery, and its trainer restarted from the newest checkpoint."""
    assert lc.pod is not None and lc.ex is not None and lc.backend is not None
    rec = lc.registry.get(lc.id)
    lc._phase("upload", f"restoring the job on {lc.pod.id} (attempt {rec.attempt})")
    trainer = lc.trainer
    trainer.begin_prepare()
    code = upload_job(lc.ex, lc.registry, lc.ui, lc.id, lc.spec, lc.settings, lc.jobdir, lc.pod.root,
                      shares_filesystem=lc.backend.shares_filesystem)
    lc.code_path = code.path
    lc.registry.update(lc.id, workdir=lc.jobdir, code_sha256=code.sha256)
    on_machine = trainer.newest_checkpoint()
    copy = newest_copy(lc.settings.rtrain_home(), lc.id)
    machine_step = int(on_machine.rsplit("-", 1)[-1]) if on_machine else -1
    if copy is not None and (step_of(copy) or 0) > machine_step:
        upload_model_folder(lc.ex, lc.registry, lc.ui, lc.id, copy, f"{lc.pod.root}/blobs",
                            f"{lc.jobdir}/checkpoints/{copy.name}")
        machine_step = step_of(copy) or 0
    restore_events(lc, rec.events_offset)
    trainer.wait_prepared(1800)
    trainer.start(lc.code_path, restart=True)
    where = f"from the checkpoint of step {machine_step}" if machine_step >= 0 else "from the start (no checkpoint)"
    lc.ui.info(f"  training continues {where}")
    lc.registry.add_event(lc.id, "recovered", f"training continues {where} on {lc.pod.id}",
                          {"attempt": rec.attempt, "from_step": max(machine_step, 0)})


def restore_events(lc: Lifecycle, offset: int) -> None:
    """The events consumed so far, back in the job's events file (a resumed machine has them)."""
    assert lc.ex is not None
    size = lc.ex.run(f"stat -c %s {lc.jobdir}/{EVENTS} 2>/dev/null || echo 0").stdout.strip()
    if size.isdigit() and int(size) >= offset:
        return
    local = state_dir(lc.settings.rtrain_home(), lc.id) / EVENTS
    if local.is_file() and local.stat().st_size == offset:
        write_remote_file(lc.ex, f"{lc.jobdir}/{EVENTS}", local.read_bytes())
        return
    lc.ui.warn("the events of the earlier attempts are not on this machine: they start over")
    lc.registry.update(lc.id, events_offset=0)
