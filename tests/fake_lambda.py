"""Lambda Cloud's REST API on loopback, as far as rtrain uses it (GET /instance-types), in the shapes
PROVIDERS.md gives: ``{"data": ...}`` on success, ``{"error": {"code", "message", "suggestion"}}`` else."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from http_json import send_json


def instance_type(name: str, gpus: int, cents: int, description: str) -> dict[str, Any]:
    return {"instance_type": {"name": name, "description": description, "gpu_description": description,
                              "price_cents_per_hour": cents,
                              "specs": {"vcpus": 26 * gpus, "memory_gib": 225 * gpus, "storage_gib": 2750,
                                        "gpus": gpus}},
            "regions_with_capacity_available": [{"name": "us-west-1", "description": "California, USA"}]}


@dataclass
class FakeLambda:
    api_key: str = "lambda-test-key"
    types: dict[str, Any] = field(default_factory=lambda: {
        "gpu_1x_h100_sxm5": instance_type("gpu_1x_h100_sxm5", 1, 329, "1x H100 (80 GB SXM5)"),
        "gpu_1x_a10": instance_type("gpu_1x_a10", 1, 75, "1x A10 (24 GB PCIe)"),
        "gpu_8x_a100_80gb_sxm4": instance_type("gpu_8x_a100_80gb_sxm4", 8, 1432, "8x A100 (80 GB SXM4)"),
    })

    def start(self) -> FakeLambda:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802
                if self.headers.get("Authorization") != f"Bearer {fake.api_key}":
                    status, body = 401, {"error": {"code": "global/invalid-api-key",
                                                   "message": "API key was invalid, expired, or deleted.",
                                                   "suggestion": "Check your API key or create a new one."}}
                elif self.path.rstrip("/").endswith("/instance-types"):
                    status, body = 200, {"data": fake.types}
                else:
                    status, body = 404, {"error": {"code": "global/object-does-not-exist",
                                                   "message": "Not found"}}
                send_json(self, status, body)

            def log_message(self, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/api/v1"

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
