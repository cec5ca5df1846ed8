"""RunPod's GraphQL API, spoken directly: every value goes in ``variables``, never into query text
(the official SDK pastes values into the query, so a quote in a name or a PEM key breaks it).

This module only speaks HTTP; launcher/backends/runpod.py turns it into a backend.
"""

from __future__ import annotations

from typing import Any

from launcher.backends.http import HTTPClient, RetryPolicy
from launcher.errors import ProviderError

POD_FIELDS = """
  id name desiredStatus costPerHr gpuCount imageName
  machine { gpuDisplayName }
  runtime { uptimeInSeconds ports { ip isIpPublic privatePort publicPort type } }
"""

DEPLOY = f"""
mutation Deploy($input: PodFindAndDeployOnDemandInput!) {{
  podFindAndDeployOnDemand(input: $input) {{ {POD_FIELDS} }}
}}"""

DEPLOY_SPOT = f"""
mutation DeploySpot($input: PodRentInterruptableInput!) {{
  podRentInterruptable(input: $input) {{ {POD_FIELDS} }}
}}"""

RESUME = f"""
mutation Resume($input: PodResumeInput!) {{
  podResume(input: $input) {{ {POD_FIELDS} }}
}}"""

BID_RESUME = f"""
mutation BidResume($input: PodBidResumeInput!) {{
  podBidResume(input: $input) {{ {POD_FIELDS} }}
}}"""

POD = f"""
query Pod($input: PodFilter!) {{
  pod(input: $input) {{ {POD_FIELDS} }}
}}"""

MY_PODS = f"""
query MyPods {{
  myself {{ pods {{ {POD_FIELDS} }} }}
}}"""

TERMINATE = """
mutation Terminate($input: PodTerminateInput!) {
  podTerminate(input: $input)
}"""

GPU_TYPES = """
query GpuTypes($input: GpuTypeFilter) {
  gpuTypes(input: $input) {
    id displayName memoryInGb securePrice communityPrice secureSpotPrice communitySpotPrice maxGpuCount
  }
}"""

#: RunPod's wording when a GPU type has no free machine (HTTP 200, data null, this in errors).
CAPACITY_MARKERS = ("no longer any instances available", "not enough free gpus", "no instances available",
                    "below the current minimum bid")


class RunPodError(ProviderError):
    def __init__(self, messages: list[str]) -> None:
        self.messages = messages
        super().__init__("RunPod: " + "; ".join(messages))

    @property
    def is_capacity(self) -> bool:
        return any(marker in m.lower() for m in self.messages for marker in CAPACITY_MARKERS)

    @property
    def is_not_found(self) -> bool:
        return any("not found" in m.lower() for m in self.messages)


class RunPodAPI:
    def __init__(self, url: str, api_key: str, *, policy: RetryPolicy | None = None) -> None:
        self.http = HTTPClient(url, api_key, "RunPod", "RUNPOD_API_KEY", policy=policy)

    def close(self) -> None:
        self.http.close()

    def call(self, query: str, variables: dict[str, Any] | None = None) -> dict[str, Any]:
        response = self.http.request("POST", "", json={"query": query, "variables": variables or {}})
        try:
            body = response.json()
        except ValueError:
            raise ProviderError(f"RunPod answered HTTP {response.status_code} with a body that is not JSON") from None
        errors = [str(e.get("message", e)) for e in body.get("errors") or [] if isinstance(e, dict)]
        if response.status_code >= 400 or errors:
            raise RunPodError(errors or [f"HTTP {response.status_code}"])
        data: dict[str, Any] = body.get("data") or {}
        return data

    def deploy_on_demand(self, pod_input: dict[str, Any]) -> dict[str, Any]:
        pod = self.call(DEPLOY, {"input": pod_input}).get("podFindAndDeployOnDemand")
        if not pod:
            raise RunPodError(["the create call returned no pod"])
        return dict(pod)

    def deploy_spot(self, pod_input: dict[str, Any]) -> dict[str, Any]:
        pod = self.call(DEPLOY_SPOT, {"input": pod_input}).get("podRentInterruptable")
        if not pod:
            raise RunPodError(["the create call returned no pod"])
        return dict(pod)

    def resume(self, pod_id: str, gpu_count: int, bid_per_gpu: float | None = None) -> dict[str, Any]:
        """Boot an EXITED pod again (its volume kept): podResume, or podBidResume for a spot pod."""
        if bid_per_gpu is None:
            pod = self.call(RESUME, {"input": {"podId": pod_id, "gpuCount": gpu_count}}).get("podResume")
        else:
            pod = self.call(BID_RESUME, {"input": {"podId": pod_id, "bidPerGpu": bid_per_gpu,
                                                   "gpuCount": gpu_count}}).get("podBidResume")
        if not pod:
            raise RunPodError(["the resume call returned no pod"])
        return dict(pod)

    def pod(self, pod_id: str) -> dict[str, Any] | None:
        pod = self.call(POD, {"input": {"podId": pod_id}}).get("pod")
        return dict(pod) if pod else None

    def my_pods(self) -> list[dict[str, Any]]:
        myself = self.call(MY_PODS).get("myself") or {}
        return [dict(p) for p in myself.get("pods") or []]

    def terminate(self, pod_id: str) -> None:
        try:
            self.call(TERMINATE, {"input": {"podId": pod_id}})
        except RunPodError as exc:
            if exc.is_not_found:  # "pod not found to terminate": it is already gone (dstack does the same)
                return
            raise

    def gpu_types(self, gpu_id: str | None = None) -> list[dict[str, Any]]:
        variables = {"input": {"id": gpu_id}} if gpu_id else {}
        return [dict(g) for g in self.call(GPU_TYPES, variables).get("gpuTypes") or []]
