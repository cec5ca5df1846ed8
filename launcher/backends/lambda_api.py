"""Lambda Cloud's REST API (only what rtrain uses so far: the instance types and their prices).

Success bodies are ``{"data": ...}``, errors ``{"error": {"code", "message", "suggestion"}}``.
"""

from __future__ import annotations

from typing import Any

from launcher.backends.http import HTTPClient, RetryPolicy
from launcher.errors import ProviderError


class LambdaAPI:
    def __init__(self, url: str, api_key: str, *, policy: RetryPolicy | None = None) -> None:
        self.http = HTTPClient(url.rstrip("/") + "/", api_key, "Lambda Cloud", "LAMBDA_API_KEY", policy=policy)

    def close(self) -> None:
        self.http.close()

    def get(self, path: str) -> Any:
        response = self.http.request("GET", path.lstrip("/"))
        try:
            body = response.json()
        except ValueError:
            raise ProviderError(f"Lambda Cloud answered HTTP {response.status_code} with a body that is not "
                                "JSON") from None
        if response.status_code >= 400 or "error" in body:
            err = body.get("error") or {}
            raise ProviderError(f"Lambda Cloud: {err.get('message', f'HTTP {response.status_code}')} "
                                f"({err.get('code', 'no code')})")
        return body.get("data")

    def instance_types(self) -> dict[str, Any]:
        """``{name: {"instance_type": {..., "price_cents_per_hour", "specs": {"gpus"}},
        "regions_with_capacity_available": [...]}}``"""
        return dict(self.get("/instance-types") or {})
