"""A RunPod GraphQL API on loopback that follows PROVIDERS.md, with pods that are real sshd machines.

- The schema is RunPod's (the subset rtrain uses), checked by graphql-core like the real API: an
  unknown field, a missing argument or a value of the wrong type is HTTP 400 with ``errors``;
  failures while running (no capacity, unknown pod) are HTTP 200 with ``errors`` and null data.
- Bearer auth: another key is HTTP 401.
- A created pod reports ``runtime: null`` for ``boot_s``, then a ports list whose first entries are
  the wrong ones (udp, private), then starts sshd (docker/start.sh in its own namespaces, see
  pods.py) ``ssh_delay_s`` later: exactly the order a real pod goes through.
- ``faults`` injects HTTP answers (429 with Retry-After, 500, ...) for the next matching calls.
- ``ledger`` records every pod ever created and its end; ``running()`` must be empty after a test.
- Spot pods (``podRentInterruptable`` with ``bidPerGpu``) and loss: ``preempt(pod)`` turns a pod EXITED
  with every process killed and its ``/workspace`` kept (``podResume``/``podBidResume`` boot it again,
  on a new public port, when ``resume_capacity``); ``kill(pod)`` makes it DEAD (the host failed).
"""

from __future__ import annotations

import json
import os
import secrets
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from itertools import count
from pathlib import Path
from typing import Any

from graphql import GraphQLError, build_schema, graphql_sync, parse, validate
from http_json import send_json
from pods import FakePod, free_port

SDL = """
scalar Void

enum CloudTypeEnum { ALL SECURE COMMUNITY }

input PodFilter { podId: String! }
input PodTerminateInput { podId: String! }
input EnvironmentVariableInput { key: String! value: String! }
input GpuTypeFilter { id: String }
input GpuLowestPriceInput { gpuCount: Int }
input PodFindAndDeployOnDemandInput {
  name: String, imageName: String!, gpuTypeId: String!, gpuCount: Int!, cloudType: CloudTypeEnum,
  containerDiskInGb: Int, volumeInGb: Int, volumeMountPath: String, networkVolumeId: String,
  ports: String, env: [EnvironmentVariableInput], dockerArgs: String, templateId: String,
  dataCenterId: String, countryCode: String, supportPublicIp: Boolean, startSsh: Boolean,
  minVcpuCount: Int, minMemoryInGb: Int, allowedCudaVersions: [String], minDownload: Int, minUpload: Int
}
input PodRentInterruptableInput {
  bidPerGpu: Float!, name: String, imageName: String!, gpuTypeId: String!, gpuCount: Int!,
  cloudType: CloudTypeEnum, containerDiskInGb: Int, volumeInGb: Int, volumeMountPath: String,
  networkVolumeId: String, ports: String, env: [EnvironmentVariableInput], dockerArgs: String,
  templateId: String, dataCenterId: String, countryCode: String, supportPublicIp: Boolean, startSsh: Boolean,
  minVcpuCount: Int, minMemoryInGb: Int, allowedCudaVersions: [String], minDownload: Int, minUpload: Int
}
input PodResumeInput { podId: String!, gpuCount: Int! }
input PodBidResumeInput { podId: String!, bidPerGpu: Float!, gpuCount: Int! }

type Machine { gpuDisplayName: String }
type PodRuntimePorts { ip: String, isIpPublic: Boolean, privatePort: Int, publicPort: Int, type: String }
type PodRuntime { uptimeInSeconds: Int, ports: [PodRuntimePorts] }
type Pod {
  id: String!, name: String, desiredStatus: String, costPerHr: Float, gpuCount: Int, imageName: String,
  env: [String], machine: Machine, runtime: PodRuntime
}
type User { id: String, pods: [Pod] }
type LowestPrice { minimumBidPrice: Float, uninterruptablePrice: Float, stockStatus: String }
type GpuType {
  id: String, displayName: String, memoryInGb: Int, securePrice: Float, communityPrice: Float,
  secureSpotPrice: Float, communitySpotPrice: Float, maxGpuCount: Int,
  lowestPrice(input: GpuLowestPriceInput): LowestPrice
}

type Query {
  myself: User
  pod(input: PodFilter!): Pod
  gpuTypes(input: GpuTypeFilter): [GpuType]
}
type Mutation {
  podFindAndDeployOnDemand(input: PodFindAndDeployOnDemandInput!): Pod
  podRentInterruptable(input: PodRentInterruptableInput!): Pod
  podResume(input: PodResumeInput!): Pod
  podBidResume(input: PodBidResumeInput!): Pod
  podTerminate(input: PodTerminateInput!): Void
}
"""

SCHEMA = build_schema(SDL)
NO_CAPACITY = ("There are no longer any instances available with the requested specifications. "
               "Please refresh and try again.")
GPU_TYPES = [
    {"id": "NVIDIA H100 80GB HBM3", "displayName": "H100 SXM", "memoryInGb": 80, "securePrice": 2.99,
     "communityPrice": 2.69, "secureSpotPrice": 1.75, "communitySpotPrice": 1.5, "maxGpuCount": 8},
    {"id": "NVIDIA H100 PCIe", "displayName": "H100 PCIe", "memoryInGb": 80, "securePrice": 2.39,
     "communityPrice": 1.99, "secureSpotPrice": None, "communitySpotPrice": None, "maxGpuCount": 8},
    {"id": "NVIDIA GeForce RTX 4090", "displayName": "RTX 4090", "memoryInGb": 24, "securePrice": 0.69,
     "communityPrice": 0.34, "secureSpotPrice": 0.29, "communitySpotPrice": 0.2, "maxGpuCount": 8},
]
#: pod addresses; each test process (pytest-xdist worker) starts elsewhere in 127.0.3.0/24
_addresses = count(2 + (os.getpid() % 40) * 6)


@dataclass
class PodRecord:
    id: str
    input: dict[str, Any]
    host: str
    port: int
    created: float
    cost_per_hr: float
    status: str = "RUNNING"
    runtime: dict[str, Any] | None = None
    machine: FakePod | None = None
    terminated_at: float | None = None
    spot: bool = False
    #: (booted, ended) of every run of the pod, for billing checks
    runs: list[list[float | None]] = field(default_factory=list)

    def view(self) -> dict[str, Any]:
        return {
            "id": self.id, "name": self.input.get("name"), "desiredStatus": self.status,
            "costPerHr": self.cost_per_hr, "gpuCount": self.input["gpuCount"], "imageName": self.input["imageName"],
            "env": [f"{e['key']}={e['value']}" for e in self.input.get("env") or []],
            "machine": {"gpuDisplayName": self.input["gpuTypeId"]}, "runtime": self.runtime,
        }


@dataclass
class FakeRunPod:
    base: Path
    api_key: str = "rp-test-key"
    boot_s: float = 0.3
    ssh_delay_s: float = 0.0
    full_gpus: set[str] = field(default_factory=set)  # gpuTypeIds with no capacity
    full_clouds: set[str] = field(default_factory=set)  # cloudTypes with no capacity
    pod_env: dict[str, str] = field(default_factory=dict)  # what the image itself would set
    ignore_host_key: bool = False  # a pod whose host key is not the launcher's (a stale IP, a MITM)
    resume_capacity: bool = True  # podResume/podBidResume find a machine for an EXITED pod
    faults: list[dict[str, Any]] = field(default_factory=list)
    gpu_types: list[dict[str, Any]] = field(default_factory=lambda: [dict(g) for g in GPU_TYPES])
    calls: list[dict[str, Any]] = field(default_factory=list)
    ledger: dict[str, PodRecord] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._timers: list[threading.Timer] = []
        self._server: ThreadingHTTPServer | None = None

    # server -------------------------------------------------------------------------------------

    @property
    def url(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.server_address[1]}/graphql"

    def start(self) -> FakeRunPod:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                send_json(self, *fake.handle(self.headers.get("Authorization"), body))

            def log_message(self, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        for timer in self._timers:
            timer.cancel()
        for pod in self.ledger.values():
            if pod.machine is not None:
                pod.machine.stop()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    def running(self) -> list[str]:
        """Pods that still bill: running, or stopped with their volume (RunPod bills an EXITED pod's disk)."""
        return [p.id for p in self.ledger.values() if p.status != "TERMINATED"]

    # one request --------------------------------------------------------------------------------

    def handle(self, auth: str | None, body: bytes) -> tuple[int, Any, dict[str, str]]:
        try:
            request = json.loads(body)
            query, variables = request["query"], request.get("variables") or {}
        except (ValueError, KeyError, TypeError):
            return 400, {"errors": [{"message": "Must provide query string."}]}, {}
        operation = "mutation" if query.lstrip().startswith("mutation") else "query"
        self.calls.append({"query": query, "variables": variables, "auth": auth})
        for fault in self.faults:
            if fault.get("times", 1) > 0 and fault.get("on", "any") in ("any", operation) and (
                    fault.get("field") is None or fault["field"] in query):
                fault["times"] = fault.get("times", 1) - 1
                return fault["status"], fault.get("body", {"errors": [{"message": "x"}]}), fault.get("headers", {})
        if auth != f"Bearer {self.api_key}":
            return 401, {"errors": [{"message": "Unauthorized"}]}, {}
        try:
            document = parse(query)
        except GraphQLError as exc:
            return 400, {"errors": [{"message": exc.message}]}, {}
        problems = validate(SCHEMA, document)
        if problems:
            return 400, {"errors": [{"message": p.message} for p in problems]}, {}
        result = graphql_sync(SCHEMA, query, root_value=self, variable_values=variables)
        if result.data is None and result.errors:  # variables of the wrong type: the real API says 400
            return 400, {"errors": [{"message": e.message} for e in result.errors]}, {}
        payload: dict[str, Any] = {"data": result.data}
        if result.errors:
            payload["errors"] = [{"message": e.message, "path": e.path} for e in result.errors]
        return 200, payload, {}

    # resolvers (graphql-core calls root attributes with info and the arguments) ----------------

    def myself(self, info: Any) -> dict[str, Any]:
        return {"id": "user-1", "pods": [p.view() for p in self.ledger.values() if p.status != "TERMINATED"]}

    def pod(self, info: Any, input: dict[str, Any]) -> dict[str, Any] | None:  # noqa: A002
        record = self.ledger.get(input["podId"])
        return record.view() if record is not None and record.status != "TERMINATED" else None

    def gpuTypes(self, info: Any, input: dict[str, Any] | None = None) -> list[dict[str, Any]]:  # noqa: A002, N802
        wanted = (input or {}).get("id")
        return [g for g in self.gpu_types if wanted in (None, g["id"])]

    def podFindAndDeployOnDemand(self, info: Any, input: dict[str, Any]) -> dict[str, Any]:  # noqa: A002, N802
        return self._deploy(input, spot=False)

    def podRentInterruptable(self, info: Any, input: dict[str, Any]) -> dict[str, Any]:  # noqa: A002, N802
        spot_price = next((g["secureSpotPrice"] for g in self.gpu_types if g["id"] == input["gpuTypeId"]), None)
        if spot_price is None or input["bidPerGpu"] < spot_price:
            raise GraphQLError("Your bid is below the current minimum bid price for this GPU.")
        return self._deploy(input, spot=True)

    def _deploy(self, input: dict[str, Any], spot: bool) -> dict[str, Any]:  # noqa: A002
        if input["gpuTypeId"] in self.full_gpus or input.get("cloudType", "ALL") in self.full_clouds:
            raise GraphQLError(NO_CAPACITY)
        price = input["bidPerGpu"] if spot else \
            next((g["securePrice"] for g in self.gpu_types if g["id"] == input["gpuTypeId"]), 1.0)
        host = f"127.0.3.{next(_addresses) % 250 + 2}"
        record = PodRecord(id=secrets.token_hex(7), input=input, host=host, port=free_port(host),
                           created=time.time(), cost_per_hr=price * input["gpuCount"], spot=spot)
        with self._lock:
            self.ledger[record.id] = record
        self._later(self.boot_s, self._boot, record)
        return record.view()

    def podResume(self, info: Any, input: dict[str, Any]) -> dict[str, Any]:  # noqa: A002, N802
        return self._resume(input["podId"], spot=False)

    def podBidResume(self, info: Any, input: dict[str, Any]) -> dict[str, Any]:  # noqa: A002, N802
        return self._resume(input["podId"], spot=True)

    def _resume(self, pod_id: str, spot: bool) -> dict[str, Any]:
        record = self.ledger.get(pod_id)
        if record is None or record.status == "TERMINATED":
            raise GraphQLError("pod not found")
        if record.status != "EXITED" or record.spot != spot:
            raise GraphQLError(f"Cannot resume a {record.status} pod this way.")
        if not self.resume_capacity:
            raise GraphQLError("There are not enough free GPUs on the host machine to start this pod.")
        record.status, record.runtime = "RUNNING", None
        record.port = free_port(record.host)  # a resumed pod gets new port mappings
        self._later(self.boot_s, self._boot, record)
        return record.view()

    def preempt(self, pod_id: str) -> None:
        """The spot market (or a stop) took the pod back: EXITED, every process gone, /workspace kept."""
        self._lose(pod_id, "EXITED")

    def kill(self, pod_id: str) -> None:
        """The pod's host failed: DEAD, nothing to resume."""
        self._lose(pod_id, "DEAD")

    def _lose(self, pod_id: str, status: str) -> None:
        record = self.ledger[pod_id]
        record.status, record.runtime = status, None
        if record.runs and record.runs[-1][1] is None:
            record.runs[-1][1] = time.time()
        if record.machine is not None:
            record.machine.stop()

    def podTerminate(self, info: Any, input: dict[str, Any]) -> None:  # noqa: A002, N802
        record = self.ledger.get(input["podId"])
        if record is None or record.status == "TERMINATED":
            raise GraphQLError("pod not found to terminate")
        record.status, record.terminated_at = "TERMINATED", time.time()
        if record.runs and record.runs[-1][1] is None:
            record.runs[-1][1] = time.time()
        if record.machine is not None:
            record.machine.stop()
        return None

    # the pod's life -----------------------------------------------------------------------------

    def _later(self, delay: float, fn: Any, *args: Any) -> None:
        timer = threading.Timer(delay, fn, args)
        timer.daemon = True
        self._timers.append(timer)
        timer.start()

    def _boot(self, record: PodRecord) -> None:
        if record.status != "RUNNING":
            return
        record.runs.append([time.time(), None])
        record.runtime = {"uptimeInSeconds": 0, "ports": [
            {"ip": record.host, "isIpPublic": True, "privatePort": 22, "publicPort": record.port + 1, "type": "udp"},
            {"ip": "10.6.0.12", "isIpPublic": False, "privatePort": 22, "publicPort": 22, "type": "tcp"},
            {"ip": record.host, "isIpPublic": True, "privatePort": 8888, "publicPort": 8888, "type": "http"},
            {"ip": record.host, "isIpPublic": True, "privatePort": 22, "publicPort": record.port, "type": "tcp"},
        ]}
        self._later(self.ssh_delay_s, self._start_sshd, record)

    def _start_sshd(self, record: PodRecord) -> None:
        if record.status != "RUNNING":
            return
        env = {e["key"]: e["value"] for e in record.input.get("env") or []}
        if self.ignore_host_key:
            env.pop("RTRAIN_SSH_HOST_KEY", None)
        env.update(self.pod_env, RUNPOD_POD_ID=record.id)
        machine = FakePod(self.base / record.id, record.host, record.port, env)
        record.machine = machine
        machine.start(wait=False)
        if record.status != "RUNNING":  # terminated (or lost) while it was starting
            machine.stop()
