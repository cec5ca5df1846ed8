"""A job, top to bottom. ``launch`` validates (before any API call or money), estimates and asks,
records the job, and runs its lifecycle:

    provision -> wait_ssh -> upload -> start -> follow -> download -> push -> teardown

One method per step, each transition written to the registry before the step runs, the same code for
every backend (the local one included). ``teardown`` runs in ``finally``: a machine is never left
behind unless the user asked for it (``--keep-pod``, ``--detach``), and if ending it fails the job is
marked ``leak-risk`` and the user is told exactly how to finish it. ``resume`` picks a job up at the
step its recorded phase says (``RESUME_AT``).
"""

from __future__ import annotations

import math
import time
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from launcher.backends import AUTO, backend_class, get_backend, with_keys
from launcher.backends.base import Backend, NoCapacity, Pod, PodRequest
from launcher.catalog import resolve_gpu
from launcher.config import JobSpec, Settings
from launcher.downloads import download_outputs, fetch_logs
from launcher.errors import Interrupted, PodLost, ProviderError, RtrainError, UsageError
from launcher.executor.base import Executor
from launcher.follow import Follower
from launcher.keys import JobKeys, create_job_keys, delete_job_keys, load_job_keys
from launcher.plan import Plan, validate
from launcher.remote_trainer import EVENTS, LOG, OUTPUT, RemoteTrainer
from launcher.state import LEAK_RISK, JobRecord, Registry
from launcher.teardown import StopGuard, terminate_with_retries
from launcher.ui import Reporter
from launcher.uploads import upload_job

if TYPE_CHECKING:
    from launcher.checkpoints import CheckpointMirror

STEPS = ("provision", "wait_ssh", "upload", "start", "follow", "download", "push")
#: the phase a job was in when its launcher died -> the step that picks it up (None: only teardown was
#: left); a step after wait_ssh reconnects first
RESUME_AT: dict[str, str | None] = {
    "validate": "provision", "provision": "provision", "wait_ssh": "wait_ssh", "upload": "upload",
    "start": "upload", "follow": "follow", "download": "download", "push": "push", "teardown": None,
}
#: seconds to wait for a runtime's preparation (an image pull) after the uploads are done
PREPARE_DEADLINE_S = 1800
#: seconds a failed job may spend fetching its logs from the machine (never more: teardown must run)
SAVE_LOGS_S = 5.0


def launch(values: dict[str, Any], template: str | None, *, settings: Settings, registry: Registry, ui: Reporter,
           detach: bool = False, keep_pod: bool = False, force: bool = False, yes: bool = False) -> JobRecord:
    """Validate, estimate and confirm, record the job, run it; the record it ended with."""
    if values.get("reuse_pod"):  # a kept pod belongs to the provider of the job that kept it
        values["backend"] = owning_job(registry, values["reuse_pod"]).backend
    plan = validate(values, template, settings, keep_pod=keep_pod)
    if plan.spec.backend == "local":
        check_local_training_stack(settings)
    for note in plan.notes:
        ui.info(note)
    count_dataset_tokens(plan, settings, ui)
    for summary in plan.datasets.files:
        ui.info(summary.describe())
    lines = plan_lines(plan)
    for line in lines:
        ui.info(line)
    choice = None
    if plan.spec.backend != "local" and not plan.spec.reuse_pod:
        from launcher.estimate import confirm_launch

        choice = confirm_launch(plan, settings, ui, plan.providers, force=force, yes=yes)
        lines.append(str(choice.record.get("summary")))
    create_job(plan, registry, choice.record if choice else None)
    registry.add_event(plan.job_id, "summary", "; ".join(lines), {"lines": lines})
    lifecycle = Lifecycle(plan.job_id, settings, registry, ui, keep_pod=keep_pod, detach=detach,
                          offers=choice.offers if choice else None)
    return lifecycle.run()


def plan_lines(plan: Plan) -> list[str]:
    """What the launch is about to do, in a few lines (printed before anything is rented, and kept as
    the job's ``summary`` event, which ``launch --json`` returns)."""
    from remote.formats import held_out

    spec = plan.spec
    model = "rtrain's tiny model" if spec.is_tiny_model else spec.model
    where = "this machine" if spec.backend == "local" else (
        f"{spec.backend} {','.join(spec.gpu)}" if spec.gpu else spec.backend)
    if spec.reuse_pod:
        where += f" (machine {spec.reuse_pod}, kept by an earlier job)"
    adapter = f"LoRA rank {spec.lora_rank}" + (" on 4-bit weights (QLoRA)" if spec.load_in_4bit else "")
    files = plan.datasets.files
    examples = sum(f.examples for f in files)
    counted = all(f.counted is not None for f in files)
    tokens = sum(f.counted if f.counted is not None else f.approx_tokens for f in files)
    held = 0 if spec.eval_datasets else held_out(examples, spec.eval_fraction)
    if spec.max_steps:
        steps = f"{spec.max_steps} steps (--max-steps)"
    else:
        per_step = spec.batch_size * spec.grad_accum
        if spec.packing is False:
            rows = examples - held
        else:  # packed rows: about as many as the tokens fill
            rows = max(1, math.ceil(tokens * (examples - held) / max(examples, 1) / spec.max_seq_length))
        steps = f"about {max(1, math.ceil(rows / per_step * spec.epochs)):,} steps ({spec.epochs:g} epochs)"
    return [f"plan: fine-tune {model} with {adapter} on {where}",
            f"plan: {examples:,} examples ({held} held out for eval), {'' if counted else '~'}{tokens:,} tokens, "
            f"{steps}"]


def count_dataset_tokens(plan: Plan, settings: Settings, ui: Reporter) -> None:
    """Each dataset's tokens as the trainer will count them, when the model's tokenizer is on this
    machine (a local folder, or rtrain's tiny model: built now, with its progress shown, on first use)."""
    from launcher.cost import count_tokens
    from launcher.uploads import local_model_folder

    folder = local_model_folder(plan.spec, settings, say=ui.info)
    if folder is None:
        return
    for summary in plan.datasets.files:
        if not summary.format.startswith("s3"):
            count = count_tokens([str(summary.path)], folder, plan.spec.max_seq_length, None)
            if count.method.startswith("counted"):
                summary.counted = count.tokens


def check_local_training_stack(settings: Settings) -> None:
    from launcher.bundle import require_training_stack

    require_training_stack(settings.local_python, "the local backend")


def create_job(plan: Plan, registry: Registry, estimate: dict[str, Any] | None = None) -> JobRecord:
    """The job row, written before anything is asked of a provider (a crash later is findable)."""
    spec = plan.spec
    rec = registry.create_job(
        plan.job_id, name=spec.name, backend=spec.backend, spec=spec.model_dump(mode="json"),
        workdir=None, output_dir=str(plan.output_dir), pod_name=f"rtrain-{plan.job_id}",
    )
    if estimate is not None:
        registry.add_event(plan.job_id, "estimate", str(estimate.get("summary")), estimate)
    return rec


class Lifecycle:
    def __init__(self, job_id: str, settings: Settings, registry: Registry, reporter: Reporter, *,
                 keep_pod: bool = False, detach: bool = False, poll_s: float = 0.5,
                 offers: list[tuple[str, str]] | None = None) -> None:
        self.settings, self.registry, self.ui = settings, registry, reporter
        self.rec = registry.get(job_id)
        self.id = self.rec.id
        self.spec = JobSpec.model_validate(self.rec.spec_dict)
        #: None until provision chose one, for --backend auto
        self.backend: Backend | None = None if self.rec.backend == AUTO else get_backend(self.rec.backend, settings)
        self.keep_pod, self.detach, self.poll_s = keep_pod, detach, poll_s
        self.offers = offers
        self.pod: Pod | None = None
        self.ex: Executor | None = None
        self.keys: JobKeys | None = None
        self.code_path = ""
        self.guard = StopGuard()
        self.mirror: CheckpointMirror | None = None
        self.last_asked = 0.0  # when the provider was last asked whether the machine is still there

    # paths on the machine -------------------------------------------------------------------

    @property
    def jobdir(self) -> str:
        assert self.pod is not None
        return f"{self.pod.root}/jobs/{self.id}"

    def _phase(self, phase: str, message: str, **values: Any) -> None:
        self.registry.set_phase(self.id, phase, message, **values)
        self.ui.phase(message)

    # the whole run ----------------------------------------------------------------------------

    def run(self, resume: bool = False) -> JobRecord:
        """The steps (or, resuming, those left), recovering a lost machine within --max-recoveries, then
        teardown, which no signal skips. Raises the RtrainError that ended the job, after teardown."""
        from launcher.recovery import RECOVERY_STEPS, recover

        status, error = "failed", None
        with self.guard:
            try:
                try:
                    steps = self.resume_steps() if resume else list(STEPS)
                except PodLost as lost:
                    recover(self, lost)
                    steps = list(RECOVERY_STEPS)
                while steps:
                    step = steps.pop(0)
                    try:
                        getattr(self, step)()
                    except PodLost as lost:
                        recover(self, lost)
                        steps = list(RECOVERY_STEPS)
                        continue
                    if step in ("start", "restore") and self.detach:
                        status = "detached"
                        return self.registry.get(self.id)
                status = "succeeded"
            except KeyboardInterrupt:
                status, error = "interrupted", "interrupted by the user"
                raise Interrupted(f"interrupted: the {self.machine_word} was terminated") from None
            except Interrupted as exc:
                status, error = "interrupted", str(exc)
                raise
            except RtrainError as exc:
                error = str(exc)
                raise
            except Exception as exc:
                error = f"internal error: {type(exc).__name__}: {exc}"
                raise
            finally:
                self.guard.stop()  # from here on, every signal waits for the teardown
                if self.mirror is not None:
                    self.mirror.close()
                if status in ("failed", "interrupted") and self.ex is not None:
                    self.save_logs()
                self.teardown(status, error)
        return self.registry.get(self.id)

    def restore(self) -> None:
        from launcher.recovery import restore

        restore(self)

    @property
    def machine_word(self) -> str:
        return "job" if self.backend is not None and self.backend.shares_filesystem else "machine"

    def resume_steps(self) -> list[str]:
        """What is left of a job whose launcher died, from the phase the registry recorded; PodLost when
        its machine is gone or stopped (the run then recovers it)."""
        at = RESUME_AT.get(self.rec.phase, "provision")
        self.keys = load_job_keys(self.settings.rtrain_home(), self.id)
        self.pod = self._find_pod()
        if self.pod is None:
            if at == "provision":
                return list(STEPS)
            self.pod = Pod(id=self.rec.pod_id or "?", name=self.rec.pod_name or "", status="terminated")
            raise PodLost(f"the machine of job {self.id} ({self.rec.pod_id}) is gone")
        self.ui.price_per_hr = self.pod.price_per_hr
        if at is None:
            return []
        if self.pod.status in ("exited", "lost") and at in ("wait_ssh", "upload", "follow"):
            assert self.backend is not None
            raise PodLost(f"machine {self.pod.id} is {self.pod.provider_status or self.pod.status}",
                          resumable=self.pod.status == "exited" and "stop_resume" not in self.backend.lacks)
        steps = list(STEPS[STEPS.index(at):])
        return steps if at in ("wait_ssh", "push") else ["wait_ssh", *steps]

    def _find_pod(self) -> Pod | None:
        """The job's machine: by its recorded id, or (the launcher died inside the create call) by
        name, on its provider or, for --backend auto, on every provider with a key."""
        if self.rec.pod_id and self.backend is not None:
            return self.backend.get(self.rec.pod_id)
        for name in [self.backend.name] if self.backend is not None else with_keys(self.settings):
            backend = self.backend or get_backend(name, self.settings)
            pod = next((p for p in backend.list() if p.name == self.rec.pod_name), None)
            if pod is not None:
                self.backend = backend
                self.registry.update(self.id, backend=name, pod_id=pod.id, price_per_hr=pod.price_per_hr,
                                     started_at=self.rec.created_at)
                return pod
        return None

    # the steps --------------------------------------------------------------------------------

    def default_offers(self) -> list[tuple[str, str]]:
        """(provider, GPU) in the order to try them, when launch did not rank them (a resume)."""
        names = [self.backend.name] if self.backend is not None else with_keys(self.settings)
        gpus = self.spec.gpu or [""]
        return [(n, a) for n in names for a in gpus if n == "local" or resolve_gpu(a).provider_id(n)]

    def provision(self) -> None:
        if self.spec.reuse_pod:
            return self.reuse_pod(self.spec.reuse_pod)
        offers = self.offers or self.default_offers()
        where = backend_class(offers[0][0]).title if len({p for p, _ in offers}) == 1 else "the cheapest provider"
        self._phase("provision", f"provisioning a machine on {where} for job {self.id}")
        request = PodRequest(job_id=self.id, name=self.rec.pod_name or f"rtrain-{self.id}", gpus=[],
                             gpu_count=self.spec.gpu_count, region=self.spec.region)
        if any(backend_class(p).uses_ssh for p, _ in offers):
            self.keys = create_job_keys(self.settings.rtrain_home(), self.id)
            request.public_key, request.host_private_key = self.keys.client_public, self.keys.host_private
            request.host_public_key = self.keys.host_public
        full: list[str] = []
        for i, (provider, alias) in enumerate(offers):
            backend = self.backend if self.backend is not None and self.backend.name == provider else \
                get_backend(provider, self.settings)
            started = time.time()
            try:
                with self.guard.hold():  # a pod created must be recorded before Ctrl-C acts
                    pod = backend.create(replace(request, gpus=[alias] if alias else [], spot=self.spec.spot))
                    self._provisioned(backend, pod, started, offers, i)
            except NoCapacity as exc:
                full.append(str(exc))
                if i + 1 < len(offers):
                    self.ui.warn(f"{exc}; trying {offers[i + 1][0]} {offers[i + 1][1]}")
                    self.registry.add_event(self.id, "capacity", str(exc))
                continue
            return None
        raise NoCapacity(full[0] if len(full) == 1 else "no capacity for any offer: " + "; ".join(full))

    def _provisioned(self, backend: Backend, pod: Pod, started: float, offers: list[tuple[str, str]], i: int) -> None:
        self.backend, self.pod = backend, pod
        self.registry.update(self.id, backend=backend.name, pod_id=pod.id, price_per_hr=pod.price_per_hr,
                             workdir=self.jobdir, started_at=started, gpu=offers[i][1] or None)
        self.ui.price_per_hr = pod.price_per_hr
        self.ui.expect_gpu = not backend.shares_filesystem
        if backend.shares_filesystem:
            return
        self.ui.info(f"  {backend.title} machine {pod.id} created: {pod.gpu or offers[i][1]} x{self.spec.gpu_count}, "
                     f"${pod.price_per_hr:.2f}/hr")
        if len({p for p, _ in offers}) > 1:
            why = "the cheapest offer that fits" if i == 0 else f"the cheapest with capacity ({i} cheaper had none)"
            self.ui.info(f"  chose {backend.name} {offers[i][1]}: {why}")
            self.registry.add_event(self.id, "choice", f"{backend.name} {offers[i][1]}: {why}",
                                    {"offers": [list(o) for o in offers], "chosen": i})

    def reuse_pod(self, pod_id: str) -> None:
        """Run on a pod an earlier job kept (--keep-pod), with that job's keys; leave it running after."""
        assert self.backend is not None
        owner = owning_job(self.registry, pod_id, exclude=self.id)
        self._phase("provision", f"reusing {self.backend.title} machine {pod_id} (kept by job {owner.id})")
        self.keys = load_job_keys(self.settings.rtrain_home(), owner.id)
        pod = self.backend.get(pod_id)
        if pod is None or self.keys is None:
            raise ProviderError(f"machine {pod_id} is gone (or its keys are): it cannot be reused")
        self.pod = pod
        self.keep_pod = True
        self.registry.update(self.id, pod_id=pod.id, price_per_hr=pod.price_per_hr, workdir=self.jobdir,
                             started_at=time.time())
        self.ui.price_per_hr = pod.price_per_hr

    def wait_ssh(self) -> None:
        assert self.pod is not None and self.backend is not None
        self._phase("wait_ssh", "waiting for the machine to accept commands")
        t0 = time.monotonic()

        def on_state(state: str) -> None:
            self.ui.info(f"  [{time.monotonic() - t0:5.1f}s] {state}")
            self.registry.add_event(self.id, "wait", state)

        self.pod = self.backend.wait_ready(self.pod, self.keys, deadline_s=self.settings.ready_timeout_s,
                                           on_state=on_state)
        if self.pod.ssh is not None:
            ep = self.pod.ssh
            self.registry.add_event(self.id, "ssh", f"ready at {ep.user}@{ep.host}:{ep.port} "
                                    f"after {time.monotonic() - t0:.1f}s (host key verified)")
        self.ex = self.backend.executor(self.pod, self.keys)
        if hasattr(self.ex, "on_drop"):
            from launcher.recovery import watch_machine

            self.ex.on_drop = lambda: watch_machine(self)

    @property
    def trainer(self) -> RemoteTrainer:
        assert self.ex is not None and self.backend is not None and self.pod is not None
        return RemoteTrainer(self.ex, self.jobdir, self.backend.runtime(self.pod))

    def upload(self) -> None:
        assert self.pod is not None and self.ex is not None and self.backend is not None
        self._phase("upload", "uploading the dataset, the trainer and the job")
        preparing = self.trainer.begin_prepare()  # an image pull runs on the machine while the files upload
        if preparing:
            self.ui.info(f"  `{preparing}` started on the machine (in the background)")
        code = upload_job(self.ex, self.registry, self.ui, self.id, self.spec, self.settings, self.jobdir,
                          self.pod.root, shares_filesystem=self.backend.shares_filesystem)
        self.code_path = code.path
        self.registry.update(self.id, workdir=self.jobdir, code_sha256=code.sha256)

    def start(self) -> None:
        if self.trainer.started():
            self.ui.info("  the trainer was already started: following it")
            return
        self.trainer.wait_prepared(PREPARE_DEADLINE_S)
        self._phase("start", "starting the trainer (detached: it survives the launcher)")
        self.registry.update(self.id, events_offset=0)
        self.trainer.start(self._code_path())
        if self.spec.watchdog_s:
            self.trainer.arm_watchdog(self.spec.watchdog_s)
            self.ui.info(f"  watchdog armed: the pod ends itself {self.spec.watchdog_s // 60} min after the job "
                         "ends unfollowed")

    def _code_path(self) -> str:
        """The trainer's code blob on the machine (recorded at upload: a resumed launcher finds it)."""
        if not self.code_path:
            sha = self.registry.get(self.id).code_sha256
            assert self.pod is not None and sha is not None
            self.code_path = f"{self.pod.root}/blobs/{sha}"
        return self.code_path

    def follow(self) -> None:
        from launcher.checkpoints import CheckpointMirror, state_dir

        assert self.backend is not None and self.pod is not None
        self._phase("follow", "training")
        if not self.backend.shares_filesystem and self.mirror is None:
            backend, pod, keys = self.backend, self.pod, self.keys
            self.mirror = CheckpointMirror(lambda: backend.executor(pod, keys), self.jobdir,
                                           self.settings.rtrain_home(), self.id, s3_url=self.spec.s3,
                                           on_copied=self._checkpoint_copied)
        follower = Follower(self.id, self.trainer, self.registry, self.ui, self.settings, self._code_path(),
                            poll_s=self.poll_s, events_copy=state_dir(self.settings.rtrain_home(), self.id),
                            on_checkpoint=self.mirror.offer if self.mirror is not None else None)
        try:
            follower.follow()
        finally:
            reconnects = getattr(self.ex, "reconnects", 0)
            if reconnects:
                self.registry.add_event(self.id, "reconnect", f"the connection dropped; re-opened {reconnects} times")

    def _checkpoint_copied(self, step: int, size: int) -> None:
        """Heard in the mirror's thread: it writes through a connection of its own (SQLite's are per thread)."""
        registry = Registry(self.registry.path)
        try:
            registry.add_event(self.id, "checkpoint.copied",
                               f"checkpoint of step {step} copied off the machine ({size / 1e6:.1f} MB, verified)",
                               {"step": step, "bytes": size})
        finally:
            registry.close()

    def download(self) -> None:
        assert self.ex is not None
        final = Path(self.rec.output_dir or "")
        self._phase("download", f"downloading the outputs into {final}")
        files = download_outputs(self.ex, f"{self.jobdir}/{OUTPUT}", final, logs=(self.jobdir, [EVENTS, LOG]))
        adapter = final / "adapter"
        self.registry.update(self.id, adapter_dir=str(adapter) if adapter.is_dir() else None)
        self.ui.info(f"  {len(files)} files verified against manifest.json")

    def push(self) -> None:
        """With --s3: the verified outputs to s3://bucket/prefix/<job-id>/."""
        if not self.spec.s3:
            return
        import json

        from launcher.s3 import push_folder

        url = f"{self.spec.s3.rstrip('/')}/{self.id}"
        self._phase("push", f"pushing the outputs to {url}")
        final = Path(self.rec.output_dir or "")
        manifest = json.loads((final / "manifest.json").read_text())["files"]
        keys = push_folder(final, url, manifest)
        self.ui.info(f"  {len(keys)} files in {url}, sizes and sha256 checked")
        self.registry.add_event(self.id, "push", f"{len(keys)} files pushed to {url}", {"url": url})

    def save_logs(self) -> None:
        """After a failure, keep the trainer's logs (never a partial adapter) for `rtrain logs`: within
        SAVE_LOGS_S, and not at all when the provider says the machine is gone."""
        import threading

        assert self.ex is not None
        if self.backend is not None and not self.backend.shares_filesystem and self.pod is not None:
            try:
                current = get_backend(self.backend.name, self.settings, quick=True).get(self.pod.id)
            except ProviderError:
                current = None
            if current is None or current.status in ("exited", "lost", "terminated"):
                self.registry.add_event(self.id, "logs", "logs not saved: the machine is gone")
                return
        ex, final = self.ex, Path(self.rec.output_dir or "")

        def fetch() -> None:
            try:
                fetch_logs(ex, self.jobdir, final / "logs", [EVENTS, LOG])
            except Exception:  # best effort: the job has already failed for a reason worth reporting
                pass

        thread = threading.Thread(target=fetch, name="save-logs", daemon=True)
        thread.start()
        thread.join(SAVE_LOGS_S)

    def teardown(self, status: str, error: str | None) -> None:
        rec = self.registry.get(self.id)
        pod_id = self.pod.id if self.pod is not None else rec.pod_id
        ended_in = "done" if status == "succeeded" else rec.phase  # where a failed job stopped, for `rtrain ls`
        leaving_up = status == "detached" or self.keep_pod
        # every signal is held (self.guard.stop()) until this has run
        if self.backend is not None and not leaving_up:
            if pod_id is not None:
                self._phase("teardown", f"terminating {self.machine_word} {pod_id}")
            try:
                if pod_id is not None:
                    terminate_with_retries(self.backend, pod_id)
                self.backend.release(self.id)  # what it keeps for the job besides the machine
                delete_job_keys(self.settings.rtrain_home(), self.id)  # they open nothing any more
            except Exception as exc:
                what = f"machine {pod_id}" if pod_id else f"what {self.backend.title} keeps for the job"
                self.registry.update(self.id, status=LEAK_RISK, phase=ended_in, finished_at=time.time(),
                                     error=f"{what} may still be there: {exc}")
                self.ui.error(f"could not end {what} on {self.backend.title}: {exc}")
                self.ui.error(f"it may still be billing: end it with `rtrain down {self.id}`")
                raise ProviderError(f"{what} may still be running; run `rtrain down {self.id}`") from exc
        if leaving_up and pod_id is not None:
            why = "--detach" if status == "detached" else "--keep-pod"
            self.ui.warn(f"machine {pod_id} left running ({why}); come back with `rtrain resume {self.id}`, "
                         f"end it with `rtrain down {self.id}`")
        self._finish(status, error, ended_in)

    def _finish(self, status: str, error: str | None, phase: str) -> None:
        rec = self.registry.get(self.id)
        now = time.time()
        cost = None
        if rec.price_per_hr is not None and rec.started_at is not None:
            cost = round(rec.prior_cost_usd + rec.price_per_hr * (now - rec.started_at) / 3600, 4)
        if status == "succeeded":  # the outputs are home: checkpoints and events kept for a recovery are not needed
            import shutil

            shutil.rmtree(self.settings.rtrain_home() / "jobs" / self.id, ignore_errors=True)
        if status == "detached":
            self.registry.update(self.id, status="running", error=None)
            self.registry.add_event(self.id, "detached", "launcher detached; the trainer runs on")
            return
        self.registry.update(self.id, status=status, phase=phase, error=error, cost_usd=cost, finished_at=now)
        self.registry.add_event(self.id, "finished", error or status)


def owning_job(registry: Registry, pod_id: str, exclude: str | None = None) -> JobRecord:
    """The job that created ``pod_id`` (its keys open the pod)."""
    owners = [j for j in registry.jobs() if j.pod_id == pod_id and j.id != exclude and not j.spec_dict.get("reuse_pod")]
    if not owners:
        raise UsageError(f"--pod {pod_id}: no job of this machine created that pod (rtrain ls shows them)")
    return owners[-1]
