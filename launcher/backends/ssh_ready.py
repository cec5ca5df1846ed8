"""Waiting for a machine to take SSH commands, the same for every SSH backend.

The provider says where SSH will be (``poll``: an endpoint from the machine's *current* state, or
what is still missing); then a TCP connection must show an SSH banner, then the job's key must log in
and run a command, with the pinned host key checked. Fast first, capped backoff, one deadline, and
the error names the last thing seen. A host key other than the one rtrain made is not something to
wait out: it is refused at once.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable

from launcher.backends.base import SSHEndpoint
from launcher.errors import ProviderError
from launcher.executor.ssh import HostKeyMismatch, SSHExecutor
from launcher.keys import JobKeys

#: poll() -> (the SSH endpoint, or None) and what is being waited for; raises when the machine failed
Poll = Callable[[], tuple[SSHEndpoint | None, str]]


def banner_answers(host: str, port: int, timeout: float = 5.0) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout) as s:
            s.settimeout(timeout)
            return s.recv(64).startswith(b"SSH-")
    except OSError:
        return False


def logs_in(endpoint: SSHEndpoint, keys: JobKeys, python: str) -> bool:
    """Whether the job's key runs a command there (HostKeyMismatch is raised, never waited out)."""
    import paramiko

    ex = SSHExecutor(endpoint, keys, python=python, connect_timeout=10, reconnect_for_s=0)
    try:
        return ex.run("true", timeout=30).ok
    except HostKeyMismatch:
        raise
    except (ProviderError, paramiko.SSHException, OSError, EOFError):
        return False
    finally:
        ex.close()


def wait_for_ssh(what: str, poll: Poll, keys: JobKeys, *, deadline_s: float, python: str = "python3",
                 on_state: Callable[[str], None] | None = None) -> SSHEndpoint:
    """The endpoint of ``what`` (e.g. "pod 3f2a") once the job's key runs a command on it."""
    deadline = time.monotonic() + deadline_s
    delay, last = 0.3, ""

    def note(state: str) -> None:
        nonlocal last
        if state != last:
            last = state
            if on_state:
                on_state(state)

    while True:
        endpoint, why = poll()
        if endpoint is None:
            note(why)
        elif not banner_answers(endpoint.host, endpoint.port):
            note(f"sshd not answering on {endpoint.host}:{endpoint.port} yet")
        else:
            note(f"logging in to {endpoint.host}:{endpoint.port}")
            if logs_in(endpoint, keys, python):
                return endpoint
            note(f"sshd on {endpoint.host}:{endpoint.port} does not accept the job's key yet")
        if time.monotonic() + delay > deadline:
            raise ProviderError(f"{what} was not ready after {deadline_s:.0f}s; last seen: {last}")
        time.sleep(delay)
        delay = min(delay * 1.6, 5.0)
