"""The upload step's pieces: files as verified blobs (with a hash cache), a model folder rebuilt on
the machine from blobs, ``job.json``, and secrets the trainer needs (never on a command line)."""

from __future__ import annotations

import io
import shlex
from pathlib import Path

from launcher.errors import ProviderError
from launcher.executor.base import Executor
from launcher.state import Registry
from launcher.transfer import Upload, part_name, probe_blobs, upload_blob
from launcher.ui import Reporter
from remote.outputs import sha256_file

q = shlex.quote
#: Files up to this size are hashed before the upload even without a cached hash (big ones are
#: hashed while they stream: one pass).
SMALL = 8 << 20


def upload_files(ex: Executor, registry: Registry, ui: Reporter, job_id: str, files: list[tuple[Path, str]],
                 blobs: str, quiet: bool = False) -> list[Upload]:
    """Files as content-addressed blobs, in as few round trips as the content allows: one probe for
    all of them (which the machine has, how much of the rest it has), then one stream and one
    verify-and-rename each for what is missing. Hashes are cached, so an unchanged file is never
    hashed or sent twice."""
    known: list[str | None] = []
    for local, _ in files:
        sha = registry.cached_sha256(local)
        if sha is None and local.stat().st_size <= SMALL:
            sha = sha256_file(local)  # costs nothing at this size, and lets a blob already there be skipped
        known.append(sha)
    found = probe_blobs(ex, blobs, [(sha, part_name(local, blobs, sha)) for (local, _), sha in zip(files, known,
                                                                                                   strict=True)])
    uploads = []
    for (local, what), sha, offset in zip(files, known, found, strict=True):
        size = local.stat().st_size
        if offset is None:
            up = Upload(f"{blobs}/{sha}", str(sha), 0)
        else:
            with ui.transfer(f"upload {what}", size) as progress:
                up = upload_blob(ex, local, blobs, known_sha256=sha, progress=progress, resume_from=offset)
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
        uploads.append(up)
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
