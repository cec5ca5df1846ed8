"""Backends give a job a machine. One Protocol (base.py); providers' quirks stay in their modules."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from launcher.backends.base import Backend
    from launcher.config import Settings


def get_backend(name: str, settings: Settings) -> Backend:
    """The backend called ``name``; imported lazily so that a laptop loads only what it uses."""
    if name == "local":
        from launcher.backends.local import LocalBackend

        return LocalBackend(settings)
    if name == "runpod":
        from launcher.backends.runpod import RunPodBackend

        return RunPodBackend(settings)
    from launcher.errors import UsageError

    raise UsageError(f"--backend {name}: not available in this version of rtrain (use --local or --backend runpod)")
