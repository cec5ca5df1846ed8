"""Lambda Cloud's REST API on loopback, following PROVIDERS.md, with instances that are real sshd VMs
(tests/vms.py).

- ``{"data": ...}`` on success, ``{"error": {"code", "message", "suggestion"}}`` on failure: 401
  ``global/invalid-api-key`` (Bearer or Basic auth with the key), 400 ``global/invalid-parameters``,
  400 ``instance-operations/launch/insufficient-capacity``, 404 ``global/object-does-not-exist``.
- ``/instance-types`` lists ``regions_with_capacity_available`` (``full`` empties them; ``taken``
  makes a launch fail for capacity although the listing said yes: a race).
- A launch needs exactly one registered SSH key by name and ``quantity`` 1; the instance is
  ``booting`` with no ``ip`` for ``boot_s``, then ``active`` at its own 127.0.4.x, and its VM starts
  sshd with the host key from the launch's cloud-init ``user_data`` (``ignore_host_key``: its own).
- ``faults`` injects HTTP answers for the next matching calls; ``calls`` records every request;
  ``ledger`` every instance ever launched. ``running()`` and ``ssh_keys`` must be empty after a test.
"""

from __future__ import annotations

import base64
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

from http_json import send_json
from vms import FakeVM

#: instance addresses; each test process (pytest-xdist worker) starts elsewhere in 127.0.4.0/24
_addresses = count(2 + (os.getpid() % 40) * 6)
REGIONS = [{"name": "us-west-1", "description": "California, USA"}, {"name": "us-east-1",
                                                                      "description": "Virginia, USA"}]


def instance_type(name: str, gpus: int, cents: int, description: str) -> dict[str, Any]:
    return {"instance_type": {"name": name, "description": description, "gpu_description": description,
                              "price_cents_per_hour": cents,
                              "specs": {"vcpus": 26 * gpus, "memory_gib": 225 * gpus, "storage_gib": 2750,
                                        "gpus": gpus}},
            "regions_with_capacity_available": list(REGIONS)}


def error(code: str, message: str, suggestion: str = "") -> dict[str, Any]:
    return {"error": {"code": code, "message": message, "suggestion": suggestion}}


@dataclass
class Instance:
    id: str
    name: str
    region: str
    type: str
    ssh_key_names: list[str]
    user_data: str
    host: str
    cents: int
    status: str = "booting"
    created: float = field(default_factory=time.time)
    terminated_at: float | None = None
    machine: FakeVM | None = None

    def view(self, types: dict[str, Any]) -> dict[str, Any]:
        it = types[self.type]["instance_type"]
        return {"id": self.id, "name": self.name, "status": self.status,
                "ip": self.host if self.status == "active" else None, "private_ip": None,
                "hostname": f"{self.id}.lambda.test", "region": {"name": self.region, "description": self.region},
                "instance_type": it, "ssh_key_names": self.ssh_key_names, "file_system_names": [],
                "is_reserved": False}


@dataclass
class FakeLambda:
    base: Path
    api_key: str = "lambda-test-key"
    image: str = "ghcr.io/rtrain/rtrain-trainer:0.1.0-cu128"
    boot_s: float = 0.3
    ssh_delay_s: float = 0.0
    full: set[str] = field(default_factory=set)  # instance types with no capacity anywhere
    taken: set[str] = field(default_factory=set)  # listed with capacity, but the launch finds none
    ignore_host_key: bool = False
    vm_env: dict[str, str] = field(default_factory=dict)
    faults: list[dict[str, Any]] = field(default_factory=list)
    types: dict[str, Any] = field(default_factory=lambda: {
        "gpu_1x_h100_sxm5": instance_type("gpu_1x_h100_sxm5", 1, 329, "1x H100 (80 GB SXM5)"),
        "gpu_1x_h100_pcie": instance_type("gpu_1x_h100_pcie", 1, 249, "1x H100 (80 GB PCIe)"),
        "gpu_1x_a10": instance_type("gpu_1x_a10", 1, 75, "1x A10 (24 GB PCIe)"),
        "gpu_8x_a100_80gb_sxm4": instance_type("gpu_8x_a100_80gb_sxm4", 8, 1432, "8x A100 (80 GB SXM4)"),
    })
    calls: list[dict[str, Any]] = field(default_factory=list)
    ledger: dict[str, Instance] = field(default_factory=dict)
    ssh_keys: dict[str, dict[str, str]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._timers: list[threading.Timer] = []
        self._server: ThreadingHTTPServer | None = None

    # server -------------------------------------------------------------------------------------

    @property
    def url(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.server_address[1]}/api/v1"

    def start(self) -> FakeLambda:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def _answer(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                send_json(self, *fake.handle(self.command, self.path, self.headers.get("Authorization"), body))

            do_GET = do_POST = do_DELETE = _answer  # noqa: N815

            def log_message(self, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        for timer in self._timers:
            timer.cancel()
        for inst in self.ledger.values():
            if inst.machine is not None:
                inst.machine.stop()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    def running(self) -> list[str]:
        return [i.id for i in self.ledger.values() if i.status not in ("terminated",)]

    def preempt(self, instance_id: str) -> None:
        """The host took the instance back: every process and its disk are gone."""
        inst = self.ledger[instance_id]
        inst.status = "preempted"
        if inst.machine is not None:
            inst.machine.stop()

    # one request --------------------------------------------------------------------------------

    def _authorized(self, auth: str | None) -> bool:
        if auth == f"Bearer {self.api_key}":
            return True
        if auth and auth.startswith("Basic "):
            user, _, _password = base64.b64decode(auth[6:]).decode(errors="replace").partition(":")
            return user == self.api_key
        return False

    def handle(self, method: str, path: str, auth: str | None, raw: bytes) -> tuple[int, Any, dict[str, str]]:
        route = path.split("?")[0].removeprefix("/api/v1").rstrip("/")
        try:
            body = json.loads(raw) if raw else {}
        except ValueError:
            return 400, error("global/invalid-parameters", "Request body is not JSON"), {}
        self.calls.append({"method": method, "path": route, "body": body, "auth": auth})
        for fault in self.faults:
            if fault.get("times", 1) > 0 and fault.get("method", method) == method and \
                    fault.get("path", "") in route:
                fault["times"] = fault.get("times", 1) - 1
                return fault["status"], fault.get("body", error("global/internal-error", "x")), \
                    fault.get("headers", {})
        if not self._authorized(auth):
            return 401, error("global/invalid-api-key", "API key was invalid, expired, or deleted.",
                              "Check your API key or create a new one."), {}
        with self._lock:
            return self._route(method, route, body)

    def _route(self, method: str, route: str, body: dict[str, Any]) -> tuple[int, Any, dict[str, str]]:
        parts = route.strip("/").split("/")
        if (method, route) == ("GET", "/instance-types"):
            listed = {name: {**entry, "regions_with_capacity_available":
                             [] if name in self.full else entry["regions_with_capacity_available"]}
                      for name, entry in self.types.items()}
            return 200, {"data": listed}, {}
        if (method, route) == ("POST", "/instance-operations/launch"):
            return self._launch(body)
        if (method, route) == ("POST", "/instance-operations/terminate"):
            return self._terminate(body)
        if (method, route) == ("GET", "/instances"):
            return 200, {"data": [i.view(self.types) for i in self.ledger.values() if i.status != "terminated"]}, {}
        if method == "GET" and len(parts) == 2 and parts[0] == "instances":
            inst = self.ledger.get(parts[1])
            if inst is None:
                return 404, error("global/object-does-not-exist", "Specified instance does not exist."), {}
            return 200, {"data": inst.view(self.types)}, {}
        if route == "/ssh-keys" and method == "GET":
            return 200, {"data": [dict(k) for k in self.ssh_keys.values()]}, {}
        if route == "/ssh-keys" and method == "POST":
            name, public_key = body.get("name"), body.get("public_key")
            if not isinstance(name, str) or not name or not isinstance(public_key, str) or \
                    not public_key.startswith("ssh-"):
                return 400, error("global/invalid-parameters", "Invalid SSH key name or public key."), {}
            if any(k["name"] == name for k in self.ssh_keys.values()):
                return 400, error("global/invalid-parameters", "An SSH key with that name already exists."), {}
            key = {"id": secrets.token_hex(8), "name": name, "public_key": public_key}
            self.ssh_keys[key["id"]] = key
            return 200, {"data": dict(key)}, {}
        if method == "DELETE" and len(parts) == 2 and parts[0] == "ssh-keys":
            if self.ssh_keys.pop(parts[1], None) is None:
                return 404, error("global/object-does-not-exist", "Specified SSH key does not exist."), {}
            return 200, {"data": {}}, {}
        return 404, error("global/object-does-not-exist", f"No route {method} {route}."), {}

    def _launch(self, body: dict[str, Any]) -> tuple[int, Any, dict[str, str]]:
        bad = lambda why: (400, error("global/invalid-parameters", why), {})  # noqa: E731
        type_name, region, keys = body.get("instance_type_name"), body.get("region_name"), body.get("ssh_key_names")
        if type_name not in self.types:
            return bad(f"Unknown instance type {type_name!r}.")
        if region not in {r["name"] for r in REGIONS}:
            return bad(f"Unknown region {region!r}.")
        if not isinstance(keys, list) or len(keys) != 1:
            return bad("Exactly one SSH key name must be given.")
        registered = next((k for k in self.ssh_keys.values() if k["name"] == keys[0]), None)
        if registered is None:
            return bad(f"SSH key {keys[0]!r} does not exist.")
        name = body.get("name") or ""
        if not isinstance(name, str) or len(name) > 64:
            return bad("Instance name must be at most 64 characters.")
        if body.get("quantity", 1) != 1 or not isinstance(body.get("user_data", ""), str):
            return bad("quantity must be 1 and user_data a string.")
        if type_name in self.full or type_name in self.taken:
            return 400, error("instance-operations/launch/insufficient-capacity",
                              "Not enough capacity to fulfill launch request.", "Choose another instance type."), {}
        host = f"127.0.4.{next(_addresses) % 250 + 2}"
        inst = Instance(id=secrets.token_hex(10), name=name, region=str(region), type=str(type_name),
                        ssh_key_names=list(keys), user_data=str(body.get("user_data") or ""), host=host,
                        cents=self.types[type_name]["instance_type"]["price_cents_per_hour"])
        self.ledger[inst.id] = inst
        self._later(self.boot_s, self._boot, inst, registered["public_key"])
        return 200, {"data": {"instance_ids": [inst.id]}}, {}

    def _terminate(self, body: dict[str, Any]) -> tuple[int, Any, dict[str, str]]:
        ids = body.get("instance_ids")
        if not isinstance(ids, list) or not ids:
            return 400, error("global/invalid-parameters", "instance_ids must be a non-empty list."), {}
        unknown = [i for i in ids if i not in self.ledger]
        if unknown:
            return 404, error("global/object-does-not-exist", f"Instance {unknown[0]} does not exist."), {}
        done = []
        for instance_id in ids:
            inst = self.ledger[instance_id]
            if inst.status != "terminated":
                inst.status, inst.terminated_at = "terminated", time.time()
                if inst.machine is not None:
                    inst.machine.stop()
            done.append(inst.view(self.types))
        return 200, {"data": {"terminated_instances": done}}, {}

    # the instance's life ------------------------------------------------------------------------

    def _later(self, delay: float, fn: Any, *args: Any) -> None:
        timer = threading.Timer(delay, fn, args)
        timer.daemon = True
        self._timers.append(timer)
        timer.start()

    def _boot(self, inst: Instance, public_key: str) -> None:
        if inst.status != "booting":
            return
        machine = FakeVM(self.base / inst.id, inst.host, public_key, inst.user_data, env=dict(self.vm_env),
                         image=self.image, ignore_host_key=self.ignore_host_key)
        inst.machine = machine
        inst.status = "active"
        self._later(self.ssh_delay_s, self._start_sshd, inst)

    def _start_sshd(self, inst: Instance) -> None:
        if inst.status == "active" and inst.machine is not None:
            inst.machine.start()
            if inst.status != "active":  # terminated while it was starting
                inst.machine.stop()
