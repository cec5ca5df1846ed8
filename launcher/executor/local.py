"""The local executor: the same shell commands the SSH executor sends, run with subprocess."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from typing import IO, BinaryIO

from launcher.executor.base import Progress, RunResult

CHUNK = 1 << 20


def _text(fh: IO[bytes]) -> str:
    fh.seek(0)
    return fh.read().decode(errors="replace")


class LocalExecutor:
    def __init__(self, python: str | None = None, *, private: bool = False) -> None:
        self.python = python or sys.executable
        self._bash = shutil.which("bash") or "/bin/bash"
        #: every command runs with umask 077: what it writes (blobs, the trainer's files) is the user's only
        self._prefix = "umask 077\n" if private else ""

    def _cmd(self, command: str) -> list[str]:
        return [self._bash, "-c", self._prefix + command]

    def run(self, command: str, *, timeout: float | None = None) -> RunResult:
        proc = subprocess.run(self._cmd(command), capture_output=True, text=True, timeout=timeout,
                              stdin=subprocess.DEVNULL)
        return RunResult(proc.returncode, proc.stdout, proc.stderr)

    def run_stdin(self, command: str, source: BinaryIO, *, progress: Progress | None = None) -> RunResult:
        # Output goes to files, not pipes, so a chatty command can never stall the upload.
        with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
            proc = subprocess.Popen(self._cmd(command), stdin=subprocess.PIPE, stdout=out, stderr=err)
            assert proc.stdin is not None
            try:
                while chunk := source.read(CHUNK):
                    proc.stdin.write(chunk)
                    if progress:
                        progress(len(chunk))
            except BrokenPipeError:
                pass  # the command ended early; its exit status says why
            finally:
                try:
                    proc.stdin.close()
                except BrokenPipeError:
                    pass
            proc.wait()
            return RunResult(proc.returncode, _text(out), _text(err))

    def run_stdout(self, command: str, sink: BinaryIO, *, progress: Progress | None = None) -> RunResult:
        with tempfile.TemporaryFile() as err:
            proc = subprocess.Popen(self._cmd(command), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=err)
            assert proc.stdout is not None
            try:
                with proc.stdout:
                    while chunk := proc.stdout.read(CHUNK):
                        sink.write(chunk)
                        if progress:
                            progress(len(chunk))
            except BaseException:
                proc.kill()  # the sink refused more: the command ends with it
                raise
            finally:
                proc.wait()
            return RunResult(proc.returncode, "", _text(err))

    def close(self) -> None:
        pass
