"""The machine's side of an upload: files arrive on stdin, each is written and hashed in the same pass
(the machine never reads back what it wrote), and renamed to its content address only when its
sha256 matches. Many files go through one stream, so a folder of small files costs one round trip.

Run on the machine as ``python3 -c <this source> BLOBS`` (stdlib only: the machine's own python,
before the trainer's environment exists). The stream is, per file::

    {"part": ".../.<tag>.part", "offset": N, "length": M, "sha256": "<hex>" | null}\\n
    <M bytes: the file from byte N on>
    [<64 hex bytes: the sha256 the sender hashed while sending, when "sha256" was null>]

A partial copy's first N bytes (a resumed upload) are hashed from the disk first. For each file one
line goes back: ``OK <sha256>``, or ``BAD <sha256 of what arrived>`` (the part is removed), or, when
the stream ends early, nothing more (the part stays, for the next try to resume); a header that does
not parse (the stream was damaged) ends the stream with ``GARBLED``.
"""

import hashlib
import json
import os
import sys

CHUNK = 1 << 20


def _bigger_pipe(stream) -> None:  # type: ignore[no-untyped-def]
    """A 1 MiB pipe from sshd (Linux; 64 KiB by default): fewer wake-ups of both sides per byte."""
    try:
        import fcntl

        fcntl.fcntl(stream.fileno(), getattr(fcntl, "F_SETPIPE_SZ", 1031), CHUNK)
    except (OSError, ValueError, AttributeError, ImportError):
        pass


def receive(blobs: str, stream, out) -> None:  # type: ignore[no-untyped-def]
    os.makedirs(blobs, exist_ok=True)
    _bigger_pipe(stream)
    buf = memoryview(bytearray(CHUNK))
    while True:
        header = stream.readline()
        if not header:
            return
        try:
            job = json.loads(header)
            part, offset, left = job["part"], int(job["offset"]), int(job["length"])
        except (ValueError, KeyError, TypeError):
            out.write("GARBLED\n")  # the stream was damaged on the way: the sender tries again
            return
        digest = hashlib.sha256()
        if offset:
            with open(part, "rb") as head:  # what an earlier try left: hashed once, not sent again
                todo = offset
                while todo and (chunk := head.read(min(CHUNK, todo))):
                    digest.update(chunk)
                    todo -= len(chunk)
            if todo:
                raise SystemExit(f"{part} is shorter than {offset} bytes")
        with open(part, "r+b" if offset else "wb") as fh:
            fh.seek(offset)
            fh.truncate()
            while left:
                got = stream.readinto(buf[:min(CHUNK, left)])
                if not got:
                    return  # the stream ended early: keep the part for a resume
                fh.write(buf[:got])
                digest.update(buf[:got])
                left -= got
        want = job["sha256"] or stream.read(64).decode("ascii", "replace")
        got = digest.hexdigest()
        if got == want:
            dest = os.path.join(blobs, got)
            if os.path.exists(dest):
                os.remove(part)
            else:
                os.replace(part, dest)
            out.write(f"OK {got}\n")
        else:
            os.remove(part)
            out.write(f"BAD {got}\n")
        out.flush()


if __name__ == "__main__":
    receive(sys.argv[1], sys.stdin.buffer, sys.stdout)
