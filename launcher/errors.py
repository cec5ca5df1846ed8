"""One exception root for rtrain; each subclass carries the exit code the CLI maps it to."""

from __future__ import annotations


class RtrainError(Exception):
    """Base of every error rtrain raises on purpose. ``exit_code`` is what the CLI exits with."""

    exit_code = 1


class UsageError(RtrainError):
    """Bad input: a flag, a file, a line. Raised before any money is spent."""

    exit_code = 2


class TrainingError(RtrainError):
    """The trainer itself failed (non-zero exit, an ``error`` event, outputs that do not verify)."""

    exit_code = 1


class ProviderError(RtrainError):
    """A cloud provider or the infrastructure under the job (SSH, disk, network) failed."""

    exit_code = 3


class Interrupted(RtrainError):
    """The user pressed Ctrl-C or the launcher got SIGTERM."""

    exit_code = 130


class AuthRejected(ProviderError):
    """A provider refused the API key (HTTP 401/403): nothing will work with it."""


class PodLost(ProviderError):
    """The job's machine is gone or stopped (preempted, its host failed, terminated from outside), as
    its provider says: the job recovers on it (``resumable``: it was stopped with its disk) or on a new
    one, within ``--max-recoveries``."""

    def __init__(self, message: str, *, resumable: bool = False) -> None:
        super().__init__(message)
        self.resumable = resumable
