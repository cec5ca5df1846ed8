"""The GPU catalog: our short aliases, what each card can do, and each provider's id and prices for it.

``launcher/data/gpus.json`` is the bundled copy (with the date it was read): per GPU, ``ids`` and
``prices`` keyed by backend name, so a new provider adds its entries there and nothing here changes.
Prices are refreshed from a provider's API when its key is set (launcher/pricing.py). ``--gpu``
resolves through ``resolve_gpu``: an unknown alias is a usage error listing the valid ones.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

from launcher.errors import UsageError

CATALOG_FILE = Path(__file__).resolve().parent / "data" / "gpus.json"


@dataclass(frozen=True)
class GPU:
    alias: str
    vram_gb: int
    arch: str
    bf16_tflops: float
    #: backend name -> that provider's id for this GPU (absent: not offered there)
    ids: dict[str, str] = field(default_factory=dict)
    #: backend name -> {price kind: USD per GPU-hour} from the bundled catalog
    prices: dict[str, dict[str, float]] = field(default_factory=dict)

    def provider_id(self, backend: str) -> str | None:
        return self.ids.get(backend)


@lru_cache(maxsize=1)
def _load() -> tuple[str, dict[str, GPU]]:
    raw = json.loads(CATALOG_FILE.read_text())
    gpus = {alias: GPU(alias=alias, vram_gb=g["vram_gb"], arch=g["arch"], bf16_tflops=g["bf16_tflops"],
                       ids=dict(g["ids"]), prices={k: dict(v) for k, v in g["prices"].items()})
            for alias, g in raw["gpus"].items()}
    return raw["as_of"], gpus


def catalog() -> dict[str, GPU]:
    return _load()[1]


def catalog_date() -> str:
    return _load()[0]


def offered_by(backend: str) -> list[str]:
    """The aliases a provider offers, in catalog order."""
    return [alias for alias, gpu in catalog().items() if gpu.provider_id(backend)]


def resolve_gpu(alias: str, backend: str | None = None) -> GPU:
    """The catalog entry for ``alias`` (case-insensitive; a provider's own id works too). With a cloud
    ``backend``, a GPU that provider does not offer is a usage error naming what it does offer."""
    gpus = catalog()
    key = alias.strip().lower()
    gpu = gpus.get(key) or next((g for g in gpus.values() if alias in g.ids.values()), None)
    if gpu is None:
        raise UsageError(f"--gpu {alias}: unknown GPU (valid: {', '.join(gpus)})")
    if backend is not None and any(backend in g.ids for g in gpus.values()) and gpu.provider_id(backend) is None:
        raise UsageError(f"--gpu {alias}: not offered by {backend} (it has: {', '.join(offered_by(backend))})")
    return gpu
