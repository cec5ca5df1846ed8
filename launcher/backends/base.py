"""The backend contract and the ``Pod`` every backend returns."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from launcher.executor.base import Executor
from launcher.keys import JobKeys

#: Pod statuses as rtrain sees them; each backend maps its provider's words onto these.
POD_STATUSES = ("pending", "running", "exited", "terminated", "unknown")


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
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class PodRequest:
    job_id: str
    name: str
    #: GPU aliases in the order to try them (the next one when a provider has no capacity)
    gpus: list[str]
    gpu_count: int
    public_key: str | None = None
    host_private_key: str | None = None
    env: dict[str, str] = field(default_factory=dict)


class Backend(Protocol):
    name: str
    #: True when the machine sees this machine's files (local): a local model folder is used in place.
    shares_filesystem: bool
    #: True when commands go over SSH: the job gets its own client key and a pinned host key.
    uses_ssh: bool

    def create(self, request: PodRequest) -> Pod:
        """Ask for a machine; returns at once (readiness is waited for separately)."""
        ...

    def get(self, pod_id: str) -> Pod | None:
        """The pod's current state, or None when the provider no longer knows it."""
        ...

    def wait_ready(self, pod: Pod, keys: JobKeys | None, *, deadline_s: float,
                   on_state: Callable[[str], None] | None = None) -> Pod:
        """Block until commands can run on the pod (SSH up and authenticated), or raise. ``on_state``
        hears each new thing waited for."""
        ...

    def executor(self, pod: Pod, keys: JobKeys | None) -> Executor:
        """An executor for a ready pod."""
        ...

    def terminate(self, pod_id: str) -> None:
        """End the pod and its billing. Idempotent: a pod already gone counts as terminated."""
        ...

    def list(self) -> list[Pod]:
        """rtrain's pods (by name prefix) that the provider knows."""
        ...
