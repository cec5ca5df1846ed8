"""``job.json``: what the launcher asks the trainer to do, checked again on this side.

The launcher validates the job fully with pydantic; the trainer must run with only the standard
library and the training stack, so this is a small dataclass with the same names and bounds.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

SCHEMA_VERSION = 1


#: The bounds of every number a job holds, applied on both sides: the launcher's JobSpec builds its
#: pydantic constraints from this table, ``TrainConfig.check`` applies it here (a test checks the two).
BOUNDS: dict[str, dict[str, float]] = {
    "epochs": {"gt": 0, "le": 1000}, "max_steps": {"gt": 0, "le": 10_000_000},
    "max_samples": {"gt": 0}, "lr": {"gt": 0, "lt": 1}, "warmup_ratio": {"ge": 0, "lt": 1},
    "warmup_steps": {"ge": 0}, "weight_decay": {"ge": 0, "le": 10}, "lora_rank": {"gt": 0, "le": 1024},
    "lora_alpha": {"gt": 0, "le": 1_000_000}, "lora_dropout": {"ge": 0, "lt": 1},
    "max_seq_length": {"gt": 8, "le": 1_048_576}, "batch_size": {"gt": 0, "le": 4096},
    "grad_accum": {"gt": 0, "le": 4096}, "eval_fraction": {"ge": 0, "lt": 1}, "eval_steps": {"gt": 0},
    "eval_samples": {"ge": 0, "le": 100}, "save_steps": {"gt": 0}, "save_total_limit": {"gt": 0},
    "logging_steps": {"gt": 0}, "save_every_s": {"ge": 30},
}


def out_of_bounds(name: str, value: float) -> str | None:
    """Why ``value`` is not allowed for ``name`` (None: it is); infinities and NaN never are."""
    if isinstance(value, float) and not math.isfinite(value):
        return "must be a finite number"
    for op, limit in BOUNDS.get(name, {}).items():
        ok = {"gt": value > limit, "ge": value >= limit, "lt": value < limit, "le": value <= limit}[op]
        if not ok:
            word = {"gt": "greater than", "ge": "at least", "lt": "less than", "le": "at most"}[op]
            return f"must be {word} {limit:g}"
    return None


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
    #: also checkpoint when this many seconds passed since the last one (a cloud job's bound on what a
    #: lost machine costs); None: only by save_steps
    save_every_s: int | None = None
    save_total_limit: int = 2
    from_adapter: str | None = None
    #: the user's name of each dataset file (datasets arrive as content-addressed blobs)
    dataset_names: dict[str, str] = field(default_factory=dict)
    #: the base model's name for people (``model`` may be a folder rebuilt on a pod)
    model_name: str | None = None
    #: serving files to make at the end: any of "gguf", "modelfile", "merged"
    exports: list[str] = field(default_factory=list)
    version: int = SCHEMA_VERSION

    def check(self) -> None:
        for name in BOUNDS:
            value = getattr(self, name)
            if value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ConfigError(f"{name} must be a number (got {value!r})")
            why = out_of_bounds(name, value)
            if why:
                raise ConfigError(f"{name} {why} (got {value!r})")
        if not self.datasets:
            raise ConfigError("datasets is empty")


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
