"""`rtrain export` and `rtrain merge-adapters`: the serving files, made on this machine by the
trainer's own export code (``python -m remote.export``, run with the local training stack)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import click


def _run_export(args: list[str]) -> list[str]:
    """Run ``python -m remote.export ARGS``; its refusals are usage errors (exit 2)."""
    from launcher.bundle import trainer_env_pythonpath
    from launcher.config import load_settings
    from launcher.errors import TrainingError, UsageError

    python = load_settings().local_python or sys.executable
    env = dict(os.environ, PYTHONPATH=trainer_env_pythonpath(), HF_HUB_DISABLE_PROGRESS_BARS="1")
    proc = subprocess.run([python, "-m", "remote.export", *args], capture_output=True, text=True, env=env)
    if proc.returncode == 2:
        raise UsageError((proc.stderr.strip().splitlines() or ["refused"])[-1])
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise TrainingError(f"export failed: {last}")
    return list(json.loads(proc.stdout.strip().splitlines()[-1])["files"])


def _require_training_stack(what: str) -> None:
    from launcher.bundle import require_training_stack
    from launcher.config import load_settings

    require_training_stack(load_settings().local_python or sys.executable, what)


def _adapter_and_base(target: str) -> tuple[Path, str | None]:
    """A job (id, prefix, name) or an adapter folder -> (adapter folder, base model when known)."""
    from launcher.bundle import tiny_model_dir
    from launcher.config import TINY_MODEL, load_settings
    from launcher.errors import UsageError
    from launcher.state import Registry

    folder = Path(target).expanduser()
    if (folder / "adapter_config.json").is_file():
        return folder, None
    try:
        rec = Registry.open_default().get(target)
    except KeyError:
        raise UsageError(f"{target}: neither a job nor an adapter folder (no adapter_config.json)") from None
    if not rec.adapter_dir or not Path(rec.adapter_dir, "adapter_config.json").is_file():
        raise UsageError(f"job {rec.id} has no adapter here (status {rec.status})")
    model = rec.spec_dict["model"]
    if model == TINY_MODEL:
        model = str(tiny_model_dir(load_settings().rtrain_home()))
    return Path(rec.adapter_dir), model


@click.command(name="export")
@click.argument("job")
@click.option("--gguf", is_flag=True, help="A llama.cpp LoRA adapter (adapter.gguf).")
@click.option("--modelfile", is_flag=True, help="An Ollama Modelfile (with the GGUF adapter).")
@click.option("--merged", is_flag=True, help="The base model with the adapter merged in, in the base's dtype.")
@click.option("--base", metavar="ID_OR_PATH", help="The base model [default: the job's, or the adapter's].")
@click.option("--out", metavar="DIR", help="Where to write [default: next to the adapter, in export/].")
@click.option("--force", is_flag=True, help="Merge even into a 4-bit base (loses precision).")
def export_cmd(job: str, gguf: bool, modelfile: bool, merged: bool, base: str | None, out: str | None,
               force: bool) -> None:
    """Make serving files from a job's adapter (or an adapter folder): GGUF, Modelfile, merged."""
    from launcher.errors import UsageError

    _require_training_stack("rtrain export")
    if not (gguf or modelfile or merged):
        raise UsageError("say what to export: --gguf, --modelfile and/or --merged")
    adapter, job_base = _adapter_and_base(job)
    target = Path(out).expanduser() if out else adapter.parent / "export"
    args = ["export", "--adapter", str(adapter), "--out", str(target)]
    args += ["--base", base or job_base] if (base or job_base) else []
    args += [flag for flag, on in (("--gguf", gguf), ("--modelfile", modelfile), ("--merged", merged),
                                   ("--force", force)) if on]
    for name in _run_export(args):
        click.echo(str(target / name))


@click.command(name="merge-adapters")
@click.argument("adapters", nargs=-1, required=True)
@click.option("--weights", required=True, metavar="W1,W2,...", help="One weight per adapter, e.g. 0.7,0.3.")
@click.option("--out", required=True, metavar="DIR", help="The combined adapter's folder (must not exist).")
@click.option("--base", metavar="ID_OR_PATH", help="The base model [default: the first adapter's].")
def merge_adapters_cmd(adapters: tuple[str, ...], weights: str, out: str, base: str | None) -> None:
    """Combine adapters into one whose update is exactly the weighted sum (PEFT "cat")."""
    from launcher.errors import UsageError

    _require_training_stack("rtrain merge-adapters")
    if len(adapters) < 2:
        raise UsageError("merge-adapters needs at least two adapters")
    try:
        numbers = [float(w) for w in weights.split(",")]
    except ValueError:
        raise UsageError(f"--weights {weights}: expected numbers separated by commas, e.g. 0.7,0.3") from None
    if len(numbers) != len(adapters):
        raise UsageError(f"--weights {weights}: {len(numbers)} weights for {len(adapters)} adapters")
    target = Path(out).expanduser()
    if target.exists():
        raise UsageError(f"--out {out}: already exists (rtrain never overwrites an adapter)")
    resolved = [_adapter_and_base(a) for a in adapters]
    base = base or resolved[0][1]
    args = ["merge-adapters", *[str(a) for a, _ in resolved], "--weights", weights, "--out", str(target)]
    args += ["--base", base] if base else []
    _run_export(args)
    click.echo(str(target))
