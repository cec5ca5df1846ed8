"""Settings (environment and ``.env``) and ``JobSpec``, the validated description of one job."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    AliasChoices,
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict

from launcher.errors import UsageError
from launcher.paths import DEFAULT_HOME, checked_home
from remote.jobconfig import BOUNDS

#: the registered backends (launcher/backends/__init__.py: REGISTRY), and auto
Backend = Literal["local", "runpod", "lambda", "auto"]

#: The model rtrain builds itself (``rtrain init-tiny-model``); no hub needed.
TINY_MODEL = "rtrain-tiny"


class Settings(BaseSettings):
    """Everything read from the environment or ``.env``. Provider keys keep their usual names."""

    model_config = SettingsConfigDict(
        env_prefix="RTRAIN_", env_file=".env", extra="ignore", populate_by_name=True
    )

    home: Path = Field(Path(DEFAULT_HOME), description="registry, keys, local job folders")
    runpod_api_key: SecretStr | None = Field(
        None, validation_alias=AliasChoices("RUNPOD_API_KEY", "RTRAIN_RUNPOD_API_KEY")
    )
    lambda_api_key: SecretStr | None = Field(
        None, validation_alias=AliasChoices("LAMBDA_API_KEY", "RTRAIN_LAMBDA_API_KEY")
    )
    hf_token: SecretStr | None = Field(
        None, validation_alias=AliasChoices("HF_TOKEN", "RTRAIN_HF_TOKEN")
    )
    runpod_api_url: str = "https://api.runpod.io/graphql"
    lambda_api_url: str = "https://cloud.lambda.ai/api/v1"
    image: str = "ghcr.io/rtrain/rtrain-trainer:0.1.0-cu128"
    local_python: str | None = Field(None, description="python that runs the local trainer")
    remote_python: str = Field("python3", description="python that runs the trainer on a pod")
    runpod_cloud_type: Literal["SECURE", "COMMUNITY", "ALL"] = "SECURE"
    runpod_cloud_fallback: bool = Field(True, description="on no capacity, retry with cloudType ALL")
    container_disk_gb: int = Field(40, ge=10)
    volume_gb: int = Field(50, ge=0)
    ready_timeout_s: float = Field(1200.0, gt=0, description="deadline for a pod to accept SSH commands")
    api_retries: int = Field(6, ge=1, le=20, description="tries per provider API call (429/5xx/network)")
    max_restarts: int = Field(1, ge=0, description="restarts from a checkpoint of a trainer that was killed")
    runs_dir: Path = Field(Path("runs"), description="where adapters land: <runs_dir>/<job-id>/")

    def rtrain_home(self) -> Path:
        return checked_home(self.home.expanduser())


def env_names(field: str) -> list[str]:
    """The environment variables a Settings field is read from, the usual one first."""
    info = Settings.model_fields.get(field)
    alias = info.validation_alias if info is not None else None
    if isinstance(alias, AliasChoices):
        return [str(choice) for choice in alias.choices]
    return [f"RTRAIN_{field.upper()}"]


def load_settings() -> Settings:
    """The settings; a bad value is a UsageError naming the variable and where it came from (the
    environment, or the .env file), never pydantic's report."""
    try:
        return Settings()
    except ValidationError as exc:
        err = exc.errors()[0]
        names = env_names(str(err["loc"][0]) if err["loc"] else "")
        given = next((n for n in names if n in os.environ), None)
        source = "in the environment" if given else f"in {Path('.env').resolve()}"
        raise UsageError(f"{given or names[0]} {source}: {_describe(err)}") from None


#: JobSpec field -> the flag a user types, for error messages.
FLAG_OF = {
    "backend": "--backend",
    "gpu": "--gpu",
    "gpu_count": "--gpu",
    "model": "--model",
    "datasets": "--dataset",
    "template": "--template",
    "epochs": "--epochs",
    "max_steps": "--max-steps",
    "lr": "--lr",
    "lora_rank": "--lora-rank",
    "lora_alpha": "--lora-alpha",
    "max_seq_length": "--max-seq-length",
    "batch_size": "--batch-size",
    "grad_accum": "--grad-accum",
    "output_dir": "--output",
    "name": "--name",
    "watchdog_s": "--watchdog",
    "reuse_pod": "--pod",
    "eval_fraction": "--eval-fraction",
    "eval_datasets": "--eval-dataset",
    "eval_steps": "--eval-steps",
    "save_steps": "--save-steps",
    "save_total_limit": "--save-total-limit",
    "from_adapter": "--from-adapter",
    "s3": "--s3",
    "region": "--region",
    "spot": "--spot",
    "max_recoveries": "--max-recoveries",
}


class JobSpec(BaseModel):
    """Everything a job needs, validated once, for every backend. Templates use the same keys."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    backend: Backend = "local"
    gpu: list[str] = Field(default_factory=list)
    gpu_count: int = Field(1, ge=1, le=8)
    model: str = Field(min_length=1)
    datasets: list[str] = Field(min_length=1)
    template: str | None = None
    epochs: float = Field(1.0, **BOUNDS["epochs"])
    max_steps: int | None = Field(None, **BOUNDS["max_steps"])
    max_samples: int | None = Field(None, **BOUNDS["max_samples"])
    lr: float = Field(2e-4, **BOUNDS["lr"])
    lr_scheduler: Literal["linear", "cosine", "constant", "constant_with_warmup"] = "linear"
    warmup_ratio: float = Field(0.03, **BOUNDS["warmup_ratio"])
    warmup_steps: int = Field(0, **BOUNDS["warmup_steps"])
    weight_decay: float = Field(0.0, **BOUNDS["weight_decay"])
    lora_rank: int = Field(8, **BOUNDS["lora_rank"])
    lora_alpha: int | None = Field(None, **BOUNDS["lora_alpha"])
    lora_dropout: float = Field(0.0, **BOUNDS["lora_dropout"])
    target_modules: list[str] | Literal["all-linear"] = "all-linear"
    max_seq_length: int = Field(2048, **BOUNDS["max_seq_length"])
    batch_size: int = Field(1, **BOUNDS["batch_size"])
    grad_accum: int = Field(1, **BOUNDS["grad_accum"])
    load_in_4bit: bool = False
    gradient_checkpointing: bool | None = None
    seed: int = 42
    packing: bool | None = None
    eval_fraction: float = Field(0.05, **BOUNDS["eval_fraction"])
    eval_datasets: list[str] = Field(default_factory=list)
    eval_steps: int | None = Field(None, **BOUNDS["eval_steps"])
    eval_samples: int = Field(3, **BOUNDS["eval_samples"])
    save_steps: int | None = Field(None, **BOUNDS["save_steps"])
    #: checkpoint at least this often in seconds (set for cloud jobs without --save-steps)
    save_every_s: int | None = Field(None, **BOUNDS["save_every_s"])
    save_total_limit: int = Field(2, **BOUNDS["save_total_limit"])
    from_adapter: str | None = None
    exports: list[Literal["gguf", "modelfile", "merged"]] = Field(default_factory=list)
    #: push the verified outputs to s3://bucket/prefix/<job-id>/ at the end
    s3: str | None = Field(None, pattern=r"^s3://[^/]+(/.*)?$")
    #: run on this existing pod (one a job of this machine kept) instead of creating one
    reuse_pod: str | None = None
    #: rent interruptible (spot) capacity; recovery makes it safe
    spot: bool = False
    #: how often a lost machine is replaced (or resumed) before the job gives up
    max_recoveries: int = Field(3, ge=0, le=20)
    #: the provider's region (Lambda Cloud) or data center (RunPod) to rent in; None: any with capacity
    region: str | None = Field(None, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
    #: seconds after which the pod's watchdog ends a finished job nobody follows (None: off)
    watchdog_s: int | None = Field(None, ge=60)
    logging_steps: int = Field(1, **BOUNDS["logging_steps"])
    name: str | None = Field(None, max_length=48)
    output_dir: str | None = None

    @field_validator("name")
    @classmethod
    def _name_is_plain(cls, value: str | None) -> str | None:
        # It becomes part of the pod name and shows in tables: keep it to safe characters.
        if value is not None and not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._ -]*", value):
            raise ValueError("use letters, digits, spaces, '.', '_' and '-', starting with a letter or digit")
        return value

    @model_validator(mode="after")
    def _alpha_defaults_to_twice_rank(self) -> JobSpec:
        if self.lora_alpha is None:
            self.lora_alpha = 2 * self.lora_rank
        return self

    @property
    def is_tiny_model(self) -> bool:
        return self.model == TINY_MODEL


def _describe(err: dict[str, Any]) -> str:
    msg = str(err.get("msg", "invalid"))
    msg = re.sub(r"^(Value error|Assertion failed), ", "", msg)
    msg = msg[0].lower() + msg[1:] if msg else msg
    if err.get("type") == "extra_forbidden":
        return "unknown setting"
    if "input" in err and not isinstance(err["input"], dict | list):
        return f"{msg} (got {err['input']!r})"
    return msg


def spec_from(values: dict[str, Any], origin: dict[str, str]) -> JobSpec:
    """Validate merged job values. ``origin`` maps a field to where its value came from (a flag or a
    template file) so that the one-line error names it."""
    try:
        return JobSpec.model_validate(values)
    except ValidationError as exc:
        err = exc.errors()[0]
        field = str(err["loc"][0]) if err["loc"] else ""
        where = origin.get(field) or FLAG_OF.get(field) or field
        if field == "model" and err.get("type") == "missing":
            raise UsageError("--model is required (or a --template that sets one)") from None
        if field == "datasets" and err.get("type") in ("missing", "too_short"):
            raise UsageError("--dataset is required for this backend") from None
        raise UsageError(f"{where}: {_describe(err)}") from None
