"""Backends give a job a machine: a registry of provider modules, each one class (base.Backend).

Adding a provider is one module, its line in ``REGISTRY`` and its ids and prices in
``launcher/data/gpus.json``; the CLI, the plan and the pricing ask this registry, never a provider by
name. Modules are imported only when used, so a laptop loads only what it runs.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from launcher.backends.base import Backend, Leftover, Pod
    from launcher.config import Settings

#: backend name -> "module:Class"
REGISTRY: dict[str, str] = {
    "local": "launcher.backends.local:LocalBackend",
    "runpod": "launcher.backends.runpod:RunPodBackend",
    "lambda": "launcher.backends.lambda_cloud:LambdaBackend",
}
#: ``--backend auto``: the cheapest offer that fits and has capacity, among the clouds with a key
AUTO = "auto"


def cloud_names() -> list[str]:
    """The providers that rent machines (every backend but this machine)."""
    return [name for name in REGISTRY if name != "local"]


def backend_class(name: str) -> type[Backend]:
    from launcher.errors import UsageError

    if name not in REGISTRY:
        raise UsageError(f"--backend {name}: unknown (one of: {', '.join([*REGISTRY, AUTO])})")
    module, _, cls = REGISTRY[name].partition(":")
    return getattr(importlib.import_module(module), cls)  # type: ignore[no-any-return]


def get_backend(name: str, settings: Settings, *, quick: bool = False) -> Backend:
    """The backend called ``name``. ``quick``: API calls give up within seconds (price lookups, lists),
    instead of retrying for minutes as a launch does."""
    return backend_class(name)(settings, quick=quick)  # type: ignore[call-arg]


def with_keys(settings: Settings) -> list[str]:
    """The cloud providers whose API key is set (and not empty)."""
    return [name for name in cloud_names() if backend_class(name).api_key(settings)]


def live_pods(settings: Settings) -> tuple[list[tuple[str, Pod]], list[Leftover], list[str]]:
    """rtrain's pods and leftovers on every provider with a key, and a note for each provider skipped
    (no key) or not answering."""
    from launcher.errors import ProviderError

    pods: list[tuple[str, Pod]] = []
    leftovers: list[Leftover] = []
    notes = []
    for name in cloud_names():
        cls = backend_class(name)
        if not cls.api_key(settings):
            notes.append(f"{cls.title}: skipped (no {cls.key_env})")
            continue
        try:
            backend = get_backend(name, settings, quick=True)
            pods += [(name, pod) for pod in backend.list()]
            leftovers += backend.leftovers()
        except ProviderError as exc:
            notes.append(f"{cls.title}: not listed ({exc})")
    return pods, leftovers, notes
