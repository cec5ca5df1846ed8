"""Bringing files back from the job's machine, trusting nothing it sends.

- ``fetch_tree``: a folder (or some files in it) as one tar stream, spooled with a cap on its size,
  then extracted safely: no absolute paths, no ``..``, no links or devices, no empty names, no member
  that collides with another, at most ``MAX_MEMBERS`` members. A stream that is not a tar, or is cut
  short, is a ProviderError (exit 3), never an internal error.
- ``verify_manifest``: every file against the trainer's ``manifest.json``, whose paths must stay
  inside the folder; a manifest that is not JSON, or lacks ``files``, is refused.
- ``download_outputs``: the outputs into a hidden staging folder, verified, then the logs added by the
  launcher (each at most ``LOG_CAP`` bytes: the tail, and listed in ``logs/manifest.json``), then one
  rename: nothing half-written is ever left where the outputs are expected.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import tarfile
import tempfile
from pathlib import Path, PurePosixPath
from typing import Any, BinaryIO

from launcher.errors import ProviderError, TrainingError
from launcher.executor.base import Executor, Progress
from remote.outputs import MANIFEST, sha256_file

q = shlex.quote

#: at most this many members in one stream from the machine
MAX_MEMBERS = 20_000
#: at most this many bytes in one stream (a merged 70B model in bf16 is about 141 GB)
MAX_BYTES = 1 << 40
#: the most of each log file the launcher keeps (its tail)
LOG_CAP = 64 << 20
#: added by the launcher beside the trainer's outputs, after they are verified (the trainer's stream
#: may not hold it)
LAUNCHER_ADDED = "logs"
SHA256 = re.compile(r"^[0-9a-f]{64}$")


class _CappedWriter:
    """A spool that refuses more than ``cap`` bytes (a machine cannot fill the laptop's disk)."""

    def __init__(self, fh: BinaryIO, cap: int, source: str) -> None:
        self.fh, self.cap, self.source, self.size = fh, cap, source, 0

    def write(self, data: bytes) -> int:
        self.size += len(data)
        if self.size > self.cap:
            raise ProviderError(f"refusing {self.source}: the machine sent more than {self.cap >> 30} GiB")
        return self.fh.write(data)

    def seekable(self) -> bool:
        return self.fh.seekable()

    def tell(self) -> int:
        return self.fh.tell()

    def seek(self, offset: int, whence: int = 0) -> int:
        self.size = offset
        return self.fh.seek(offset, whence)

    def truncate(self, size: int | None = None) -> int:
        return self.fh.truncate(size)


def _safe_members(tar: tarfile.TarFile, source: str) -> list[tarfile.TarInfo]:
    members, seen = [], {}
    for m in tar:
        if len(members) >= MAX_MEMBERS:
            raise ProviderError(f"refusing {source}: more than {MAX_MEMBERS} files")
        name = PurePosixPath(m.name)
        if not m.name.strip() or name.is_absolute() or ".." in name.parts:
            raise ProviderError(f"refusing {source}: archive member {m.name!r} points outside the folder")
        if not (m.isfile() or m.isdir()):
            raise ProviderError(f"refusing {source}: archive member {m.name!r} is a link or a device")
        key = name.as_posix()
        for parent in list(name.parents)[:-1]:  # a file cannot also be a folder of others
            if seen.get(parent.as_posix()) == "file":
                raise ProviderError(f"refusing {source}: archive member {m.name!r} is inside a file")
        if key in seen and (seen[key] == "file" or m.isfile()):
            raise ProviderError(f"refusing {source}: archive member {m.name!r} comes twice")
        seen[key] = "file" if m.isfile() else "dir"
        members.append(m)
    return members


def fetch_tree(ex: Executor, remote_dir: str, dest: Path, *, names: list[str] | None = None,
               progress: Progress | None = None) -> None:
    """Copy ``remote_dir`` (or just ``names`` in it) into the local folder ``dest`` as one tar stream,
    safely."""
    dest.mkdir(parents=True, exist_ok=True)
    what = " ".join(q(n) for n in names) if names else "."
    with tempfile.TemporaryFile(dir=dest.parent) as spool:
        capped = _CappedWriter(spool, MAX_BYTES, remote_dir)
        result = ex.run_stdout(f"tar -C {q(remote_dir)} -cf - {what}", capped, progress=progress)  # type: ignore[arg-type]
        if not result.ok:
            raise ProviderError(f"cannot read {remote_dir} on the machine: {result.stderr.strip()}")
        spool.seek(0)
        try:
            with tarfile.open(fileobj=spool, mode="r:") as tar:
                members = _safe_members(tar, remote_dir)
                if hasattr(tarfile, "data_filter"):
                    tar.extractall(dest, members=members, filter="data")
                else:  # Python < 3.10.12: the members are already checked above
                    tar.extractall(dest, members=members)
        except (tarfile.TarError, EOFError) as exc:
            raise ProviderError(f"refusing {remote_dir}: what the machine sent is not a whole tar archive "
                                f"({type(exc).__name__}: {exc})") from None
        except OSError as exc:
            raise ProviderError(f"refusing {remote_dir}: it cannot be unpacked here ({exc})") from None


def _manifest_files(folder: Path) -> dict[str, dict[str, Any]]:
    path = folder / MANIFEST
    if not path.is_file():
        raise TrainingError(f"{folder}: no manifest.json (the trainer did not finish writing its outputs)")
    try:
        files = json.loads(path.read_text(encoding="utf-8"))["files"]
        if not isinstance(files, dict):
            raise TypeError("files is not an object")
    except (ValueError, KeyError, TypeError) as exc:
        raise ProviderError(f"{path}: not a manifest rtrain can read ({type(exc).__name__}: {exc})") from None
    for rel, want in files.items():
        parts = PurePosixPath(rel)
        if not rel or parts.is_absolute() or ".." in parts.parts or parts.parts[0] in (LAUNCHER_ADDED, MANIFEST):
            raise ProviderError(f"{path}: lists {rel!r}, outside the outputs")
        if not isinstance(want, dict) or not isinstance(want.get("size"), int) or \
                not SHA256.match(str(want.get("sha256"))):
            raise ProviderError(f"{path}: the entry of {rel!r} has no size and sha256")
    return files


def verify_manifest(folder: Path) -> dict[str, dict[str, Any]]:
    """Check every file against ``manifest.json``: ProviderError (exit 3) naming the first that
    differs or that the manifest does not list (the launcher's ``logs/`` excepted); TrainingError
    when there is no manifest at all (the trainer never finished)."""
    files = _manifest_files(folder)
    for rel, want in files.items():
        path = folder / rel
        if not path.is_file():
            raise ProviderError(f"{path}: listed in manifest.json but missing (lost in transfer)")
        if path.stat().st_size != want["size"] or sha256_file(path) != want["sha256"]:
            raise ProviderError(f"{path}: does not match manifest.json (damaged in transfer)")
    present = {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()}
    extra = {p for p in present if p.split("/")[0] != LAUNCHER_ADDED} - set(files) - {MANIFEST}
    if extra:
        raise ProviderError(f"{folder}: files not in manifest.json: {', '.join(sorted(extra)[:5])}")
    return files


def fetch_logs(ex: Executor, remote_dir: str, dest: Path, names: list[str]) -> dict[str, dict[str, Any]]:
    """The tail (at most LOG_CAP bytes) of each log file into ``dest``, listed in ``dest/manifest.json``."""
    dest.mkdir(parents=True, exist_ok=True)
    listed = {}
    for name in names:
        path = dest / name
        with path.open("wb") as fh:
            result = ex.run_stdout(f"test -f {q(remote_dir)}/{q(name)} || exit 0; "
                                   f"tail -c {LOG_CAP} {q(remote_dir)}/{q(name)}", fh)  # type: ignore[arg-type]
        if not result.ok or path.stat().st_size == 0:
            path.unlink(missing_ok=True)
            continue
        size = path.stat().st_size
        listed[name] = {"sha256": sha256_file(path), "size": size, "tail_only": size >= LOG_CAP}
    (dest / MANIFEST).write_text(json.dumps({"version": 1, "files": listed}, indent=2) + "\n", encoding="utf-8")
    return listed


def download_outputs(ex: Executor, remote_dir: str, final: Path, logs: tuple[str, list[str]]) -> dict[str, Any]:
    """``remote_dir`` into ``final``: one tar stream into a hidden staging folder beside it, every file
    checked against the manifest, the logs added, then one rename. Nothing half-written is ever left
    where the outputs are expected."""
    staging = staging_for(final)
    try:
        fetch_tree(ex, remote_dir, staging)
        if (staging / LAUNCHER_ADDED).exists():
            raise ProviderError(f"refusing {remote_dir}: it holds a {LAUNCHER_ADDED}/ folder, which only the "
                                "launcher writes")
        files = verify_manifest(staging)
        fetch_logs(ex, logs[0], staging / LAUNCHER_ADDED, logs[1])
        user_modes(staging)
    except BaseException:
        discard(staging)
        raise
    publish_dir(staging, final)  # if this refuses, the verified outputs stay in staging (it says where)
    return files


def user_modes(folder: Path) -> None:
    """The modes the user's umask gives new files: what came from the machine keeps none of its own."""
    umask = os.umask(0)
    os.umask(umask)
    for path in folder.rglob("*"):
        path.chmod((0o777 if path.is_dir() else 0o666) & ~umask)


def publish_dir(staging: Path, final: Path) -> None:
    """Move a verified ``staging`` folder to ``final`` in one rename. ``final`` may exist only empty
    or holding the logs of an earlier failed attempt (``staging`` brings fresh ones)."""
    if final.exists():
        leftovers = {p.name for p in final.iterdir()}
        if leftovers - {LAUNCHER_ADDED}:
            raise TrainingError(f"{final}: appeared while the job ran and is not empty; outputs left in {staging}")
        shutil.rmtree(final)
    os.replace(staging, final)


def staging_for(final: Path) -> Path:
    """A hidden folder beside ``final`` (same filesystem, so the last move is one rename)."""
    final.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{final.name}.partial-", dir=final.parent))
    umask = os.umask(0)
    os.umask(umask)
    staging.chmod(0o777 & ~umask)  # mkdtemp makes it 0700; the adapter folder is an ordinary one
    return staging


def discard(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)
