"""Executors run things on the job's machine: the local one (subprocess) and SSH (ssh.py, paramiko)."""

from launcher.executor.base import Executor, RunResult
from launcher.executor.local import LocalExecutor

__all__ = ["Executor", "LocalExecutor", "RunResult"]
