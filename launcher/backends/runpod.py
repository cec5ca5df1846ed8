"""The RunPod backend: pods from the GraphQL API (runpod_api.py), commands over SSH.

Quirks handled here, where they live:
- ``runtime`` is null for minutes while a large image is pulled, and ``desiredStatus`` says RUNNING
  long before sshd answers: readiness is a public TCP mapping of port 22, then an SSH banner, then an
  authenticated command (launcher/backends/ssh_ready.py).
- ``runtime.ports`` lists udp, http and private entries for the same private port: only
  ``privatePort 22, type tcp, isIpPublic true`` is SSH. The endpoint is always read from the pod's
  current runtime, never remembered from an earlier run.
- Capacity errors come back as HTTP 200 with ``errors``; the next GPU of the user's list (or cloud
  type ALL) is tried before giving up.
- "pod not found to terminate" means it is already gone.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ClassVar

from launcher.backends.base import NoCapacity, Pod, PodRequest, SSHEndpoint, api_key_of, connect_api
from launcher.backends.runpod_api import RunPodAPI, RunPodError
from launcher.backends.ssh_ready import wait_for_ssh
from launcher.catalog import catalog, resolve_gpu
from launcher.config import Settings
from launcher.errors import PodLost, ProviderError
from launcher.executor.ssh import SSHExecutor
from launcher.keys import JobKeys
from launcher.runtime import PlainPython

if TYPE_CHECKING:
    from launcher.backends.base import Leftover
    from launcher.pricing import PriceTable

#: RunPod's desiredStatus -> rtrain's pod status (base.POD_STATUSES); unknown words map to "unknown".
STATUS = {"CREATED": "pending", "RUNNING": "running", "RESTARTING": "pending", "EXITED": "exited",
          "PAUSED": "exited", "DEAD": "lost", "TERMINATED": "terminated"}
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


class RunPodBackend:
    name: ClassVar[str] = "runpod"
    title: ClassVar[str] = "RunPod"
    key_env: ClassVar[str | None] = "RUNPOD_API_KEY"
    shares_filesystem: ClassVar[bool] = False
    uses_ssh: ClassVar[bool] = True
    lacks: ClassVar[dict[str, str]] = {}

    def __init__(self, settings: Settings, *, quick: bool = False) -> None:
        self.settings = settings
        self.api: RunPodAPI = connect_api(self, settings, RunPodAPI, settings.runpod_api_url, quick=quick)

    @classmethod
    def api_key(cls, settings: Settings) -> str | None:
        return api_key_of(settings, "runpod_api_key")

    # prices -----------------------------------------------------------------------------------

    @classmethod
    def price(cls, prices: dict[str, float], settings: Settings, spot: bool = False) -> float | None:
        """The price of the cloud type rtrain asks for (ALL: the cheaper of secure and community); spot:
        the live spot price (the bundled catalog has none)."""
        if spot:
            return cls.bid_for(prices["spot"]) if prices.get("spot") else None
        cloud = settings.runpod_cloud_type
        if cloud == "COMMUNITY":
            return prices.get("community") or prices.get("secure")
        if cloud == "ALL":
            options = [v for k, v in prices.items() if k in ("secure", "community") and v]
            return min(options) if options else None
        return prices.get("secure") or prices.get("community")

    def live_prices(self) -> PriceTable:
        from launcher.pricing import PriceTable

        by_id = {g["id"]: g for g in self.api.gpu_types()}
        detail = {}
        for alias, gpu in catalog().items():
            g = by_id.get(gpu.provider_id(self.name) or "")
            if g:
                kinds = {"secure": g.get("securePrice"), "community": g.get("communityPrice"),
                         "spot": g.get("secureSpotPrice") or g.get("communitySpotPrice")}
                detail[alias] = {k: float(v) for k, v in kinds.items() if v}
        return PriceTable.of(self.name, detail, self.settings, "live from RunPod")

    # pods -------------------------------------------------------------------------------------

    def _pod(self, raw: dict[str, Any]) -> Pod:
        endpoint, _ = ssh_endpoint(raw)
        word = str(raw.get("desiredStatus"))
        return Pod(id=str(raw["id"]), name=str(raw.get("name") or ""), status=STATUS.get(word, "unknown"),
                   price_per_hr=float(raw.get("costPerHr") or 0.0), ssh=endpoint, root=ROOT,
                   gpu=str((raw.get("machine") or {}).get("gpuDisplayName") or ""), provider_status=word)

    def _deploy_input(self, request: PodRequest, gpu_id: str, cloud: str) -> dict[str, Any]:
        env = {"PUBLIC_KEY": request.public_key or "", "RTRAIN_SSH_HOST_KEY": request.host_private_key or ""}
        env.update(request.env)
        s = self.settings
        deploy = {
            "name": request.name, "imageName": s.image, "gpuTypeId": gpu_id, "gpuCount": request.gpu_count,
            "cloudType": cloud, "containerDiskInGb": s.container_disk_gb, "volumeInGb": s.volume_gb,
            "volumeMountPath": "/workspace", "ports": "22/tcp", "supportPublicIp": True, "startSsh": False,
            "env": [{"key": k, "value": v} for k, v in env.items() if v],
        }
        if request.region:
            deploy["dataCenterId"] = request.region
        return deploy

    @staticmethod
    def bid_for(spot_price: float) -> float:
        """What rtrain bids (and pays) per GPU-hour for a spot pod: 10% over the spot price, rounded up to
        a cent, so that small swings of the market do not take the pod; still far below on demand."""
        return math.ceil(float(spot_price) * 1.10 * 100 - 1e-9) / 100

    def spot_bid(self, gpu_id: str) -> float:
        live = next(iter(self.api.gpu_types(gpu_id)), {})
        spot = live.get("secureSpotPrice") or live.get("communitySpotPrice")
        if not spot:
            raise NoCapacity(f"RunPod quotes no spot price for {gpu_id} right now: no spot pod was created")
        return self.bid_for(float(spot))

    def create(self, request: PodRequest) -> Pod:
        clouds = [self.settings.runpod_cloud_type]
        if self.settings.runpod_cloud_fallback and "ALL" not in clouds:
            clouds.append("ALL")
        full: list[str] = []
        for alias in request.gpus:
            gpu_id = resolve_gpu(alias, self.name).provider_id(self.name)
            assert gpu_id is not None
            bid = self.spot_bid(gpu_id) if request.spot else None
            for cloud in clouds:
                deploy = self._deploy_input(request, gpu_id, cloud)
                try:
                    if bid is None:
                        return self._pod(self.api.deploy_on_demand(deploy))
                    return self._pod(self.api.deploy_spot({**deploy, "bidPerGpu": bid}))
                except RunPodError as exc:
                    if not exc.is_capacity:
                        raise
                    full.append(f"{alias} ({cloud.lower()} cloud{', spot' if bid else ''})")
        raise NoCapacity(f"RunPod has no capacity for {', '.join(full)}: no pod was created; try other GPUs "
                         "(--gpu h100,h100-pcie,a100 tries them in order) or later")

    def resume(self, pod_id: str, request: PodRequest) -> Pod:
        """podResume (podBidResume for a spot pod): the same pod, its /workspace volume kept, on new port
        mappings (readiness reads them again)."""
        bid = None
        if request.spot:
            gpu_id = resolve_gpu(request.gpus[0], self.name).provider_id(self.name) if request.gpus else None
            bid = self.spot_bid(gpu_id) if gpu_id else None
        try:
            return self._pod(self.api.resume(pod_id, request.gpu_count, bid))
        except RunPodError as exc:
            if exc.is_capacity:
                raise NoCapacity(f"RunPod cannot resume pod {pod_id}: {'; '.join(exc.messages)}") from None
            raise

    def get(self, pod_id: str) -> Pod | None:
        raw = self.api.pod(pod_id)
        if raw is None or raw.get("desiredStatus") == "TERMINATED":
            return None
        return self._pod(raw)

    def wait_ready(self, pod: Pod, keys: JobKeys | None, *, deadline_s: float,
                   on_state: Callable[[str], None] | None = None) -> Pod:
        assert keys is not None
        latest: dict[str, Any] = {}

        def poll() -> tuple[SSHEndpoint | None, str]:
            raw = self.api.pod(pod.id)
            if raw is None:
                raise PodLost(f"pod {pod.id} disappeared while starting (RunPod no longer knows it)")
            status = str(raw.get("desiredStatus"))
            if STATUS.get(status) in ("exited", "lost", "terminated"):
                raise PodLost(f"pod {pod.id} stopped while starting (desiredStatus {status})",
                              resumable=STATUS.get(status) == "exited")
            latest.update(raw)
            return ssh_endpoint(raw)

        endpoint = wait_for_ssh(f"pod {pod.id}", poll, keys, deadline_s=deadline_s, python=self.settings.remote_python,
                                on_state=on_state)
        ready = self._pod(latest)
        ready.ssh = endpoint
        return ready

    def executor(self, pod: Pod, keys: JobKeys | None) -> SSHExecutor:
        if pod.ssh is None or keys is None:
            raise ProviderError(f"pod {pod.id} has no SSH endpoint or keys: wait for it first")
        return SSHExecutor(pod.ssh, keys, python=self.settings.remote_python)

    def runtime(self, pod: Pod) -> PlainPython:
        return PlainPython(self.settings.remote_python)  # the pod boots rtrain's image

    def terminate(self, pod_id: str) -> None:
        self.api.terminate(pod_id)

    def release(self, job_id: str) -> None:
        """RunPod keeps nothing for a job but its pod (the keys travel in the pod's environment)."""

    def list(self) -> list[Pod]:
        return [self._pod(raw) for raw in self.api.my_pods()
                if str(raw.get("name") or "").startswith(POD_PREFIX) and raw.get("desiredStatus") != "TERMINATED"]

    def leftovers(self) -> list[Leftover]:
        return []

    def remove(self, leftover: Leftover) -> None:
        raise ProviderError(f"RunPod has no {leftover.kind} to remove")
