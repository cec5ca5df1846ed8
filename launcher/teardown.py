"""Ending a machine, whatever is going on: retries, and Ctrl-C held back while it happens."""

from __future__ import annotations

import signal
from collections.abc import Iterator
from contextlib import contextmanager

from launcher.backends.base import Backend


@contextmanager
def signals_deferred() -> Iterator[None]:
    """Ctrl-C (or SIGTERM) must not abort the termination of a pod: ignore them until it is done."""
    old = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        for s in old:
            signal.signal(s, signal.SIG_IGN)
    except ValueError:  # not the main thread
        old = {}
    try:
        yield
    finally:
        for s, handler in old.items():
            signal.signal(s, handler)


def terminate_with_retries(backend: Backend, pod_id: str, attempts: int = 5) -> None:
    from tenacity import retry, stop_after_attempt, wait_exponential

    retry(stop=stop_after_attempt(attempts), wait=wait_exponential(multiplier=0.5, max=8), reraise=True)(
        backend.terminate
    )(pod_id)
