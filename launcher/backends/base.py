"""The backend contract, the ``Pod`` every backend returns, and what a backend says about itself.

A backend is one class in one module (registered in launcher/backends/__init__.py). It owns its
name, its credential check, its API client, its prices, its pods (orphans included), what it keeps
for a job besides the machine, how the trainer runs on its machines, and what it cannot do (with a
reason the CLI prints). Nobody outside asks "is this RunPod?".
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

from launcher.errors import ProviderError
from launcher.executor.base import Executor
from launcher.keys import JobKeys

if TYPE_CHECKING:
    from launcher.config import Settings
    from launcher.pricing import PriceTable
    from launcher.runtime import TrainerRuntime

#: Pod statuses as rtrain sees them; each backend maps its provider's words onto these through a table.
#: ``exited``: stopped, its disk kept (it may be resumed); ``lost``: gone with its disk (preempted,
#: failed); ``terminated``: ended on purpose.
POD_STATUSES = ("pending", "running", "exited", "lost", "terminated", "unknown")

#: Features a backend may lack; ``Backend.lacks`` maps the missing ones to the reason.
FEATURES = ("spot", "stop_resume", "watchdog", "keep_pod", "injected_host_key")


class NoCapacity(ProviderError):
    """The provider has no machine of that kind free right now (nothing was created)."""


@dataclass(frozen=True)
class SSHEndpoint:
    host: str
    port: int
    user: str


@dataclass
class Pod:
    id: str
    name: str
    status: str
    price_per_hr: float = 0.0
    ssh: SSHEndpoint | None = None
    #: The folder on the machine under which rtrain keeps blobs and job folders.
    root: str = "/workspace/rtrain"
    #: The GPU as the provider names it, for the user.
    gpu: str = ""
    #: The provider's own words for the status (shown when it matters: "preempted", "unhealthy").
    provider_status: str = ""


@dataclass
class PodRequest:
    job_id: str
    name: str
    #: GPU aliases in the order to try them (the next one when a provider has no capacity)
    gpus: list[str]
    gpu_count: int
    public_key: str | None = None
    host_private_key: str | None = None
    host_public_key: str | None = None
    region: str | None = None
    #: interruptible (spot) capacity, for providers that do not lack "spot"
    spot: bool = False
    env: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Leftover:
    """Something rtrain made at a provider that outlived its machine (a registered SSH key): a leak
    too, shown by ``rtrain ls --pods`` and removed by ``rtrain down``."""

    backend: str
    kind: str
    id: str
    name: str


class Backend(Protocol):
    name: ClassVar[str]
    #: The provider's name for people ("RunPod").
    title: ClassVar[str]
    #: The environment variable that holds its API key (None: it needs none).
    key_env: ClassVar[str | None]
    #: True when the machine sees this machine's files (local): a local model folder is used in place.
    shares_filesystem: ClassVar[bool]
    #: True when commands go over SSH: the job gets its own client key and a pinned host key.
    uses_ssh: ClassVar[bool]
    #: feature (FEATURES) -> why this provider cannot do it; absent features it can.
    lacks: ClassVar[dict[str, str]]

    @classmethod
    def api_key(cls, settings: Settings) -> str | None:
        """The API key from the settings; an empty key is no key."""
        ...

    @classmethod
    def price(cls, prices: dict[str, float], settings: Settings, spot: bool = False) -> float | None:
        """The price per GPU-hour rtrain would pay (on demand, or spot), from the kinds known for a GPU."""
        ...

    def live_prices(self) -> PriceTable:
        """Prices from the provider's API."""
        ...

    def create(self, request: PodRequest) -> Pod:
        """Ask for a machine; returns at once (readiness is waited for separately). NoCapacity when
        none of the requested GPUs is free (nothing created)."""
        ...

    def get(self, pod_id: str) -> Pod | None:
        """The pod's current state, or None when the provider no longer knows it."""
        ...

    def resume(self, pod_id: str, request: PodRequest) -> Pod:
        """Boot a stopped (exited) pod again, its disk kept; NoCapacity when its host has no room.
        Only for providers that do not lack "stop_resume"."""
        ...

    def wait_ready(self, pod: Pod, keys: JobKeys | None, *, deadline_s: float,
                   on_state: Callable[[str], None] | None = None) -> Pod:
        """Block until commands can run on the pod (SSH up and authenticated), or raise. ``on_state``
        hears each new thing waited for."""
        ...

    def executor(self, pod: Pod, keys: JobKeys | None) -> Executor:
        """An executor for a ready pod."""
        ...

    def runtime(self, pod: Pod) -> TrainerRuntime:
        """How the trainer's python runs on this pod."""
        ...

    def terminate(self, pod_id: str) -> None:
        """End the pod and its billing. Idempotent: a pod already gone counts as terminated."""
        ...

    def release(self, job_id: str) -> None:
        """Remove what the provider keeps for a job besides its machine (idempotent)."""
        ...

    def list(self) -> list[Pod]:
        """rtrain's pods (by name prefix) that the provider knows."""
        ...

    def leftovers(self) -> list[Leftover]:
        """What rtrain made at the provider that outlived its machine."""
        ...

    def remove(self, leftover: Leftover) -> None:
        """Delete one leftover."""
        ...


def connect_api(backend: Any, settings: Settings, api_class: Callable[..., Any], url: str, *, quick: bool) -> Any:
    """A cloud backend's API client: its key (a UsageError naming the variable when it is unset or
    empty), with rtrain's retry rules (the quick policy for a listing or a price lookup)."""
    from launcher.backends.http import RetryPolicy
    from launcher.errors import UsageError

    key = backend.api_key(settings)
    if key is None:
        raise UsageError(f"{backend.key_env} is not set (export it, or put it in .env)")
    policy = RetryPolicy.quick() if quick else RetryPolicy(attempts=settings.api_retries)
    return api_class(url, key, policy=policy)


def api_key_of(settings: Any, field_name: str) -> str | None:
    """A SecretStr setting's value, None when unset or empty (``RUNPOD_API_KEY=`` is no key)."""
    secret = getattr(settings, field_name, None)
    value = secret.get_secret_value().strip() if secret is not None else ""
    return value or None
