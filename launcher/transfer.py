"""Moving bytes to and from the job's machine, built once on the executor's three verbs.

- ``send_blobs``: files as content-addressed blobs (``blobs/<sha256>``). One round trip asks which the
  machine has and how much of the rest (a partial copy is resumed, its head not sent again); then one
  stream carries every missing file to remote/receive.py on the machine, which writes and hashes each
  in the same pass and renames it into place only when its sha256 matches the launcher's (known
  before, or hashed here while it streams and sent after the bytes). The machine never reads back
  what it wrote, and a folder of small files costs one channel, not two round trips a file.
- ``read_from``: the bytes of a file after an offset (following logs across reconnects).

Downloads (outputs, logs, checkpoints) are launcher/downloads.py.
"""

from __future__ import annotations

import hashlib
import json
import queue
import shlex
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from launcher.errors import ProviderError
from launcher.executor.base import ConnectionLost, Executor, Progress

q = shlex.quote
#: what one read of a file hands the channel (the executors slice it further as their wire wants)
PIECE = 1 << 20


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


class HashBeside:
    """sha256 of a stream, computed on a second thread (hashlib lets go of the GIL), so hashing here
    runs beside the encryption of the same bytes instead of before it."""

    def __init__(self) -> None:
        self._digest = hashlib.sha256()
        self._queue: queue.Queue[bytes | None] = queue.Queue(maxsize=32)
        self._thread = threading.Thread(target=self._run, name="rtrain-sha256", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while (data := self._queue.get()) is not None:
            self._digest.update(data)

    def update(self, data: bytes) -> None:
        self._queue.put(data)

    def hexdigest(self) -> str:
        self.close()
        return self._digest.hexdigest()

    def close(self) -> None:
        if self._thread.is_alive():
            self._queue.put(None)
            self._thread.join()


@dataclass
class _Outgoing:
    local: Path
    sha256: str | None  # known before sending, else hashed here while it streams
    part: str
    offset: int  # bytes of the part already on the machine
    retried: bool = False
    sent: int = 0  # bytes of the file that went into a stream


def _stream(items: list[_Outgoing], progress: Progress | None) -> Iterator[bytes]:
    """The bytes remote/receive.py reads: per file a header line, the file from its offset, and the
    sha256 hashed on the way when it was not known."""
    for item in items:
        size = item.local.stat().st_size
        header = {"part": item.part, "offset": item.offset, "length": size - item.offset, "sha256": item.sha256}
        yield json.dumps(header).encode() + b"\n"
        hasher = HashBeside() if item.sha256 is None else None
        try:
            with item.local.open("rb") as fh:
                if progress and item.offset:
                    progress(item.offset)
                if hasher is not None:  # the head already on the machine: hashed here, not sent again
                    remaining = item.offset
                    while remaining > 0 and (chunk := fh.read(min(PIECE, remaining))):
                        hasher.update(chunk)
                        remaining -= len(chunk)
                else:
                    fh.seek(item.offset)
                left = size - item.offset
                while left > 0:
                    chunk = fh.read(min(PIECE, left))
                    if not chunk:
                        raise ProviderError(f"{item.local} shrank while it was being uploaded")
                    if hasher is not None:
                        hasher.update(chunk)
                    left -= len(chunk)
                    item.sent += len(chunk)  # handed to the wire
                    yield chunk
                    if progress:
                        progress(len(chunk))
            if hasher is not None:
                yield hasher.hexdigest().encode()
        finally:
            if hasher is not None:
                hasher.close()


class _Reader:
    """A file-like view of ``_stream`` for the executor's ``run_stdin``."""

    def __init__(self, pieces: Iterator[bytes]) -> None:
        self._pieces = pieces

    def read(self, _n: int = -1) -> bytes:
        return next(self._pieces, b"")

    def close(self) -> None:
        self._pieces.close()  # type: ignore[attr-defined]


def _receiver(ex: Executor, blobs: str) -> str:
    source = (Path(__file__).resolve().parent.parent / "remote" / "receive.py").read_text()
    return f"{q(ex.python)} -I -S -c {q(source)} {q(blobs)}"  # stdlib only: no site, no environment


def send_blobs(ex: Executor, blobs: str, files: list[tuple[Path, str | None]], *,
               progress: Progress | None = None, attempts: int = 4,
               announce: Callable[[int], Progress | None] | None = None) -> list[Upload]:
    """Put each (local file, its sha256 if known) at ``<blobs>/<sha256>`` on the machine; see the
    module's docstring. A dropped connection resumes what reached the machine; a copy that does not
    verify (damaged on the way, or the file changed since it was hashed) is sent again in full.
    ``announce`` is told how many bytes the files to send have, once the machine said what it lacks,
    and may answer with the progress callback to use."""
    items = [_Outgoing(local, sha, part_name(local, blobs, sha), 0) for local, sha in files]
    found = probe_blobs(ex, blobs, [(it.sha256, it.part) for it in items])
    done: dict[int, Upload] = {}
    pending: list[int] = []
    for i, (item, offset) in enumerate(zip(items, found, strict=True)):
        if offset is None:
            done[i] = Upload(f"{blobs}/{item.sha256}", str(item.sha256), 0)
        else:
            item.offset = offset if offset <= item.local.stat().st_size else 0
            pending.append(i)
    if announce is not None and pending:
        progress = announce(sum(items[i].local.stat().st_size for i in pending)) or progress
    for _attempt in range(attempts):
        if not pending:
            break
        reader = _Reader(_stream([items[i] for i in pending], progress))
        lost = False
        try:
            result = ex.run_stdin(_receiver(ex, blobs), reader)  # type: ignore[arg-type]
        except ConnectionLost:
            lost = True
        finally:
            reader.close()
        answers = [] if lost else result.stdout.split("\n")
        still = []
        for n, i in enumerate(pending):
            item = items[i]
            answer = answers[n].split() if n < len(answers) else []
            if answer[:1] == ["OK"] and len(answer) == 2:
                done[i] = Upload(f"{blobs}/{answer[1]}", answer[1], item.sent, item.retried)
                continue
            item.retried = True
            if answer[:1] == ["BAD"]:
                item.sha256, item.offset = None, 0  # hashed again on the way: the file may have changed
                item.part = part_name(item.local, blobs, None)
            elif not lost and not result.ok:
                why = (result.stderr.strip().splitlines() or [f"exit status {result.returncode}"])[-1]
                raise ProviderError(f"upload of {item.local.name} failed on the machine: {why}")
            still.append(i)
        if lost and still:  # resume each from what reached the machine
            again = probe_blobs(ex, blobs, [(None, items[i].part) for i in still])
            for i, offset in zip(still, again, strict=True):
                items[i].offset = min(offset or 0, items[i].local.stat().st_size)
        pending = still
    if pending:
        raise ProviderError(f"upload of {items[pending[0]].local} did not verify after {attempts} tries "
                            "(sha256 on the machine differs)")
    return [done[i] for i in range(len(items))]


def upload_blob(ex: Executor, local: Path, blobs: str, *, known_sha256: str | None = None,
                progress: Progress | None = None, attempts: int = 4) -> Upload:
    """One file as a blob (``send_blobs`` for a single file)."""
    return send_blobs(ex, blobs, [(local, known_sha256)], progress=progress, attempts=attempts)[0]


def read_from(ex: Executor, path: str, offset: int, limit: int = 1 << 20) -> bytes:
    """Up to ``limit`` bytes of ``path`` from byte ``offset`` on (empty when it does not exist yet)."""
    import io

    sink = io.BytesIO()
    ex.run_stdout(f"test -f {q(path)} && tail -c +{offset + 1} {q(path)} | head -c {limit} || true", sink)
    return sink.getvalue()
