"""The executor contract: three verbs over shell commands on the job's machine.

Everything else (content-addressed upload, tailing a file, pulling a folder as one tar stream) is
built from these in ``launcher/transfer.py`` once, for every backend. Commands are shell strings;
callers quote every value with ``shlex.quote``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import BinaryIO, Protocol

from launcher.errors import ProviderError

#: Called with the number of bytes just moved.
Progress = Callable[[int], None]


class ConnectionLost(ProviderError):
    """The connection dropped in the middle of a command that cannot simply be sent again (an
    upload): the caller resumes from what reached the machine."""


@dataclass
class RunResult:
    returncode: int
    stdout: str
    stderr: str

    @property
    def ok(self) -> bool:
        return self.returncode == 0


class Executor(Protocol):
    #: The python that runs the trainer on that machine.
    python: str

    def run(self, command: str, *, timeout: float | None = None) -> RunResult:
        """Run ``command`` (a shell string) to completion and return its output."""
        ...

    def run_stdin(self, command: str, source: BinaryIO, *, progress: Progress | None = None) -> RunResult:
        """Run ``command`` with ``source`` streamed to its stdin (``cat > file``: an upload)."""
        ...

    def run_stdout(self, command: str, sink: BinaryIO, *, progress: Progress | None = None) -> RunResult:
        """Run ``command`` with its stdout streamed into ``sink`` (``tar -cf -``: a download)."""
        ...

    def close(self) -> None: ...
