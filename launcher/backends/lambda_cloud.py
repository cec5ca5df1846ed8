"""The Lambda Cloud backend: instances from the REST API (lambda_api.py), commands over SSH, the trainer
in rtrain's own image under Docker (launcher/runtime.py).

Quirks handled here, where they live:
- Launches are rate limited (about one per 12 s) and fail with ``insufficient-capacity`` when no
  machine is free: capacity is read from ``/instance-types`` (``regions_with_capacity_available``)
  first, and only a GPU with a region that has capacity is launched.
- An instance takes exactly one registered SSH key by name: each job registers its own public key
  (``rtrain-<job>``) and deletes it at teardown; a key left registered is a leftover, shown by
  ``rtrain ls --pods``.
- The host key is handed over in cloud-init ``user_data`` (``ssh_keys.ed25519_private/public``,
  ``ssh_deletekeys``), so the first connection already checks a key rtrain made.
- The user is ``ubuntu``, SSH is on port 22 of the instance's ``ip``, which is null while it boots.
- There is no stop and no spot: an instance bills until it is terminated through the API.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ClassVar

from launcher.backends.base import Leftover, NoCapacity, Pod, PodRequest, SSHEndpoint, api_key_of, connect_api
from launcher.backends.lambda_api import LambdaAPI, LambdaError
from launcher.backends.ssh_ready import wait_for_ssh
from launcher.catalog import catalog, resolve_gpu
from launcher.config import Settings
from launcher.errors import PodLost, ProviderError
from launcher.executor.ssh import SSHExecutor
from launcher.keys import JobKeys
from launcher.runtime import DockerImage

if TYPE_CHECKING:
    from launcher.pricing import PriceTable

#: Lambda's instance status -> rtrain's pod status (base.POD_STATUSES)
STATUS = {"booting": "pending", "active": "running", "unhealthy": "lost", "preempted": "lost",
          "terminating": "terminated", "terminated": "terminated"}
PREFIX = "rtrain-"
ROOT = "/home/ubuntu/rtrain"
NAME_MAX = 64  # Lambda's limit on an instance name


def instance_type(types: dict[str, Any], alias: str, count: int) -> str | None:
    """The instance type with ``count`` of the GPU ``alias`` (``gpu_1x_h100_sxm5``, ``gpu_8x_a100_80gb_sxm4``),
    among those Lambda lists; None when it has none."""
    one = resolve_gpu(alias, "lambda").provider_id("lambda")
    assert one is not None
    return next((name for name, entry in types.items() if gpu_kind(name) == gpu_kind(one)
                 and _per_gpu(entry)[0] == count), None)


def cloud_init(host_private_key: str, host_public_key: str) -> str:
    """cloud-init user_data that makes rtrain's host key the instance's only one."""
    private = "\n".join(f"    {line}" for line in host_private_key.strip().splitlines())
    return ("#cloud-config\n"
            "ssh_deletekeys: true\n"
            "ssh_genkeytypes: []\n"
            "ssh_keys:\n"
            "  ed25519_private: |\n"
            f"{private}\n"
            f"  ed25519_public: {host_public_key.strip()}\n")


def gpu_kind(instance_type_name: str) -> str:
    """``gpu_8x_a100_80gb_sxm4`` and ``gpu_1x_a100_sxm4`` are the same GPU: ``a100_sxm4``."""
    return re.sub(r"^gpu_\d+x_", "", instance_type_name).replace("_80gb", "")


def _per_gpu(entry: dict[str, Any]) -> tuple[int, float]:
    it = entry["instance_type"]
    gpus = max(int((it.get("specs") or {}).get("gpus") or 1), 1)
    return gpus, float(it["price_cents_per_hour"]) / 100 / gpus


class LambdaBackend:
    name: ClassVar[str] = "lambda"
    title: ClassVar[str] = "Lambda Cloud"
    key_env: ClassVar[str | None] = "LAMBDA_API_KEY"
    shares_filesystem: ClassVar[bool] = False
    uses_ssh: ClassVar[bool] = True
    lacks: ClassVar[dict[str, str]] = {
        "spot": "Lambda Cloud rents no interruptible instances",
        "stop_resume": "Lambda Cloud instances cannot be stopped, only terminated",
        "watchdog": "a Lambda Cloud instance can only be ended through the API with your key, which rtrain never "
                    "puts on a machine (shutting it down does not stop the billing)",
    }

    def __init__(self, settings: Settings, *, quick: bool = False) -> None:
        self.settings = settings
        self.api: LambdaAPI = connect_api(self, settings, LambdaAPI, settings.lambda_api_url, quick=quick)

    @classmethod
    def api_key(cls, settings: Settings) -> str | None:
        return api_key_of(settings, "lambda_api_key")

    # prices -----------------------------------------------------------------------------------

    @classmethod
    def price(cls, prices: dict[str, float], settings: Settings, spot: bool = False) -> float | None:
        return None if spot else prices.get("on_demand")

    def resume(self, pod_id: str, request: PodRequest) -> Pod:
        raise ProviderError(self.lacks["stop_resume"])

    def live_prices(self) -> PriceTable:
        """Per GPU, from the smallest instance of each kind (some GPUs come only 8 to an instance)."""
        from launcher.pricing import PriceTable

        types = self.api.instance_types()
        detail = {}
        for alias, gpu in catalog().items():
            one = gpu.provider_id(self.name)
            offers = [_per_gpu(e) for n, e in types.items() if one and gpu_kind(n) == gpu_kind(one)]
            if offers:
                detail[alias] = {"on_demand": min(offers)[1]}
        return PriceTable.of(self.name, detail, self.settings, "live from Lambda Cloud")

    # instances --------------------------------------------------------------------------------

    def _pod(self, raw: dict[str, Any]) -> Pod:
        word = str(raw.get("status") or "")
        it = raw.get("instance_type") or {}
        ip = raw.get("ip")
        return Pod(id=str(raw["id"]), name=str(raw.get("name") or ""), status=STATUS.get(word, "unknown"),
                   price_per_hr=float(it.get("price_cents_per_hour") or 0) / 100,
                   ssh=SSHEndpoint(str(ip), 22, "ubuntu") if ip and word == "active" else None, root=ROOT,
                   gpu=str(it.get("description") or it.get("name") or ""), provider_status=word)

    def _register_key(self, request: PodRequest) -> str:
        name = f"{PREFIX}{request.job_id}"
        existing = next((k for k in self.api.ssh_keys() if k.get("name") == name), None)
        if existing is not None and (existing.get("public_key") or "").split()[:2] != \
                (request.public_key or "").split()[:2]:
            self.api.delete_ssh_key(str(existing["id"]))  # a stale key of an earlier try: replace it
            existing = None
        if existing is None:
            self.api.add_ssh_key(name, request.public_key or "")
        return name

    def create(self, request: PodRequest) -> Pod:
        if not request.public_key or not request.host_private_key or not request.host_public_key:
            raise ProviderError("a Lambda Cloud instance needs the job's client key and host key")
        types = self.api.instance_types()
        tried: list[str] = []
        key_name: str | None = None
        try:
            for alias in request.gpus:
                name = instance_type(types, alias, request.gpu_count)
                if name is None:
                    tried.append(f"{alias} x{request.gpu_count} (no such instance type)")
                    continue
                entry = types[name]
                regions = [str(r.get("name")) for r in entry.get("regions_with_capacity_available") or []]
                if request.region:
                    regions = [r for r in regions if r == request.region]
                where = f"in {request.region}" if request.region else "in any region"
                if not regions:
                    tried.append(f"{alias} ({where})")
                    continue
                key_name = key_name or self._register_key(request)
                try:
                    instance_id = self.api.launch(region=regions[0], instance_type=name, ssh_key=key_name,
                                                  name=request.name[:NAME_MAX],
                                                  user_data=cloud_init(request.host_private_key,
                                                                       request.host_public_key))
                except LambdaError as exc:
                    if not exc.is_capacity:  # capacity gone since the look: the next GPU
                        raise
                    tried.append(f"{alias} ({regions[0]}, taken meanwhile)")
                    continue
                return Pod(id=instance_id, name=request.name[:NAME_MAX], status="pending",
                           price_per_hr=float(entry["instance_type"]["price_cents_per_hour"]) / 100, root=ROOT,
                           gpu=str(entry["instance_type"].get("description") or name), provider_status="booting")
        except BaseException:
            self.release(request.job_id)
            raise
        self.release(request.job_id)
        raise NoCapacity(f"Lambda Cloud has no capacity for {', '.join(tried)}: no instance was launched; try "
                         "other GPUs (--gpu h100,a100 tries them in order), another --region, or later")

    def get(self, pod_id: str) -> Pod | None:
        raw = self.api.instance(pod_id)
        if raw is None or STATUS.get(str(raw.get("status"))) == "terminated":
            return None
        return self._pod(raw)

    def wait_ready(self, pod: Pod, keys: JobKeys | None, *, deadline_s: float,
                   on_state: Callable[[str], None] | None = None) -> Pod:
        assert keys is not None
        latest: dict[str, Any] = {}

        def poll() -> tuple[SSHEndpoint | None, str]:
            raw = self.api.instance(pod.id)
            if raw is None:
                raise PodLost(f"instance {pod.id} disappeared while starting (Lambda Cloud no longer knows it)")
            word = str(raw.get("status"))
            if STATUS.get(word) in ("lost", "terminated"):
                raise PodLost(f"instance {pod.id} is {word} (Lambda Cloud) while starting")
            latest.update(raw)
            current = self._pod(raw)
            if current.ssh is None:
                return None, f"the instance is {word or 'starting'} (no IP yet)" if not raw.get("ip") else \
                    f"the instance is {word} at {raw['ip']}"
            return current.ssh, "ssh mapped"

        endpoint = wait_for_ssh(f"instance {pod.id}", poll, keys, deadline_s=deadline_s, on_state=on_state)
        ready = self._pod(latest)
        ready.ssh = endpoint
        return ready

    def executor(self, pod: Pod, keys: JobKeys | None) -> SSHExecutor:
        if pod.ssh is None or keys is None:
            raise ProviderError(f"instance {pod.id} has no SSH endpoint or keys: wait for it first")
        return SSHExecutor(pod.ssh, keys, python="python3")

    def runtime(self, pod: Pod) -> DockerImage:
        return DockerImage(self.settings.image, pod.root)

    def terminate(self, pod_id: str) -> None:
        raw = self.api.instance(pod_id)
        self.api.terminate(pod_id)
        for key in (raw or {}).get("ssh_key_names") or []:  # an orphan's key goes with it
            if str(key).startswith(PREFIX):
                self._delete_key_named(str(key))

    def release(self, job_id: str) -> None:
        self._delete_key_named(f"{PREFIX}{job_id}")

    def _delete_key_named(self, name: str) -> None:
        for key in self.api.ssh_keys():
            if key.get("name") == name:
                self.api.delete_ssh_key(str(key["id"]))

    def list(self) -> list[Pod]:
        return [self._pod(raw) for raw in self.api.instances()
                if str(raw.get("name") or "").startswith(PREFIX) and STATUS.get(str(raw.get("status"))) != "terminated"]

    def leftovers(self) -> list[Leftover]:
        """rtrain's registered SSH keys that no live instance uses."""
        in_use = {str(k) for raw in self.api.instances() if STATUS.get(str(raw.get("status"))) != "terminated"
                  for k in raw.get("ssh_key_names") or []}
        return [Leftover(self.name, "ssh-key", str(k["id"]), str(k["name"])) for k in self.api.ssh_keys()
                if str(k.get("name") or "").startswith(PREFIX) and str(k["name"]) not in in_use]

    def remove(self, leftover: Leftover) -> None:
        self.api.delete_ssh_key(leftover.id)
