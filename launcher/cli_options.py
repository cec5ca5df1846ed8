"""The job flags `rtrain launch` and `rtrain cost` share, so that an estimate is always for exactly
the job `launch` would run (one JobSpec, built the same way)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import click

from launcher.backends import AUTO, REGISTRY

if TYPE_CHECKING:
    from launcher.config import Settings
    from launcher.state import JobRecord, Registry

_JOB_OPTIONS = [
    click.option("--local", "local", is_flag=True, help="Run on this machine (same as --backend local)."),
    click.option("--backend", type=click.Choice([*REGISTRY, AUTO]),
                 help="Where to run [default: local; auto (the cheapest provider with a key) when --gpu is given]."),
    click.option("--gpu", metavar="NAME[,NAME...][:COUNT]",
                 help="GPU type(s) in order of preference, and count: h100, h100,a100:2 (`rtrain gpus`)."),
    click.option("--region", metavar="NAME", help="The provider's region (Lambda) or data center (RunPod) to use."),
    click.option("--model", metavar="ID_OR_PATH", help="Hub id or local folder [default: the template's]."),
    click.option("--dataset", "datasets", multiple=True, metavar="PATH", help="JSONL dataset (repeatable)."),
    click.option("--template", metavar="NAME", help="Run preset from templates/ (see `rtrain templates`)."),
    click.option("--epochs", type=float, help="Passes over the data."),
    click.option("--max-steps", type=int, help="Stop after this many optimizer steps."),
    click.option("--max-samples", type=int, help="Use at most this many examples (a seeded sample)."),
    click.option("--lr", type=float, help="Learning rate."),
    click.option("--lora-rank", type=int, help="LoRA rank r."),
    click.option("--lora-alpha", type=int, help="LoRA alpha [default: 2 x rank]; needs --lora-rank."),
    click.option("--max-seq-length", type=int, help="Longest sequence in tokens; longer ones are truncated."),
    click.option("--batch-size", type=int, help="Per-device batch size."),
    click.option("--grad-accum", type=int, help="Gradient accumulation steps."),
    click.option("--load-in-4bit", is_flag=True, default=None, help="QLoRA: load the base model in 4 bits."),
    click.option("--packing/--no-packing", default=None,
                 help="Pack examples into full rows [default: on]."),
    click.option("--eval-fraction", type=float, help="Held-out share of the data for evaluation [default: 0.05]."),
    click.option("--eval-dataset", "eval_datasets", multiple=True, metavar="PATH",
                 help="Evaluate on this dataset instead of a held-out share (repeatable)."),
    click.option("--eval-steps", type=int, help="Also evaluate every N steps (always at the end)."),
    click.option("--save-steps", type=int,
                 help="Checkpoint every N steps [default on a cloud: every 10 min]; a lost machine resumes there."),
    click.option("--spot", is_flag=True, default=None, help="Rent interruptible (spot) capacity: cheaper, recovered."),
    click.option("--max-recoveries", type=int, help="Replace (or resume) a lost machine this often [default: 3]."),
    click.option("--save-total-limit", type=int, help="Keep the last K checkpoints [default: 2]."),
    click.option("--from-adapter", metavar="DIR", help="Continue training this PEFT adapter."),
    click.option("--name", help="A name for the job (shown by `rtrain ls`)."),
]


def job_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    for option in reversed(_JOB_OPTIONS):
        fn = option(fn)
    return fn


def job_values(local: bool, backend: str | None, datasets: tuple[str, ...], flags: dict[str, Any], *,
               default_cloud: bool) -> dict[str, Any]:
    """JobSpec values from the flags given (None means not given: the template or default decides)."""
    from launcher.errors import UsageError

    if local and backend not in (None, "local"):
        raise UsageError(f"--local and --backend {backend} disagree: give one")
    values = {k: v for k, v in flags.items() if v is not None and v != ()}
    if "eval_datasets" in values:
        values["eval_datasets"] = list(values["eval_datasets"])
    # --gpu (or --pod) alone means a cloud GPU: the cheapest provider with a key, unless one is named
    cloud = default_cloud or values.get("gpu") or values.get("reuse_pod")
    values["backend"] = "local" if local else (backend or (AUTO if cloud else "local"))
    if datasets:
        values["datasets"] = list(datasets)
    return values


def open_registry() -> Registry:
    from launcher.state import Registry

    return Registry.open_default()


def load_settings() -> Settings:
    from launcher.config import load_settings as load

    return load()


def find_job(registry: Registry, key: str) -> JobRecord:
    from launcher.errors import UsageError

    try:
        return registry.get(key)
    except KeyError as exc:
        raise UsageError(str(exc.args[0])) from None
