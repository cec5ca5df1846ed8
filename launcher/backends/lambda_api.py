"""Lambda Cloud's REST API (``/api/v1``), spoken directly over httpx with the shared retry rules.

Success bodies are ``{"data": ...}``, errors ``{"error": {"code", "message", "suggestion"}}`` (400
``instance-operations/launch/insufficient-capacity``, 404 ``global/object-does-not-exist``, 401
``global/invalid-api-key``, ...). This module only speaks HTTP; lambda_cloud.py makes it a backend.
"""

from __future__ import annotations

from typing import Any

from launcher.backends.http import HTTPClient, RetryPolicy
from launcher.errors import ProviderError

CAPACITY = "instance-operations/launch/insufficient-capacity"
NOT_FOUND = "global/object-does-not-exist"


class LambdaError(ProviderError):
    def __init__(self, code: str, message: str) -> None:
        self.code = code
        super().__init__(f"Lambda Cloud: {message} ({code})")

    @property
    def is_capacity(self) -> bool:
        return self.code == CAPACITY

    @property
    def is_not_found(self) -> bool:
        return self.code == NOT_FOUND


class LambdaAPI:
    def __init__(self, url: str, api_key: str, *, policy: RetryPolicy | None = None) -> None:
        self.http = HTTPClient(url.rstrip("/") + "/", api_key, "Lambda Cloud", "LAMBDA_API_KEY", policy=policy)

    def close(self) -> None:
        self.http.close()

    def call(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        response = self.http.request(method, path.lstrip("/"), json=body)
        try:
            payload = response.json()
        except ValueError:
            raise ProviderError(f"Lambda Cloud answered HTTP {response.status_code} with a body that is not "
                                "JSON") from None
        if not isinstance(payload, dict):
            raise ProviderError(f"Lambda Cloud answered HTTP {response.status_code} with an unexpected body")
        if response.status_code >= 400 or "error" in payload:
            err = payload.get("error") or {}
            raise LambdaError(str(err.get("code") or f"http/{response.status_code}"),
                              str(err.get("message") or f"HTTP {response.status_code}"))
        return payload.get("data")

    def instance_types(self) -> dict[str, Any]:
        """``{name: {"instance_type": {..., "price_cents_per_hour", "specs": {"gpus"}},
        "regions_with_capacity_available": [{"name", "description"}]}}``"""
        return dict(self.call("GET", "/instance-types") or {})

    def launch(self, *, region: str, instance_type: str, ssh_key: str, name: str, user_data: str) -> str:
        data = self.call("POST", "/instance-operations/launch", {
            "region_name": region, "instance_type_name": instance_type, "ssh_key_names": [ssh_key],
            "name": name, "user_data": user_data, "quantity": 1,
        })
        ids = (data or {}).get("instance_ids") or []
        if not ids:
            raise ProviderError("Lambda Cloud accepted the launch but returned no instance id")
        return str(ids[0])

    def instance(self, instance_id: str) -> dict[str, Any] | None:
        try:
            return dict(self.call("GET", f"/instances/{instance_id}") or {})
        except LambdaError as exc:
            if exc.is_not_found:
                return None
            raise

    def instances(self) -> list[dict[str, Any]]:
        return [dict(i) for i in self.call("GET", "/instances") or []]

    def terminate(self, instance_id: str) -> None:
        try:
            self.call("POST", "/instance-operations/terminate", {"instance_ids": [instance_id]})
        except LambdaError as exc:
            if not exc.is_not_found:  # already gone: terminated, as asked
                raise

    def ssh_keys(self) -> list[dict[str, Any]]:
        return [dict(k) for k in self.call("GET", "/ssh-keys") or []]

    def add_ssh_key(self, name: str, public_key: str) -> dict[str, Any]:
        return dict(self.call("POST", "/ssh-keys", {"name": name, "public_key": public_key}) or {})

    def delete_ssh_key(self, key_id: str) -> None:
        try:
            self.call("DELETE", f"/ssh-keys/{key_id}")
        except LambdaError as exc:
            if not exc.is_not_found:
                raise
