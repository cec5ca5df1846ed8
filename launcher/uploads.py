"""The upload step: the job's datasets and the trainer's code as verified blobs (with a hash cache),
a local model folder rebuilt on the machine from blobs, ``job.json`` (the trainer's config, derived
from the JobSpec), and the secrets the trainer needs in a 0600 file (never on a command line)."""

from __future__ import annotations

import contextlib
import io
import json
import shlex
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from launcher.config import JobSpec, Settings
from launcher.errors import ProviderError
from launcher.executor.base import Executor
from launcher.remote_trainer import JOB_JSON, OUTPUT, SECRETS
from launcher.s3 import aws_env, is_s3
from launcher.state import Registry
from launcher.transfer import Upload, send_blobs
from launcher.ui import Reporter
from remote.outputs import sha256_file

q = shlex.quote
#: Files up to this size are hashed before the upload even without a cached hash (new big ones are
#: hashed while they stream).
SMALL = 8 << 20
#: JobSpec keys that stay on the launcher's side (everything else is the trainer's TrainConfig)
LAUNCHER_ONLY = {"backend", "gpu", "gpu_count", "template", "name", "output_dir", "watchdog_s", "reuse_pod", "s3",
                 "region", "spot", "max_recoveries"}


def upload_job(ex: Executor, registry: Registry, ui: Reporter, job_id: str, spec: JobSpec, settings: Settings,
               jobdir: str, root: str, *, shares_filesystem: bool) -> Upload:
    """Everything the trainer needs on the machine; returns the trainer code's blob."""
    blobs = f"{root}/blobs"
    made = ex.run(f"mkdir -p {q(jobdir)}")
    if not made.ok:
        raise ProviderError(f"cannot create {jobdir} on the machine: {made.stderr.strip()}")
    from launcher.bundle import build_code_zip

    data = [*spec.datasets, *spec.eval_datasets]
    local = [p for p in data if not is_s3(p)]  # s3:// datasets are fetched by the trainer itself
    with tempfile.TemporaryDirectory() as tmp:
        files = [(Path(p), Path(p).name) for p in local]
        files.append((build_code_zip(Path(tmp) / "remote.zip"), "trainer code"))
        *uploaded, code = upload_files(ex, registry, ui, job_id, files, blobs)
    on_machine = dict(zip(local, (u.path for u in uploaded), strict=True))
    remote = [on_machine.get(p, p) for p in data]
    n = len(spec.datasets)
    job = trainer_config(spec, job_id, remote[:n], remote[n:])

    def machine_folder(folder: Path, name: str) -> str:
        """A local folder (model, adapter) as the trainer sees it: in place on this machine, else rebuilt
        on the machine from verified blobs."""
        if shares_filesystem:
            return str(folder)
        return upload_model_folder(ex, registry, ui, job_id, folder, blobs, f"{jobdir}/{name}")

    if spec.from_adapter:
        job["from_adapter"] = machine_folder(Path(spec.from_adapter), "adapter_in")
    folder = local_model_folder(spec, settings)
    if folder is not None:
        job["model"] = machine_folder(folder, "model")
        job["model_name"] = str(folder)  # the adapter names the base where this machine has it
    write_remote_file(ex, f"{jobdir}/{JOB_JSON}", json.dumps(job, indent=2).encode())
    secrets = {}
    if settings.hf_token and settings.hf_token.get_secret_value():
        secrets["HF_TOKEN"] = settings.hf_token.get_secret_value()
    if any(is_s3(p) for p in data):
        secrets.update(aws_env())
    if secrets and not shares_filesystem:  # a local trainer inherits this environment
        lines = "".join(f"export {k}={q(v)}\n" for k, v in secrets.items())
        write_remote_file(ex, f"{jobdir}/{SECRETS}", lines.encode(), private=True)
    return code


def trainer_config(spec: JobSpec, job_id: str, datasets: list[str], eval_datasets: list[str]) -> dict[str, Any]:
    """The trainer's job.json (remote/jobconfig.py TrainConfig) for a JobSpec, datasets as the machine
    names them, each mapped back to the user's name for messages."""
    job = {k: v for k, v in spec.model_dump(mode="json").items() if k not in LAUNCHER_ONLY}
    job.update(job_id=job_id, datasets=datasets, eval_datasets=eval_datasets, output_dir=OUTPUT,
               model_name=spec.model,
               dataset_names=dict(zip(datasets + eval_datasets, spec.datasets + spec.eval_datasets, strict=True)))
    return job


def local_model_folder(spec: JobSpec, settings: Settings, say: Callable[[str], None] | None = None) -> Path | None:
    """The model as a folder on this machine (rtrain's tiny model, built on first use), if it is one."""
    if spec.is_tiny_model:
        from launcher.bundle import ensure_tiny_model

        return ensure_tiny_model(settings.rtrain_home(), settings.local_python, say=say)
    return Path(spec.model) if Path(spec.model).is_dir() else None


def upload_files(ex: Executor, registry: Registry, ui: Reporter, job_id: str, files: list[tuple[Path, str]],
                 blobs: str, quiet: bool = False) -> list[Upload]:
    """Files as content-addressed blobs in two round trips whatever their number (launcher/transfer.py):
    one probe (which the machine has, how much of the rest), one stream of what is missing.

    A file's sha256 comes from the hash cache (same path, size and mtime), else it is hashed here
    before the probe when that can spare the upload: a small file (costs nothing), or a file hashed
    before at this size (touched, perhaps not changed: 512 MiB hash in well under a second, where
    sending it again takes minutes on a real link). A new large file is hashed while it streams."""
    known: list[str | None] = []
    for local, _ in files:
        sha = registry.cached_sha256(local)
        if sha is None and (local.stat().st_size <= SMALL or registry.hashed_before(local)):
            sha = sha256_file(local)
        known.append(sha)
    sizes = [local.stat().st_size for local, _ in files]
    label = files[0][1] if len(files) == 1 else f"{len(files)} files"
    with contextlib.ExitStack() as bars:
        uploads = send_blobs(ex, blobs, [(local, sha) for (local, _), sha in zip(files, known, strict=True)],
                             announce=lambda total: bars.enter_context(ui.transfer(f"upload {label}", total)))
    for (local, what), size, up in zip(files, sizes, uploads, strict=True):
        registry.remember_sha256(local, up.sha256)
        if up.sent:
            state = f"uploaded {up.sent / 1e6:.2f} MB, sha256 verified on the machine"
        else:
            state = "already on the machine (0 bytes sent)"
        if up.retried:
            state += " (after a retry: a copy did not verify or the connection dropped)"
        if not quiet:
            ui.info(f"  {what}: {state} ({up.sha256[:12]})")
        registry.add_event(job_id, "upload", f"{what}: {state}",
                           {"sha256": up.sha256, "bytes": up.sent, "size": size, "retried": up.retried})
    return uploads


def upload_model_folder(ex: Executor, registry: Registry, ui: Reporter, job_id: str, folder: Path, blobs: str,
                        dest: str) -> str:
    """Every file of a local model folder as a blob, then ``dest`` rebuilt on the machine from links
    to them (transformers follows links): a model shared by several jobs is sent once."""
    files = sorted(p for p in folder.rglob("*") if p.is_file())
    labelled = [(p, f"model/{p.relative_to(folder).as_posix()}") for p in files]
    uploads = upload_files(ex, registry, ui, job_id, labelled, blobs, quiet=True)
    sent = sum(up.sent for up in uploads)
    total = sum(p.stat().st_size for p in files)
    commands = [f"rm -rf {q(dest)}", f"mkdir -p {q(dest)}"]
    for path, up in zip(files, uploads, strict=True):
        rel = path.relative_to(folder).as_posix()
        target = f"{dest}/{rel}"
        if "/" in rel:
            commands.append(f"mkdir -p {q(target.rsplit('/', 1)[0])}")
        commands.append(f"ln -sfn {q(up.path)} {q(target)}")
    made = ex.run(" && ".join(commands))
    if not made.ok:
        raise ProviderError(f"cannot assemble the model folder on the machine: {made.stderr.strip()}")
    ui.info(f"  {dest.rsplit('/', 1)[-1]} {folder.name}: {len(files)} files, {total / 1e6:.2f} MB "
            f"({sent / 1e6:.2f} MB sent, the rest already there), sha256 verified")
    return dest


def write_remote_file(ex: Executor, path: str, data: bytes, private: bool = False) -> None:
    """Write ``data`` to ``path`` atomically, through stdin (a secret never shows in a command line)."""
    umask = "umask 077 && " if private else ""
    result = ex.run_stdin(f"{umask}cat > {q(path)}.part && mv {q(path)}.part {q(path)}", io.BytesIO(data))
    if not result.ok:
        raise ProviderError(f"cannot write {path} on the machine: {result.stderr.strip()}")
