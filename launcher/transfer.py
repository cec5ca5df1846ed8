"""Moving bytes to and from the job's machine, built once on the executor's three verbs.

- ``upload_blob``: content-addressed (``blobs/<sha256>``), skipped when the machine has it, resumed
  when a partial copy is there, verified with ``sha256sum`` on the machine before it is renamed into
  place.
- ``read_from``: the bytes of a file after an offset (following logs across reconnects).

Downloads (outputs, logs, checkpoints) are launcher/downloads.py.
"""

from __future__ import annotations

import hashlib
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from launcher.errors import ProviderError
from launcher.executor.base import ConnectionLost, Executor, Progress

q = shlex.quote


class _HashingReader:
    """Reads a file for the upload and hashes every byte on the way: one pass over the file."""

    def __init__(self, fh: BinaryIO, digest: Any) -> None:
        self.fh, self.digest = fh, digest

    def read(self, n: int = -1) -> bytes:
        data = self.fh.read(n)
        self.digest.update(data)
        return data


@dataclass
class Upload:
    path: str  # where the blob is on the machine
    sha256: str
    sent: int  # bytes that crossed the wire this time (0: the machine had it)
    retried: bool = False


def part_name(local: Path, blobs: str, known_sha256: str | None) -> str:
    """Where a partial copy of ``local`` lives on the machine: stable across tries and launchers, so
    an interrupted upload resumes (named by the content when it is known, else by path/size/mtime)."""
    st = local.stat()
    tag = known_sha256 or hashlib.sha256(f"{local.resolve()}:{st.st_size}:{st.st_mtime_ns}".encode()).hexdigest()
    return f"{blobs}/.{tag}.part"


def probe_blobs(ex: Executor, blobs: str, wanted: list[tuple[str | None, str]]) -> list[int | None]:
    """One round trip for many files: for each (known sha256 or None, part path), None when the blob
    is already there, else the size of the partial copy to resume from (0: none)."""
    lines = [f"mkdir -p {q(blobs)} || exit 1"]
    for sha, part in wanted:
        have = f"test -f {q(f'{blobs}/{sha}')} && echo have || " if sha else ""
        lines.append(f"{have}(stat -c %s {q(part)} 2>/dev/null || echo 0)")
    result = ex.run("\n".join(lines))
    answers = result.stdout.split()
    if not result.ok or len(answers) != len(wanted):
        raise ProviderError(f"cannot look at {blobs} on the machine: {result.stderr.strip() or result.stdout.strip()}")
    return [None if a == "have" else int(a) if a.isdigit() else 0 for a in answers]


def upload_blob(ex: Executor, local: Path, blobs: str, *, known_sha256: str | None = None,
                progress: Progress | None = None, attempts: int = 4, resume_from: int | None = None) -> Upload:
    """Put ``local`` at ``<blobs>/<sha256>`` on the machine.

    With ``known_sha256`` (from the hash cache) a blob the machine already has is skipped. Otherwise
    the file is hashed while it streams; a partial copy left by an earlier try is resumed (its head
    hashed locally, not sent again); ``sha256sum`` on the machine must match before the copy is
    renamed into place; a copy that does not match, or a dropped connection, starts over or resumes.
    ``resume_from`` is what ``probe_blobs`` said of this file (saves a round trip).
    """
    part = part_name(local, blobs, known_sha256)
    if resume_from is None:
        found = probe_blobs(ex, blobs, [(known_sha256, part)])[0]
        if found is None:
            return Upload(f"{blobs}/{known_sha256}", str(known_sha256), 0)
        resume_from = found
    size = local.stat().st_size
    retried, sent, offset = False, 0, resume_from
    for _attempt in range(attempts):
        if offset is None:
            offset = probe_blobs(ex, blobs, [(None, part)])[0] or 0
        offset = offset if offset <= size else 0
        digest = hashlib.sha256()
        with local.open("rb") as fh:
            remaining = offset  # the head already on the machine: hashed here, not sent again
            while remaining > 0 and (chunk := fh.read(min(1 << 20, remaining))):
                digest.update(chunk)
                remaining -= len(chunk)
            if progress and offset:
                progress(offset)
            redirect = ">>" if offset else ">"
            try:
                result = ex.run_stdin(f"cat {redirect} {q(part)}", _HashingReader(fh, digest),  # type: ignore[arg-type]
                                      progress=progress)
            except ConnectionLost:
                retried, offset = True, None
                continue  # resume from whatever reached the machine
        if not result.ok:
            raise ProviderError(f"upload of {local.name} failed: {result.stderr.strip() or result.returncode}")
        sent += size - offset
        sha = digest.hexdigest()
        dest = f"{blobs}/{sha}"
        # Verify on the machine and move into place only on a match: one round trip.
        check = ex.run(f"got=$(sha256sum {q(part)} | cut -c1-64); if [ \"$got\" = {sha} ]; then "
                       f"if test -f {q(dest)}; then rm -f {q(part)}; else mv -f {q(part)} {q(dest)}; fi && echo OK; "
                       f"else rm -f {q(part)}; echo \"BAD $got\"; fi")
        if check.ok and check.stdout.strip() == "OK":
            return Upload(dest, sha, sent, retried)
        if not check.stdout.startswith("BAD"):
            raise ProviderError(f"cannot verify {part} on the machine: {check.stderr.strip()}")
        retried, offset = True, 0  # bytes damaged on the way (or a bad head resumed): start over
    raise ProviderError(f"upload of {local} did not verify after {attempts} tries (sha256 on the machine differs)")


def read_from(ex: Executor, path: str, offset: int, limit: int = 1 << 20) -> bytes:
    """Up to ``limit`` bytes of ``path`` from byte ``offset`` on (empty when it does not exist yet)."""
    import io

    sink = io.BytesIO()
    ex.run_stdout(f"test -f {q(path)} && tail -c +{offset + 1} {q(path)} | head -c {limit} || true", sink)
    return sink.getvalue()
