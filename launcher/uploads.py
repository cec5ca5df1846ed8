"""The upload step's pieces: files as verified blobs (with a hash cache), a model folder rebuilt on
the machine from blobs, ``job.json``, and secrets the trainer needs (never on a command line)."""

from __future__ import annotations

import io
import shlex
from pathlib import Path

from launcher.errors import ProviderError
from launcher.executor.base import Executor
from launcher.state import Registry
from launcher.transfer import Upload, upload_blob
from launcher.ui import Reporter
from remote.outputs import sha256_file

q = shlex.quote
#: Files up to this size are hashed before the upload even without a cached hash (big ones are
#: hashed while they stream: one pass).
SMALL = 8 << 20


def upload_file(ex: Executor, registry: Registry, ui: Reporter, job_id: str, local: Path, blobs: str,
                label: str | None = None, quiet: bool = False) -> Upload:
    """One file as a content-addressed blob; the sha256 is cached so an unchanged file is never
    hashed or sent twice."""
    size = local.stat().st_size
    what = label or local.name
    known = registry.cached_sha256(local)
    if known is None and size <= SMALL:
        known = sha256_file(local)  # costs nothing at this size, and lets a blob already there be skipped
    with ui.transfer(f"upload {what}", size) as progress:
        up = upload_blob(ex, local, blobs, known_sha256=known, progress=progress)
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
    return up


def upload_model_folder(ex: Executor, registry: Registry, ui: Reporter, job_id: str, folder: Path, blobs: str,
                        dest: str) -> str:
    """Every file of a local model folder as a blob, then ``dest`` rebuilt on the machine from links
    to them (transformers follows links): a model shared by several jobs is sent once."""
    files = sorted(p for p in folder.rglob("*") if p.is_file())
    sent = total = 0
    commands = [f"rm -rf {q(dest)}", f"mkdir -p {q(dest)}"]
    for path in files:
        rel = path.relative_to(folder).as_posix()
        up = upload_file(ex, registry, ui, job_id, path, blobs, label=f"model/{rel}", quiet=True)
        sent += up.sent
        total += path.stat().st_size
        target = f"{dest}/{rel}"
        if "/" in rel:
            commands.append(f"mkdir -p {q(target.rsplit('/', 1)[0])}")
        commands.append(f"ln -sfn {q(up.path)} {q(target)}")
    made = ex.run(" && ".join(commands))
    if not made.ok:
        raise ProviderError(f"cannot assemble the model folder on the machine: {made.stderr.strip()}")
    ui.info(f"  model {folder.name}: {len(files)} files, {total / 1e6:.2f} MB "
            f"({sent / 1e6:.2f} MB sent, the rest already there), sha256 verified")
    return dest


def write_remote_file(ex: Executor, path: str, data: bytes, private: bool = False) -> None:
    """Write ``data`` to ``path`` atomically, through stdin (a secret never shows in a command line)."""
    umask = "umask 077 && " if private else ""
    result = ex.run_stdin(f"{umask}cat > {q(path)}.part && mv {q(path)}.part {q(path)}", io.BytesIO(data))
    if not result.ok:
        raise ProviderError(f"cannot write {path} on the machine: {result.stderr.strip()}")
