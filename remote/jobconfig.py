"""``job.json``: what the launcher asks the trainer to do, checked again on this side.

The launcher validates the job fully with pydantic; the trainer must run with only the standard
library and the training stack, so this is a small dataclass with the same names and bounds.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

SCHEMA_VERSION = 1


class ConfigError(ValueError):
    """job.json is missing, not JSON, or holds a bad value."""


@dataclass
class TrainConfig:
    job_id: str
    model: str
    datasets: list[str]
    output_dir: str = "output"
    epochs: float = 1.0
    max_steps: int | None = None
    max_samples: int | None = None
    lr: float = 2e-4
    lr_scheduler: str = "linear"
    warmup_ratio: float = 0.03
    warmup_steps: int = 0
    weight_decay: float = 0.0
    lora_rank: int = 8
    lora_alpha: int = 16
    lora_dropout: float = 0.0
    target_modules: list[str] | str = "all-linear"
    max_seq_length: int = 2048
    batch_size: int = 1
    grad_accum: int = 1
    load_in_4bit: bool = False
    gradient_checkpointing: bool | None = None
    seed: int = 42
    logging_steps: int = 1
    #: pack examples into full rows (None: on); with Unsloth, how many examples a padding-free step takes
    packing: bool | None = None
    eval_fraction: float = 0.05
    eval_datasets: list[str] = field(default_factory=list)
    eval_steps: int | None = None
    eval_samples: int = 3
    save_steps: int | None = None
    save_total_limit: int = 2
    from_adapter: str | None = None
    #: the user's name of each dataset file (datasets arrive as content-addressed blobs)
    dataset_names: dict[str, str] = field(default_factory=dict)
    #: the base model's name for people (``model`` may be a folder rebuilt on a pod)
    model_name: str | None = None
    #: serving files to make at the end: any of "gguf", "modelfile", "merged"
    exports: list[str] = field(default_factory=list)
    version: int = SCHEMA_VERSION
    extra: dict[str, Any] = field(default_factory=dict)

    def check(self) -> None:
        positive = ("epochs", "lr", "lora_rank", "lora_alpha", "max_seq_length", "batch_size", "grad_accum",
                    "logging_steps")
        for name in positive:
            if not getattr(self, name) > 0:
                raise ConfigError(f"{name} must be > 0 (got {getattr(self, name)!r})")
        if not 0 <= self.eval_fraction < 1:
            raise ConfigError(f"eval_fraction must be in [0, 1) (got {self.eval_fraction!r})")
        for name in ("max_steps", "max_samples", "eval_steps", "save_steps"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise ConfigError(f"{name} must be > 0 (got {value!r})")
        if not self.datasets:
            raise ConfigError("datasets is empty")
        if not 0 <= self.lora_dropout < 1:
            raise ConfigError(f"lora_dropout must be in [0, 1) (got {self.lora_dropout!r})")


def load_config(path: str | Path) -> TrainConfig:
    try:
        raw = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such file") from None
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a JSON object")
    if raw.get("version", SCHEMA_VERSION) != SCHEMA_VERSION:
        raise ConfigError(f"{path}: job.json version {raw.get('version')} (this trainer reads {SCHEMA_VERSION})")
    known = {f.name for f in dataclasses.fields(TrainConfig)}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise ConfigError(f"{path}: unknown keys {unknown}")
    try:
        cfg = TrainConfig(**raw)
    except TypeError as exc:
        raise ConfigError(f"{path}: {exc}") from None
    cfg.check()
    return cfg
