"""The GPU catalog: our short aliases, each provider's id for them, and what each card can do.

``launcher/data/gpus.json`` is the bundled copy (with the date it was read); prices are refreshed
from a provider's API when its key is set. ``--gpu`` resolves through ``resolve_gpu``: an unknown
alias is a usage error listing the valid ones.
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
    runpod: str | None
    lambda_: str | None
    vram_gb: int
    arch: str
    bf16_tflops: float
    price: dict[str, float] = field(default_factory=dict)

    def provider_id(self, backend: str) -> str | None:
        return {"runpod": self.runpod, "lambda": self.lambda_}.get(backend)


@lru_cache(maxsize=1)
def _load() -> tuple[str, dict[str, GPU]]:
    raw = json.loads(CATALOG_FILE.read_text())
    gpus = {
        alias: GPU(alias=alias, runpod=g["runpod"], lambda_=g["lambda"], vram_gb=g["vram_gb"], arch=g["arch"],
                   bf16_tflops=g["bf16_tflops"], price=dict(g["price"]))
        for alias, g in raw["gpus"].items()
    }
    return raw["as_of"], gpus


def catalog() -> dict[str, GPU]:
    return _load()[1]


def catalog_date() -> str:
    return _load()[0]


def resolve_gpu(alias: str, backend: str | None = None) -> GPU:
    """The catalog entry for ``alias`` (case-insensitive; a provider's own id works too)."""
    gpus = catalog()
    key = alias.strip().lower()
    gpu = gpus.get(key) or next(
        (g for g in gpus.values() if alias in (g.runpod, g.lambda_)), None
    )
    if gpu is None:
        raise UsageError(f"--gpu {alias}: unknown GPU (valid: {', '.join(gpus)})")
    if backend in ("runpod", "lambda") and gpu.provider_id(backend) is None:
        offered = ", ".join(a for a, g in gpus.items() if g.provider_id(backend))
        raise UsageError(f"--gpu {alias}: not offered by {backend} (it has: {offered})")
    return gpu
