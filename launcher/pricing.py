"""GPU prices per hour: live from the provider when its key is set, else the bundled catalog (with
its date, so a user knows how old the numbers are)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from launcher.catalog import catalog, catalog_date
from launcher.config import Settings


@dataclass
class PriceTable:
    backend: str
    #: alias -> on-demand $/GPU-hour for the cloud type rtrain will ask for
    on_demand: dict[str, float]
    #: alias -> every price known, by kind (secure, community, spot, lambda)
    detail: dict[str, dict[str, float]] = field(default_factory=dict)
    source: str = ""


def _pick(detail: dict[str, float], cloud: str) -> float | None:
    if cloud == "COMMUNITY":
        return detail.get("community") or detail.get("secure")
    if cloud == "ALL":
        options = [v for k, v in detail.items() if k in ("secure", "community") and v]
        return min(options) if options else None
    return detail.get("secure") or detail.get("community")


def bundled(backend: str, cloud: str = "SECURE") -> PriceTable:
    detail: dict[str, dict[str, float]] = {}
    for alias, gpu in catalog().items():
        if backend == "runpod" and gpu.runpod:
            detail[alias] = {k.removeprefix("runpod_"): v for k, v in gpu.price.items() if k.startswith("runpod_")}
        elif backend == "lambda" and gpu.lambda_ and "lambda" in gpu.price:
            detail[alias] = {"lambda": gpu.price["lambda"]}
    on_demand = {a: p for a, d in detail.items() if (p := (_pick(d, cloud) if backend == "runpod" else d["lambda"]))}
    return PriceTable(backend, on_demand, detail, f"bundled catalog of {catalog_date()}")


def live(backend: str, settings: Settings) -> PriceTable | None:
    """Prices from the provider's API, or None when its key is not set."""
    if backend == "runpod" and settings.runpod_api_key is not None:
        from launcher.backends.runpod_api import RunPodAPI

        api = RunPodAPI(settings.runpod_api_url, settings.runpod_api_key.get_secret_value())
        try:
            by_id = {g["id"]: g for g in api.gpu_types()}
        finally:
            api.close()
        detail = {}
        for alias, gpu in catalog().items():
            g = by_id.get(gpu.runpod or "")
            if g:
                kinds = {"secure": g.get("securePrice"), "community": g.get("communityPrice"),
                         "spot": g.get("secureSpotPrice") or g.get("communitySpotPrice")}
                detail[alias] = {k: float(v) for k, v in kinds.items() if v}
        on_demand = {a: p for a, d in detail.items() if (p := _pick(d, settings.runpod_cloud_type))}
        return PriceTable("runpod", on_demand, detail, "live from RunPod")
    if backend == "lambda" and settings.lambda_api_key is not None:
        from launcher.backends.lambda_api import LambdaAPI

        lapi = LambdaAPI(settings.lambda_api_url, settings.lambda_api_key.get_secret_value())
        try:
            types = lapi.instance_types()
        finally:
            lapi.close()
        # Lambda sells some GPUs only 8 to an instance (gpu_8x_a100_80gb_sxm4): price per GPU, from the
        # smallest instance of that kind
        per_gpu: dict[str, tuple[int, float]] = {}
        for name, entry in types.items():
            it = entry["instance_type"]
            gpus = max(int((it.get("specs") or {}).get("gpus") or 1), 1)
            key = _lambda_kind(name)
            if key not in per_gpu or gpus < per_gpu[key][0]:
                per_gpu[key] = (gpus, it["price_cents_per_hour"] / 100 / gpus)
        detail = {alias: {"lambda": per_gpu[_lambda_kind(gpu.lambda_)][1]} for alias, gpu in catalog().items()
                  if gpu.lambda_ and _lambda_kind(gpu.lambda_) in per_gpu}
        return PriceTable("lambda", {a: d["lambda"] for a, d in detail.items()}, detail, "live from Lambda Cloud")
    return None


def _lambda_kind(instance_type: str) -> str:
    """``gpu_8x_a100_80gb_sxm4`` and ``gpu_1x_a100_sxm4`` are the same GPU: ``a100_sxm4``."""
    return re.sub(r"^gpu_\d+x_", "", instance_type).replace("_80gb", "")


def prices(backend: str, settings: Settings) -> PriceTable:
    return live(backend, settings) or bundled(backend, settings.runpod_cloud_type)
