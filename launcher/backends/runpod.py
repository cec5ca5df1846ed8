"""The RunPod backend: pods from the GraphQL API (runpod_api.py), commands over SSH.

Quirks handled here, where they live:
- ``runtime`` is null for minutes while a large image is pulled, and ``desiredStatus`` says RUNNING
  long before sshd answers: readiness is a public TCP mapping of port 22, then an SSH banner, then an
  authenticated command.
- ``runtime.ports`` lists udp, http and private entries for the same private port: only
  ``privatePort 22, type tcp, isIpPublic true`` is SSH. The endpoint is always read from the pod's
  current runtime, never remembered from an earlier run.
- Capacity errors come back as HTTP 200 with ``errors``; the next GPU of the user's list (or cloud
  type ALL) is tried before giving up.
- "pod not found to terminate" means it is already gone.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable
from typing import Any

from launcher.backends.base import Pod, PodRequest, SSHEndpoint
from launcher.backends.http import RetryPolicy
from launcher.backends.runpod_api import RunPodAPI, RunPodError
from launcher.catalog import resolve_gpu
from launcher.config import Settings
from launcher.errors import ProviderError, UsageError
from launcher.executor.ssh import HostKeyMismatch, SSHExecutor
from launcher.keys import JobKeys

#: RunPod's desiredStatus -> rtrain's pod status (base.POD_STATUSES); unknown words map to "unknown".
STATUS = {"CREATED": "pending", "RUNNING": "running", "RESTARTING": "pending", "EXITED": "exited",
          "PAUSED": "exited", "DEAD": "exited", "TERMINATED": "terminated"}
POD_PREFIX = "rtrain-"
ROOT = "/workspace/rtrain"


def ssh_endpoint(raw: dict[str, Any]) -> tuple[SSHEndpoint | None, str]:
    """The pod's SSH endpoint from its current runtime, or None and what is missing."""
    runtime = raw.get("runtime")
    if not runtime:
        return None, "the container is not running yet (image pulling or starting: no runtime reported)"
    ports = runtime.get("ports") or []
    for p in ports:
        if p.get("privatePort") == 22 and p.get("type") == "tcp" and p.get("isIpPublic") and p.get("ip"):
            return SSHEndpoint(host=str(p["ip"]), port=int(p["publicPort"]), user="root"), "ssh mapped"
    seen = [f"{p.get('privatePort')}/{p.get('type')}{'' if p.get('isIpPublic') else ' (private)'}" for p in ports]
    return None, f"no public TCP mapping for port 22 yet (ports: {', '.join(seen) or 'none'})"


def wait_for_banner(host: str, port: int, timeout: float = 5.0) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout) as s:
            s.settimeout(timeout)
            return s.recv(64).startswith(b"SSH-")
    except OSError:
        return False


class RunPodBackend:
    name = "runpod"
    shares_filesystem = False
    uses_ssh = True

    def __init__(self, settings: Settings) -> None:
        if settings.runpod_api_key is None or not settings.runpod_api_key.get_secret_value():
            raise UsageError("RUNPOD_API_KEY is not set (export it, or put it in .env)")
        self.settings = settings
        self.api = RunPodAPI(settings.runpod_api_url, settings.runpod_api_key.get_secret_value(),
                             policy=RetryPolicy(attempts=settings.api_retries))

    def _pod(self, raw: dict[str, Any]) -> Pod:
        endpoint, _ = ssh_endpoint(raw)
        return Pod(id=str(raw["id"]), name=str(raw.get("name") or ""),
                   status=STATUS.get(str(raw.get("desiredStatus")), "unknown"),
                   price_per_hr=float(raw.get("costPerHr") or 0.0), ssh=endpoint, root=ROOT,
                   extra={"gpu": (raw.get("machine") or {}).get("gpuDisplayName")})

    def _deploy_input(self, request: PodRequest, gpu_id: str, cloud: str) -> dict[str, Any]:
        env = {"PUBLIC_KEY": request.public_key or "", "RTRAIN_SSH_HOST_KEY": request.host_private_key or ""}
        env.update(request.env)
        s = self.settings
        return {
            "name": request.name, "imageName": s.image, "gpuTypeId": gpu_id, "gpuCount": request.gpu_count,
            "cloudType": cloud, "containerDiskInGb": s.container_disk_gb, "volumeInGb": s.volume_gb,
            "volumeMountPath": "/workspace", "ports": "22/tcp", "supportPublicIp": True, "startSsh": False,
            "env": [{"key": k, "value": v} for k, v in env.items() if v],
        }

    def create(self, request: PodRequest) -> Pod:
        clouds = [self.settings.runpod_cloud_type]
        if self.settings.runpod_cloud_fallback and "ALL" not in clouds:
            clouds.append("ALL")
        full: list[str] = []
        for alias in request.gpus:
            gpu_id = resolve_gpu(alias, "runpod").runpod
            assert gpu_id is not None
            for cloud in clouds:
                try:
                    return self._pod(self.api.deploy_on_demand(self._deploy_input(request, gpu_id, cloud)))
                except RunPodError as exc:
                    if not exc.is_capacity:
                        raise
                    full.append(f"{alias} ({cloud.lower()} cloud)")
        raise ProviderError(f"RunPod has no capacity for {', '.join(full)}: no pod was created; try other GPUs "
                            "(--gpu h100,h100-pcie,a100 tries them in order) or later")

    def get(self, pod_id: str) -> Pod | None:
        raw = self.api.pod(pod_id)
        if raw is None or raw.get("desiredStatus") == "TERMINATED":
            return None
        return self._pod(raw)

    def wait_ready(self, pod: Pod, keys: JobKeys | None, *, deadline_s: float,
                   on_state: Callable[[str], None] | None = None) -> Pod:
        """Poll until the pod runs a command over SSH: a public TCP port 22, a banner, a login."""
        assert keys is not None
        start = time.monotonic()
        deadline = start + deadline_s
        delay, last = 0.3, ""

        def note(state: str) -> None:
            nonlocal last
            if state != last:
                last = state
                if on_state:
                    on_state(state)

        while True:
            raw = self.api.pod(pod.id)
            if raw is None:
                raise ProviderError(f"pod {pod.id} disappeared while starting (RunPod no longer knows it)")
            status = str(raw.get("desiredStatus"))
            if status in ("EXITED", "DEAD", "TERMINATED", "PAUSED"):
                raise ProviderError(f"pod {pod.id} stopped while starting (desiredStatus {status})")
            endpoint, why = ssh_endpoint(raw)
            if endpoint is None:
                note(why)
            elif not wait_for_banner(endpoint.host, endpoint.port):
                note(f"sshd not answering on {endpoint.host}:{endpoint.port} yet")
            else:
                note(f"logging in to {endpoint.host}:{endpoint.port}")
                ready = self._try_login(pod, raw, endpoint, keys)
                if ready is not None:
                    return ready
                note(f"sshd on {endpoint.host}:{endpoint.port} does not accept the job's key yet")
            if time.monotonic() + delay > deadline:
                raise ProviderError(f"pod {pod.id} was not ready after {deadline_s:.0f}s; last seen: {last}")
            time.sleep(delay)
            delay = min(delay * 1.6, 5.0)

    def _try_login(self, pod: Pod, raw: dict[str, Any], endpoint: SSHEndpoint, keys: JobKeys) -> Pod | None:
        import paramiko

        ex = SSHExecutor(endpoint, keys, python=self.settings.remote_python, connect_timeout=10, reconnect_for_s=0)
        try:
            if ex.run("true", timeout=30).ok:
                ready = self._pod(raw)
                ready.ssh = endpoint
                return ready
        except HostKeyMismatch:
            raise  # not a matter of waiting: somebody else answers at that address
        except (ProviderError, paramiko.SSHException, OSError, EOFError):
            return None
        finally:
            ex.close()
        return None

    def executor(self, pod: Pod, keys: JobKeys | None) -> SSHExecutor:
        if pod.ssh is None or keys is None:
            raise ProviderError(f"pod {pod.id} has no SSH endpoint or keys: wait for it first")
        return SSHExecutor(pod.ssh, keys, python=self.settings.remote_python)

    def terminate(self, pod_id: str) -> None:
        self.api.terminate(pod_id)

    def list(self) -> list[Pod]:
        return [self._pod(raw) for raw in self.api.my_pods()
                if str(raw.get("name") or "").startswith(POD_PREFIX) and raw.get("desiredStatus") != "TERMINATED"]
