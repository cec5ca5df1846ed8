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
import subprocess
import tarfile
import tempfile
import threading
from pathlib import Path, PurePosixPath
from typing import Any, BinaryIO

from launcher.errors import ProviderError, TrainingError
from launcher.executor.base import ConnectionLost, Executor, Progress
from launcher.transfer import HashBeside
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
#: what one read of a member hands to its file and its hash
PIECE = 1 << 20
#: a download at least this big goes through OpenSSH's ``ssh`` when the executor offers it
BULK = 32 << 20


class _Members:
    """The checks every member of a stream from the machine passes before anything is written: no
    absolute paths, no ``..``, no empty names, no links or devices, no member that collides with
    another (a file twice, or a file that is also a folder), at most ``MAX_MEMBERS``."""

    def __init__(self, source: str) -> None:
        self.source, self.seen, self.count = source, {}, 0

    def check(self, m: tarfile.TarInfo) -> None:
        source = self.source
        self.count += 1
        if self.count > MAX_MEMBERS:
            raise ProviderError(f"refusing {source}: more than {MAX_MEMBERS} files")
        name = PurePosixPath(m.name)
        if not m.name.strip() or name.is_absolute() or ".." in name.parts:
            raise ProviderError(f"refusing {source}: archive member {m.name!r} points outside the folder")
        if not (m.isfile() or m.isdir()):
            raise ProviderError(f"refusing {source}: archive member {m.name!r} is a link or a device")
        key = name.as_posix()
        for parent in list(name.parents)[:-1]:  # a file cannot also be a folder of others
            if self.seen.get(parent.as_posix()) == "file":
                raise ProviderError(f"refusing {source}: archive member {m.name!r} is inside a file")
        if key in self.seen and (self.seen[key] == "file" or m.isfile()):
            raise ProviderError(f"refusing {source}: archive member {m.name!r} comes twice")
        self.seen[key] = "file" if m.isfile() else "dir"


def _safe_members(tar: tarfile.TarFile, source: str) -> list[tarfile.TarInfo]:
    members = _Members(source)
    listed = []
    for m in tar:
        members.check(m)
        listed.append(m)
    return listed


class _Abandoned(ProviderError):
    """The extracting side stopped reading (it refused a member): the command is ended, nothing more."""


class _PipeSink:
    """The writing end of the pipe the tar stream flows through, capped at ``MAX_BYTES``. A reader
    that stopped (a member refused) ends the command: the write fails as a ProviderError, which no
    executor mistakes for a dropped connection."""

    def __init__(self, fd: int, source: str) -> None:
        self.fh = os.fdopen(fd, "wb", buffering=0)
        self.source, self.size = source, 0

    def write(self, data: bytes) -> int:
        self.size += len(data)
        if self.size > MAX_BYTES:
            raise ProviderError(f"refusing {self.source}: the machine sent more than {MAX_BYTES >> 30} GiB")
        try:
            self.fh.write(data)
        except (BrokenPipeError, ValueError):
            raise _Abandoned(f"{self.source}: the download was abandoned") from None
        return len(data)

    def seekable(self) -> bool:
        return False  # a stream: a dropped connection starts the whole fetch over (fetch_tree)

    def close(self) -> None:
        self.fh.close()


def _extract(stream: BinaryIO, dest: Path, source: str) -> dict[str, str]:
    """Members of the tar ``stream`` into ``dest`` as they arrive, each checked before it is written
    and hashed while it is written: {relative path: sha256} (one pass, nothing read back)."""
    members, hashes = _Members(source), {}
    with tarfile.open(fileobj=stream, mode="r|", bufsize=PIECE) as tar:
        for m in tar:
            members.check(m)
            target = dest / m.name
            if m.isdir():
                target.mkdir(parents=True, exist_ok=True)
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            digest = HashBeside()  # hashed on a second thread while this one writes
            try:
                src = tar.extractfile(m)
                assert src is not None
                with target.open("xb") as out:
                    while chunk := src.read(PIECE):
                        out.write(chunk)
                        digest.update(chunk)
                hashes[PurePosixPath(m.name).as_posix()] = digest.hexdigest()
            finally:
                digest.close()
    return hashes


def fetch_tree(ex: Executor, remote_dir: str, dest: Path, *, names: list[str] | None = None,
               progress: Progress | None = None, attempts: int = 3) -> dict[str, str]:
    """Copy ``remote_dir`` (or just ``names`` in it) into the local folder ``dest`` as one tar stream,
    extracted safely while it arrives; returns the sha256 of every file, hashed as it was written.
    A dropped connection starts the copy over (``dest`` emptied first); on a refusal ``dest`` may hold
    part of the stream, so callers fetch into a staging folder they discard."""
    what = " ".join(q(n) for n in names) if names else "."
    dest.mkdir(parents=True, exist_ok=True)
    for attempt in range(attempts):
        if attempt:  # what the dropped try wrote goes; the folder itself (and its mode) stays
            for child in dest.iterdir():
                shutil.rmtree(child) if child.is_dir() and not child.is_symlink() else child.unlink()
        command = f"tar -C {q(remote_dir)} -cf - {what}"
        try:
            if _worth_openssh(ex, remote_dir, names):
                proc = ex.bulk_stdout(command)  # type: ignore[attr-defined]
                if proc is not None:
                    return _fetch_openssh(proc, remote_dir, dest)
            return _fetch_once(ex, command, remote_dir, dest, progress)
        except ConnectionLost:
            if attempt + 1 == attempts:
                raise
    raise AssertionError("unreachable")


def _worth_openssh(ex: Executor, remote_dir: str, names: list[str] | None) -> bool:
    """Whether the folder is big enough for OpenSSH's handshake to pay (one round trip to ask)."""
    if not hasattr(ex, "bulk_stdout"):
        return False
    what = " ".join(q(f"{remote_dir}/{n}") for n in names) if names else q(remote_dir)
    size = ex.run(f"du -scb {what} 2>/dev/null | tail -n 1 | cut -f1")
    return size.ok and size.stdout.strip().isdigit() and int(size.stdout.strip()) >= BULK


def _extract_whole(stream: BinaryIO, dest: Path, remote_dir: str) -> tuple[dict[str, str], ProviderError | None]:
    """``_extract`` of a whole stream (read to its end, so the sending command can end), with what it
    refused as a ProviderError to raise once the command's own outcome is known."""
    try:
        hashes = _extract(stream, dest, remote_dir)
        while stream.read(PIECE):  # tar's zero blocks after the last member
            pass
        return hashes, None
    except (tarfile.TarError, EOFError) as exc:
        return {}, ProviderError(f"refusing {remote_dir}: what the machine sent is not a whole tar archive "
                                 f"({type(exc).__name__}: {exc})")
    except ProviderError as exc:
        return {}, exc
    except OSError as exc:
        return {}, ProviderError(f"refusing {remote_dir}: it cannot be unpacked here ({exc})")


def _fetch_openssh(proc: subprocess.Popen[bytes], remote_dir: str, dest: Path) -> dict[str, str]:
    """The tar stream from an OpenSSH ``ssh`` process, extracted as it arrives."""
    assert proc.stdout is not None and proc.stderr is not None
    failure: ProviderError | None = None
    hashes: dict[str, str] = {}
    try:
        with proc.stdout as stream:
            hashes, failure = _extract_whole(_Capped(stream, remote_dir), dest, remote_dir)  # type: ignore[arg-type]
    except BaseException:
        proc.kill()  # interrupted: the ssh process ends with us
        raise
    finally:
        if failure is not None:
            proc.kill()
        code = proc.wait()
        err = proc.stderr.read().decode(errors="replace").strip()
        proc.stderr.close()
    if code == 255:  # ssh's own failure: the connection, not the command
        raise ConnectionLost(f"the SSH connection dropped during a download: {err or 'ssh exited 255'}")
    if code != 0 and failure is None:
        raise ProviderError(f"cannot read {remote_dir} on the machine: {err}")
    if failure is not None:
        raise failure
    return hashes


class _Capped:
    """A stream from the machine that may not exceed ``MAX_BYTES``."""

    def __init__(self, stream: BinaryIO, source: str) -> None:
        self.stream, self.source, self.size = stream, source, 0

    def read(self, n: int = -1) -> bytes:
        data = self.stream.read(n)
        self.size += len(data)
        if self.size > MAX_BYTES:
            raise ProviderError(f"refusing {self.source}: the machine sent more than {MAX_BYTES >> 30} GiB")
        return data


def _fetch_once(ex: Executor, command: str, remote_dir: str, dest: Path, progress: Progress | None) -> dict[str, str]:
    read_fd, write_fd = os.pipe()
    sink = _PipeSink(write_fd, remote_dir)
    outcome: dict[str, Any] = {}

    def pump() -> None:
        try:
            outcome["result"] = ex.run_stdout(command, sink, progress=progress)  # type: ignore[arg-type]
        except BaseException as exc:  # handed to the caller's thread
            outcome["error"] = exc
        finally:
            sink.close()

    thread = threading.Thread(target=pump, name="rtrain-download", daemon=True)
    thread.start()
    with os.fdopen(read_fd, "rb", buffering=PIECE) as stream:
        hashes, failure = _extract_whole(stream, dest, remote_dir)
    thread.join()  # the read end is closed: a command still writing ends now
    error = outcome.get("error")
    if isinstance(error, ConnectionLost):
        raise error
    result = outcome.get("result")
    if result is not None and not result.ok:
        raise ProviderError(f"cannot read {remote_dir} on the machine: {result.stderr.strip()}")
    if failure is not None:
        raise failure
    if error is not None and not isinstance(error, _Abandoned):
        raise error
    return hashes


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


def verify_manifest(folder: Path, hashed: dict[str, str] | None = None) -> dict[str, dict[str, Any]]:
    """Check every file against ``manifest.json``: ProviderError (exit 3) naming the first that
    differs or that the manifest does not list (the launcher's ``logs/`` excepted); TrainingError
    when there is no manifest at all (the trainer never finished). ``hashed``: the sha256 of files
    hashed as they were written (fetch_tree), so they are not read again."""
    files = _manifest_files(folder)
    hashed = hashed or {}
    for rel, want in files.items():
        path = folder / rel
        if not path.is_file():
            raise ProviderError(f"{path}: listed in manifest.json but missing (lost in transfer)")
        sha = hashed.get(rel) or sha256_file(path)
        if path.stat().st_size != want["size"] or sha != want["sha256"]:
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
        hashed = fetch_tree(ex, remote_dir, staging)
        if (staging / LAUNCHER_ADDED).exists():
            raise ProviderError(f"refusing {remote_dir}: it holds a {LAUNCHER_ADDED}/ folder, which only the "
                                "launcher writes")
        files = verify_manifest(staging, hashed)
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
