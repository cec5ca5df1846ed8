"""The job lifecycle: ``validate -> provision -> wait_ssh -> upload -> start -> follow -> download -> teardown``.

One method per step, each transition written to the registry before the step runs, the same code for
every backend (the local one included). ``teardown`` runs in ``finally``: a pod is never left behind
unless the user asked for it (``--keep-pod``, ``--detach``), and if terminating fails the user is told
exactly how to finish it.
"""

from __future__ import annotations

import json
import shlex
import tempfile
import time
from pathlib import Path
from typing import Any

from launcher.backends import get_backend
from launcher.backends.base import Backend, Pod, PodRequest
from launcher.bundle import build_code_zip, ensure_tiny_model
from launcher.config import JobSpec, Settings
from launcher.errors import Interrupted, ProviderError, RtrainError, TrainingError, UsageError
from launcher.events import EventStream
from launcher.executor.base import Executor
from launcher.keys import JobKeys, create_job_keys, delete_job_keys, load_job_keys
from launcher.plan import Plan
from launcher.remote_trainer import EVENTS, JOB_JSON, LOG, OUTPUT, SECRETS, RemoteTrainer
from launcher.s3 import aws_env, is_s3
from launcher.state import JobRecord, Registry
from launcher.teardown import signals_deferred, terminate_with_retries
from launcher.transfer import download_outputs, fetch_tree
from launcher.ui import Reporter
from launcher.uploads import upload_files, upload_model_folder, write_remote_file

q = shlex.quote

#: The exit status bash reports for a trainer killed by SIGKILL (the OOM killer, a pod restart).
KILLED = 137

#: Trainer spec keys that stay on the launcher's side.
LAUNCHER_ONLY = {"backend", "gpu", "gpu_count", "template", "name", "output_dir", "watchdog_s", "reuse_pod", "s3"}


def create_job(plan: Plan, registry: Registry) -> JobRecord:
    """The job row, written before anything is asked of a provider (a crash later is findable)."""
    spec = plan.spec
    return registry.create_job(
        plan.job_id, name=spec.name, backend=spec.backend, spec=spec.model_dump(mode="json"),
        workdir=None, output_dir=str(plan.output_dir), pod_name=f"rtrain-{plan.job_id}",
    )


class Lifecycle:
    def __init__(self, job_id: str, settings: Settings, registry: Registry, reporter: Reporter, *,
                 keep_pod: bool = False, detach: bool = False, poll_s: float = 0.5) -> None:
        self.settings, self.registry, self.ui = settings, registry, reporter
        self.rec = registry.get(job_id)
        self.id = self.rec.id
        self.spec = JobSpec.model_validate(self.rec.spec_dict)
        self.backend: Backend = get_backend(self.rec.backend, settings)
        self.keep_pod, self.detach, self.poll_s = keep_pod, detach, poll_s
        self.pod: Pod | None = None
        self.ex: Executor | None = None
        self.keys: JobKeys | None = None
        self.code_path = ""
        self.last_event: dict[str, Any] = {}

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
        """Provision (or, resuming, wherever the registry says) through teardown. Raises the RtrainError
        that ended the job, after teardown."""
        status, error = "failed", None
        try:
            for step in self.resume_steps() if resume else self.all_steps():
                step()
                if step == self.start and self.detach:
                    status = "detached"
                    return self.registry.get(self.id)
            status = "succeeded"
        except KeyboardInterrupt:
            status, error = "interrupted", "interrupted by the user"
            raise Interrupted("interrupted: the pod was terminated") from None
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
            if status in ("failed", "interrupted") and self.ex is not None:
                self.save_logs()
            self.teardown(status, error)
        return self.registry.get(self.id)

    def all_steps(self) -> list[Any]:
        return [self.provision, self.wait_ssh, self.upload, self.start, self.follow, self.download, self.push]

    def resume_steps(self) -> list[Any]:
        """What is left of a job whose launcher died, from the phase the registry recorded."""
        phase = self.rec.phase
        self.keys = load_job_keys(self.settings.rtrain_home(), self.id)
        if self.rec.pod_id:
            self.pod = self.backend.get(self.rec.pod_id)
        else:  # the launcher died between the create call and recording its answer: find the pod by name
            self.pod = next((p for p in self.backend.list() if p.name == self.rec.pod_name), None)
            if self.pod is not None:
                self.registry.update(self.id, pod_id=self.pod.id, price_per_hr=self.pod.price_per_hr,
                                     started_at=self.rec.created_at)
        if self.pod is None:
            if phase in ("validate", "provision"):
                return self.all_steps()
            raise ProviderError(f"pod {self.rec.pod_id} of job {self.id} is gone: nothing to resume")
        self.ui.price_per_hr = self.pod.price_per_hr
        if phase == "teardown":
            return []
        if phase == "push":
            return [self.push]
        if phase == "download":
            return [self.wait_ssh, self.download, self.push]
        if phase == "follow":
            return [self.wait_ssh, self.follow, self.download, self.push]
        return [self.wait_ssh, self.upload, self.start, self.follow, self.download, self.push]

    # the steps --------------------------------------------------------------------------------

    def provision(self) -> None:
        if self.spec.reuse_pod:
            return self.reuse_pod(self.spec.reuse_pod)
        self._phase("provision", f"provisioning a {self.backend.name} machine for job {self.id}")
        request = PodRequest(job_id=self.id, name=self.rec.pod_name or f"rtrain-{self.id}",
                             gpus=self.spec.gpu, gpu_count=self.spec.gpu_count)
        if self.backend.uses_ssh:
            self.keys = create_job_keys(self.settings.rtrain_home(), self.id)
            request.public_key, request.host_private_key = self.keys.client_public, self.keys.host_private
        started = time.time()
        self.pod = self.backend.create(request)
        self.registry.update(self.id, pod_id=self.pod.id, price_per_hr=self.pod.price_per_hr,
                             workdir=self.jobdir, started_at=started)
        self.ui.price_per_hr = self.pod.price_per_hr
        self.ui.expect_gpu = self.backend.name != "local"
        if self.backend.name != "local":
            gpu = self.pod.extra.get("gpu") or ",".join(self.spec.gpu)
            self.ui.info(f"  pod {self.pod.id} created: {gpu} x{self.spec.gpu_count}, ${self.pod.price_per_hr:.2f}/hr")

    def reuse_pod(self, pod_id: str) -> None:
        """Run on a pod an earlier job kept (--keep-pod), with that job's keys; leave it running after."""
        owner = owning_job(self.registry, pod_id, exclude=self.id)
        self._phase("provision", f"reusing pod {pod_id} (kept by job {owner.id})")
        self.keys = load_job_keys(self.settings.rtrain_home(), owner.id)
        pod = self.backend.get(pod_id)
        if pod is None or self.keys is None:
            raise ProviderError(f"pod {pod_id} is gone (or its keys are): it cannot be reused")
        self.pod = pod
        self.keep_pod = True
        self.registry.update(self.id, pod_id=pod.id, price_per_hr=pod.price_per_hr, workdir=self.jobdir,
                             started_at=time.time())
        self.ui.price_per_hr = pod.price_per_hr

    def wait_ssh(self) -> None:
        assert self.pod is not None
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

    def upload(self) -> None:
        assert self.pod is not None and self.ex is not None
        self._phase("upload", "uploading the dataset, the trainer and the job")
        blobs = f"{self.pod.root}/blobs"
        mk = self.ex.run(f"mkdir -p {q(self.jobdir)}")
        if not mk.ok:
            raise ProviderError(f"cannot create {self.jobdir} on the machine: {mk.stderr.strip()}")
        data = [*self.spec.datasets, *self.spec.eval_datasets]
        local = [p for p in data if not is_s3(p)]  # s3:// datasets are fetched by the trainer itself
        with tempfile.TemporaryDirectory() as tmp:
            files = [(Path(p), Path(p).name) for p in local]
            files.append((build_code_zip(Path(tmp) / "remote.zip"), "trainer code"))
            *uploaded, code = upload_files(self.ex, self.registry, self.ui, self.id, files, blobs)
        self.code_path = code.path
        on_machine = dict(zip(local, (u.path for u in uploaded), strict=True))
        remote = [on_machine.get(p, p) for p in data]
        n = len(self.spec.datasets)
        job = self.trainer_config(remote[:n], remote[n:], blobs)
        write_remote_file(self.ex, f"{self.jobdir}/{JOB_JSON}", json.dumps(job, indent=2).encode())
        secrets = {}
        if self.settings.hf_token and self.settings.hf_token.get_secret_value():
            secrets["HF_TOKEN"] = self.settings.hf_token.get_secret_value()
        if any(is_s3(p) for p in data):
            secrets.update(aws_env())
        if secrets and not self.backend.shares_filesystem:  # a local trainer inherits this environment
            lines = "".join(f"export {k}={q(v)}\n" for k, v in secrets.items())
            write_remote_file(self.ex, f"{self.jobdir}/{SECRETS}", lines.encode(), private=True)
        self.registry.update(self.id, workdir=self.jobdir)

    def trainer_config(self, datasets: list[str], eval_datasets: list[str], blobs: str) -> dict[str, Any]:
        job = {k: v for k, v in self.spec.model_dump(mode="json").items() if k not in LAUNCHER_ONLY}
        job.update(job_id=self.id, datasets=datasets, eval_datasets=eval_datasets, output_dir=OUTPUT,
                   model_name=self.spec.model,
                   dataset_names=dict(zip(datasets + eval_datasets, self.spec.datasets + self.spec.eval_datasets,
                                          strict=True)))
        if self.spec.from_adapter:
            job["from_adapter"] = self._machine_folder(Path(self.spec.from_adapter), blobs, "adapter_in")
        folder = None
        if self.spec.is_tiny_model:
            folder = ensure_tiny_model(self.settings.rtrain_home(), self.settings.local_python)
        elif Path(self.spec.model).is_dir():
            folder = Path(self.spec.model)
        if folder is not None:
            job["model"] = self._machine_folder(folder, blobs, "model")
            job["model_name"] = str(folder)  # the adapter names the base where this machine has it
        return job

    def _machine_folder(self, folder: Path, blobs: str, name: str) -> str:
        """A local folder (model, adapter) as the trainer will see it: in place on this machine, else
        rebuilt on the pod from verified blobs."""
        if self.backend.shares_filesystem:
            return str(folder)
        assert self.ex is not None
        return upload_model_folder(self.ex, self.registry, self.ui, self.id, folder, blobs, f"{self.jobdir}/{name}")

    @property
    def trainer(self) -> RemoteTrainer:
        assert self.ex is not None
        return RemoteTrainer(self.ex, self.jobdir)

    def start(self) -> None:
        if self.trainer.started():
            self.ui.info("  the trainer was already started: following it")
            return
        self._phase("start", "starting the trainer (detached: it survives the launcher)")
        self.registry.update(self.id, events_offset=0, log_offset=0)
        self.trainer.start(self.code_path)
        if self.spec.watchdog_s:
            self.trainer.arm_watchdog(self.spec.watchdog_s)
            self.ui.info(f"  watchdog armed: the pod ends itself {self.spec.watchdog_s // 60} min after the job "
                         "ends unfollowed")

    def follow(self) -> None:
        self._phase("follow", "training")
        stream = EventStream(offset=self.registry.get(self.id).events_offset)
        dead_seen, restarts, delay = 0, 0, 0.1
        while True:
            before = stream.offset
            status, data = self.trainer.probe(stream.offset)
            for event in stream.feed(data):
                self._on_event(event)
            consumed = stream.offset - before
            if consumed:
                self.registry.update(self.id, events_offset=stream.offset, steps=self.last_event.get("steps_done"))
                delay = 0.1
            elif status.exit_code is not None:  # ended, and every complete line is read (a torn one is dropped)
                if status.exit_code != KILLED or not self._restart(restarts):
                    break
                restarts += 1
                continue
            dead_seen = dead_seen + 1 if status.state == "DEAD" else 0
            if dead_seen >= 2:  # twice in a row: the exit_code file is written right after the trainer ends
                if not self._restart(restarts):
                    raise TrainingError("the trainer died without an exit code (killed? out of memory?); "
                                        f"see `rtrain logs {self.id}`")
                restarts, dead_seen = restarts + 1, 0
            if not consumed:
                time.sleep(delay)
                delay = min(self.poll_s, delay * 2)
        self.ui.stop_progress()
        reconnects = getattr(self.ex, "reconnects", 0)
        if reconnects:
            self.registry.add_event(self.id, "reconnect", f"the connection dropped; re-opened {reconnects} times")
        self._check_exit(status.exit_code)

    def _restart(self, restarts: int) -> bool:
        """Start a killed trainer again from its newest checkpoint, if it has one and may restart."""
        checkpoint = self.trainer.newest_checkpoint()
        if checkpoint is None or restarts >= self.settings.max_restarts:
            return False
        if not self.code_path:  # resumed by a new launcher: the trainer's code blob is in the registry
            sha = next((e["data"]["sha256"] for e in reversed(self.registry.events(self.id))
                        if e["kind"] == "upload" and e["message"].startswith("trainer code")), None)
            assert self.pod is not None and sha is not None
            self.code_path = f"{self.pod.root}/blobs/{sha}"
        self.ui.stop_progress()
        self.ui.warn(f"the trainer was killed: restarting it from {checkpoint}")
        self.registry.add_event(self.id, "restart", f"trainer killed; restarted from {checkpoint}")
        self.trainer.start(self.code_path, restart=True)
        return True

    def _on_event(self, event: dict[str, Any]) -> None:
        self.ui.training_event(event)
        kind = event["event"]
        if kind == "step":
            self.last_event["steps_done"] = event.get("step")
            self.last_event["loss"] = event.get("loss")
        elif kind in ("start", "done", "error", "checkpoint"):
            self.last_event[kind] = event
            data = {k: v for k, v in event.items() if k not in ("event", "ts")}
            self.registry.add_event(self.id, f"trainer.{kind}", str(event.get("message", kind)), data)

    def _check_exit(self, code: int | None) -> None:
        if code == 0 and "done" in self.last_event:
            done = self.last_event["done"]
            self.registry.update(self.id, steps=done.get("steps"), final_loss=done.get("final_loss"))
            return
        err = self.last_event.get("error", {})
        if code == 130:
            raise Interrupted("the trainer was interrupted")
        message = err.get("message") or f"the trainer exited with code {code}"
        if code == 2:  # the job or its data, found wanting where the tokenizer is (before any weights)
            raise UsageError(f"the trainer refused the job: {message}")
        self.show_log_tail()
        raise TrainingError(f"training failed: {message}")

    def show_log_tail(self) -> None:
        lines = self.trainer.log_tail()
        if lines:
            self.ui.info(f"last lines of {LOG}:")
            for line in lines:
                self.ui.info(f"  | {line}")

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
        from launcher.s3 import push_folder

        url = f"{self.spec.s3.rstrip('/')}/{self.id}"
        self._phase("push", f"pushing the outputs to {url}")
        final = Path(self.rec.output_dir or "")
        manifest = json.loads((final / "manifest.json").read_text())["files"]
        keys = push_folder(final, url, manifest)
        self.ui.info(f"  {len(keys)} files in {url}, sizes and sha256 checked")
        self.registry.add_event(self.id, "push", f"{len(keys)} files pushed to {url}", {"url": url})

    def save_logs(self) -> None:
        """After a failure, keep the trainer's logs (never a partial adapter) for `rtrain logs`."""
        assert self.ex is not None
        try:
            final = Path(self.rec.output_dir or "")
            fetch_tree(self.ex, self.jobdir, final / "logs", names=[EVENTS, LOG])
        except Exception:  # best effort: the job has already failed for a reason worth reporting
            pass

    def teardown(self, status: str, error: str | None) -> None:
        rec = self.registry.get(self.id)
        pod_id = self.pod.id if self.pod is not None else rec.pod_id
        ended_in = "done" if status == "succeeded" else rec.phase  # where a failed job stopped, for `rtrain ls`
        leaving_up = status == "detached" or self.keep_pod
        with signals_deferred():
            if pod_id is not None and not leaving_up:
                self._phase("teardown", f"terminating {pod_id}")
                try:
                    terminate_with_retries(self.backend, pod_id)
                    delete_job_keys(self.settings.rtrain_home(), self.id)  # they open nothing any more
                except Exception as exc:
                    self.registry.update(self.id, status="failed", phase=ended_in, finished_at=time.time(),
                                         error=f"LEAK RISK: pod {pod_id} may still be running: {exc}")
                    self.ui.error(f"could not terminate pod {pod_id}: {exc}")
                    self.ui.error(f"it may still be billing: end it with `rtrain down {self.id}`")
                    raise ProviderError(f"pod {pod_id} may still be running; run `rtrain down {self.id}`") from exc
            if leaving_up and pod_id is not None:
                why = "--detach" if status == "detached" else "--keep-pod"
                self.ui.warn(f"pod {pod_id} left running ({why}); come back with `rtrain resume {self.id}`, "
                             f"end it with `rtrain down {self.id}`")
            self._finish(status, error, ended_in)

    def _finish(self, status: str, error: str | None, phase: str) -> None:
        rec = self.registry.get(self.id)
        now = time.time()
        cost = None
        if rec.price_per_hr is not None and rec.started_at is not None:
            cost = round(rec.price_per_hr * (now - rec.started_at) / 3600, 4)
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
