"""``validate``: everything checked before any work, any API call, any money.

Merges the embedded default, a template and the flags into one ``JobSpec``, checks the model, every
dataset line and the output folder, and returns a ``Plan`` the lifecycle runs. Any problem is a
``UsageError`` (exit 2) naming the flag, the file or the line.
"""

from __future__ import annotations

import json
import math
import secrets
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from launcher.config import TINY_MODEL, JobSpec, Settings, spec_from
from launcher.dataset import DatasetsSummary, validate_datasets
from launcher.errors import UsageError
from launcher.paths import sample_dataset
from launcher.s3 import is_s3
from launcher.templates import DEFAULT_TEMPLATE, load_template

#: a cloud job without --save-steps checkpoints this often (seconds), so a lost machine costs at most that
DEFAULT_SAVE_EVERY_S = 600


@dataclass
class Plan:
    job_id: str
    spec: JobSpec
    datasets: DatasetsSummary
    output_dir: Path
    #: the backends the job may run on: one, or for --backend auto every cloud with a key that can
    providers: list[str]
    notes: list[str]


def new_job_id() -> str:
    """Sortable, readable and unique enough: ``YYMMDD-HHMMSS-xxxx``."""
    return time.strftime("%y%m%d-%H%M%S") + "-" + secrets.token_hex(2)


def parse_gpu(value: str) -> tuple[list[str], int]:
    """``h100``, ``h100:2`` or a fallback list ``h100,h100-pcie:1`` -> (aliases in order, count)."""
    names, _, count = value.partition(":")
    aliases = [n.strip().lower() for n in names.split(",") if n.strip()]
    if not aliases:
        raise UsageError(f"--gpu {value}: expected NAME[,NAME...][:COUNT], e.g. h100 or h100,a100:2")
    if not count:
        return aliases, 1
    if not count.isdigit() or int(count) < 1:
        raise UsageError(f"--gpu {value}: COUNT must be a positive whole number")
    return aliases, int(count)


#: what a job asks of its provider -> the feature (backends.base.FEATURES) it needs
def needed_features(spec: JobSpec, keep_pod: bool) -> dict[str, str]:
    """feature -> the flag that needs it."""
    wanted = {"watchdog": "--watchdog" if spec.watchdog_s else "", "keep_pod": "--keep-pod" if keep_pod else "",
              "spot": "--spot" if getattr(spec, "spot", False) else ""}
    if spec.reuse_pod:
        wanted["keep_pod"] = "--pod"
    return {feature: flag for feature, flag in wanted.items() if flag}


def check_backend(spec: JobSpec, settings: Settings, *, to_launch: bool = True, keep_pod: bool = False) -> list[str]:
    """The backends the job may run on, checked before any call: a cloud job needs its provider's key,
    GPUs that provider offers, and the features its flags ask for (each refused with the provider's
    reason). ``--backend auto``: every cloud with a key that offers one of the GPUs and every feature.
    An estimate (``to_launch=False``) needs neither a key nor a GPU, only valid aliases."""
    from launcher.backends import AUTO, backend_class, cloud_names, with_keys
    from launcher.catalog import offered_by, resolve_gpu

    wanted = needed_features(spec, keep_pod)
    if spec.backend != AUTO:
        cls = backend_class(spec.backend)
        for alias in spec.gpu if spec.backend != "local" else []:
            resolve_gpu(alias, spec.backend)
        for feature, flag in wanted.items():
            if feature in cls.lacks:
                raise UsageError(f"{flag}: not on {cls.title}: {cls.lacks[feature]}")
        if to_launch and spec.backend != "local":
            if not spec.gpu and not spec.reuse_pod:
                raise UsageError(f"--gpu is required for --backend {spec.backend} "
                                 f"(one of: {', '.join(offered_by(spec.backend))})")
            if not cls.api_key(settings):
                raise UsageError(f"{cls.key_env} is not set (export it, or put it in .env): no machine can be rented")
        return [spec.backend]
    for alias in spec.gpu:
        resolve_gpu(alias)
    clouds = with_keys(settings) if to_launch else cloud_names()
    if to_launch and not clouds:
        keys = " or ".join(str(backend_class(n).key_env) for n in cloud_names())
        raise UsageError(f"no provider key is set: export {keys} (or put it in .env)")
    if to_launch and not spec.gpu:
        raise UsageError("--gpu is required for a cloud job (`rtrain gpus` lists them)")
    why_not = []
    usable = []
    for name in clouds:
        cls = backend_class(name)
        lacking = [f"{flag} ({cls.lacks[f]})" for f, flag in wanted.items() if f in cls.lacks]
        offered = [a for a in spec.gpu if resolve_gpu(a).provider_id(name)] if spec.gpu else [True]
        if lacking:
            why_not.append(f"{cls.title}: {', '.join(lacking)}")
        elif not offered:
            why_not.append(f"{cls.title} offers none of {', '.join(spec.gpu)}")
        else:
            usable.append(name)
    if not usable:
        raise UsageError(f"--backend auto: no provider can run this job ({'; '.join(why_not)})")
    return usable


def parse_duration(value: str) -> int:
    """``90s``, ``30m``, ``2h`` or a bare number of minutes, in seconds."""
    text = value.strip().lower()
    units = {"s": 1, "m": 60, "h": 3600}
    number, unit = (text[:-1], units[text[-1]]) if text and text[-1] in units else (text, 60)
    try:
        seconds = float(number) * unit
    except ValueError:
        seconds = math.nan
    if not math.isfinite(seconds) or seconds <= 0 or seconds > 366 * 86400:
        raise UsageError(f"--watchdog {value}: expected a duration such as 90s, 30m or 2h")
    return int(seconds)


def merge_values(flags: dict[str, Any], template_name: str | None) -> tuple[dict[str, Any], dict[str, str], list[str]]:
    """Defaults <- template <- flags. Returns the values, where each came from, and notes for the user."""
    notes: list[str] = []
    values: dict[str, Any] = {}
    origin: dict[str, str] = {}
    if template_name is None and "model" not in flags:
        template_name = DEFAULT_TEMPLATE
        notes.append(f"no --model given: using the embedded default template '{DEFAULT_TEMPLATE}'")
    if template_name is not None:
        template = load_template(template_name)
        for key, value in template.job.items():
            values[key] = value
            origin[key] = f"{template.path.name}: {key}"
        values["template"] = template_name
    if "lora_alpha" in flags and "lora_rank" not in flags and "lora_rank" not in values:
        raise UsageError("--lora-alpha needs --lora-rank (alpha only means something relative to the rank)")
    for key, value in flags.items():
        values[key] = value
        origin.pop(key, None)
    return values, origin, notes


def check_model(model: str) -> str:
    """The model as the job will name it: the tiny model, a local folder (resolved), or a hub id."""
    if model == TINY_MODEL:
        return model
    path = Path(model).expanduser()
    if path.exists():
        if not path.is_dir() or not (path / "config.json").is_file():
            raise UsageError(f"--model {model}: not a model folder (no config.json in it)")
        return str(path.resolve())
    if model.startswith(("/", "~", "./", "../")):
        raise UsageError(f"--model {model}: no such folder")
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        validate_repo_id(model)  # the hub's own naming rules: nothing that cannot exist is rented for
    except HFValidationError as exc:
        reason = str(exc).split(". ")[0].rstrip(".")
        raise UsageError(f"--model {model}: no such folder, and not a hub id ({reason})") from None
    return model


def model_context(spec: JobSpec) -> tuple[int | None, str]:
    """The model's context in tokens (``max_position_embeddings``) where it can be known without a
    download, and where it was read."""
    config = local_config(spec)
    if config is not None:
        value = config.get("max_position_embeddings")
        return (int(value) if isinstance(value, int) else None), "its config.json"
    from launcher.cost import known_model

    shape = known_model(spec.model)
    return (shape.context or None, "the table of known models") if shape is not None else (None, "")


def local_config(spec: JobSpec) -> dict[str, Any] | None:
    """A local model folder's config.json (the tiny model's too), parsed; None for a hub id."""
    if spec.is_tiny_model:  # what remote/tiny_model.py builds (it may not be built yet)
        return {"model_type": "qwen2", "max_position_embeddings": 4096}
    path = Path(spec.model) / "config.json"
    try:
        config = json.loads(path.read_text()) if path.is_file() else None
    except (ValueError, OSError):
        raise UsageError(f"--model {spec.model}: its config.json cannot be read as JSON") from None
    return config if isinstance(config, dict) else None


def check_context(spec: JobSpec) -> None:
    context, source = model_context(spec)
    if context is not None and spec.max_seq_length > context:
        raise UsageError(f"--max-seq-length {spec.max_seq_length}: beyond {spec.model}'s context of {context:,} "
                         f"tokens (max_position_embeddings, from {source})")


def model_type(spec: JobSpec) -> str | None:
    """transformers' model_type of the job's base, where it can be known without a download: a local
    folder's config.json, the tiny model, or a hub model rtrain knows by name (else None)."""
    config = local_config(spec)
    if config is not None:
        return str(config.get("model_type") or "") or None
    from launcher.cost import known_model

    shape = known_model(spec.model)
    return shape.model_type if shape is not None else None


def check_exports(spec: JobSpec) -> None:
    """Exports that cannot work are refused now, not after the training they would follow (a hub model
    rtrain does not know is checked by the trainer, before its weights load)."""
    from remote.families import gguf_refusal

    wants_gguf = bool({"gguf", "modelfile"} & set(spec.exports))
    refusal = gguf_refusal(model_type(spec), spec.model) if wants_gguf else None
    if refusal:
        raise UsageError(refusal)
    targets = spec.target_modules if isinstance(spec.target_modules, list) else []
    carried = [t for t in targets if t in ("embed_tokens", "lm_head")]
    if wants_gguf and carried:
        raise UsageError(f"--gguf/--modelfile: the adapter would carry {', '.join(carried)} weights, which a "
                         "llama.cpp LoRA adapter cannot hold (use --merged, or leave them out of target_modules)")
    if "merged" in spec.exports:
        config = Path(spec.model) / "config.json"
        quantized = "bnb-4bit" in spec.model.lower() or (
            config.is_file() and "quantization_config" in json.loads(config.read_text()))
        if quantized:
            raise UsageError(f"--merged: {spec.model} is a 4-bit checkpoint; merging rounds the adapter into 4-bit "
                             "weights and loses what it learned (train on the 16-bit base, or export later with "
                             "`rtrain export --merged --base <16-bit model>`)")


def check_adapter(path: str) -> str:
    folder = Path(path).expanduser()
    if not (folder / "adapter_config.json").is_file():
        raise UsageError(f"--from-adapter {path}: not a PEFT adapter folder (no adapter_config.json in it)")
    return str(folder.resolve())


def check_output(output: str | None, runs_dir: Path, job_id: str) -> Path:
    path = Path(output).expanduser() if output else runs_dir / job_id
    if path.exists() and (not path.is_dir() or any(path.iterdir())):
        raise UsageError(f"--output {path}: already exists and is not empty (rtrain never overwrites an adapter)")
    return path.resolve()


def validate(flags: dict[str, Any], template: str | None, settings: Settings, *, to_launch: bool = True,
             keep_pod: bool = False) -> Plan:
    flags = dict(flags)
    if "gpu" in flags:
        flags["gpu"], flags["gpu_count"] = parse_gpu(flags["gpu"])
    if "watchdog" in flags:
        flags["watchdog_s"] = parse_duration(flags.pop("watchdog"))
    values, origin, notes = merge_values(flags, template)
    if not values.get("datasets") and values.get("backend", "local") == "local":
        values["datasets"] = [str(sample_dataset())]
        notes.append(f"no --dataset given: using the bundled sample {sample_dataset().name}")
    spec = spec_from(values, origin)
    spec.model = check_model(spec.model)
    check_context(spec)
    if spec.backend == "local" and spec.gpu:
        notes.append(f"--gpu {','.join(spec.gpu)} is ignored by the local backend (it uses this machine)")
    providers = check_backend(spec, settings, to_launch=to_launch, keep_pod=keep_pod)
    datasets = validate_datasets(spec.datasets)
    spec.datasets = [p if is_s3(p) else str(Path(p).resolve()) for p in spec.datasets]
    if spec.eval_datasets:
        validate_datasets(spec.eval_datasets)
        spec.eval_datasets = [p if is_s3(p) else str(Path(p).resolve()) for p in spec.eval_datasets]
    if spec.from_adapter:
        spec.from_adapter = check_adapter(spec.from_adapter)
    check_exports(spec)
    if spec.backend != "local" and spec.save_steps is None and spec.save_every_s is None:
        spec.save_every_s = DEFAULT_SAVE_EVERY_S  # a lost machine then costs at most this much training
    job_id = new_job_id()
    output_dir = check_output(spec.output_dir, settings.runs_dir, job_id) if to_launch else Path(".")
    return Plan(job_id=job_id, spec=spec, datasets=datasets, output_dir=output_dir, providers=providers, notes=notes)
