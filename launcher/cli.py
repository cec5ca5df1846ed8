"""The ``rtrain`` command line.

Start-up is kept fast (``rtrain --help`` and ``rtrain ls`` well under 200 ms): this module imports
only click at the top; everything else is imported inside the command that needs it. Exit codes are
mapped in one place, ``main``: 0 success, 1 training failed, 2 bad input, 3 provider or
infrastructure, 130 interrupted.
"""

from __future__ import annotations

import json
import os
import signal
import sys
from typing import TYPE_CHECKING, Any

import click

from launcher.cli_options import find_job, job_options, job_values, load_settings, open_registry

if TYPE_CHECKING:
    from launcher.state import JobRecord



def _err(message: str) -> None:
    click.echo(f"error: {message}", err=True)


class LazyGroup(click.Group):
    """Imports a command's module only when that command runs (``rtrain --help`` imports none of them:
    each one's one-line help is kept here)."""

    def __init__(self, *args: Any, lazy: dict[str, tuple[str, str]], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.lazy = lazy

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *self.lazy})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in self.lazy and cmd_name not in self.commands:
            import importlib

            module, _, attr = self.lazy[cmd_name][0].partition(":")
            self.add_command(getattr(importlib.import_module(module), attr), cmd_name)
        return super().get_command(ctx, cmd_name)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = [(name, self.lazy[name][1] if name in self.lazy else self.commands[name].get_short_help_str(120))
                for name in self.list_commands(ctx)]
        with formatter.section("Commands"):
            formatter.write_dl(rows)


#: command -> (where it lives, its one-line help for `rtrain --help`)
LAZY = {
    "ls": ("launcher.cli_jobs:list_jobs", "List jobs, newest last (and, with --pods, the machines providers run)."),
    "show": ("launcher.cli_jobs:show", "Show one job: its spec, outcome and events."),
    "logs": ("launcher.cli_jobs:logs", "Print a job's trainer log (from its machine while it runs)."),
    "gpus": ("launcher.cli_cost:gpus", "The GPUs rtrain knows, every provider side by side, with prices."),
    "cost": ("launcher.cli_cost:cost", "What a job will cost on each provider and GPU, before anything is rented."),
    "export": ("launcher.cli_export:export_cmd", "Make serving files from a job's adapter: GGUF, Modelfile, merged."),
    "merge-adapters": ("launcher.cli_export:merge_adapters_cmd",
                       "Combine adapters into one whose update is exactly the weighted sum."),
    "ui": ("launcher.cli_ui:ui", "A local dashboard of every job: live loss curves, costs, a stop button."),
    "doctor": ("launcher.cli_doctor:doctor", "Check this machine: Python, the training stack, provider keys, "
                                             "RTRAIN_HOME, disk."),
}


@click.group(cls=LazyGroup, lazy=LAZY, context_settings={"help_option_names": ["-h", "--help"],
                                                         "max_content_width": 100})
def cli() -> None:
    """rtrain: fine-tune chat LLMs (LoRA/QLoRA) on a rented GPU, or this machine, with one command."""


@cli.command()
def version() -> None:
    """Print rtrain's version."""
    from launcher import __version__

    click.echo(f"rtrain {__version__}")


@cli.command()
@job_options
@click.option("--output", metavar="DIR", help="Where the adapter lands [default: runs/<job-id>].")
@click.option("--detach", is_flag=True, help="Start the trainer and return; come back with `rtrain resume`.")
@click.option("--keep-pod", is_flag=True, help="Leave the machine running after the job.")
@click.option("--pod", "reuse_pod", metavar="POD_ID", help="Run on a machine an earlier job kept (--keep-pod).")
@click.option("--watchdog", metavar="DURATION",
              help="Let the pod end itself when the finished job goes unfollowed this long (e.g. 30m).")
@click.option("--gguf", "export_gguf", is_flag=True, help="Also make a llama.cpp GGUF adapter at the end.")
@click.option("--modelfile", "export_modelfile", is_flag=True, help="Also make an Ollama Modelfile (and GGUF).")
@click.option("--merged", "export_merged", is_flag=True, help="Also make the merged model (base's dtype; large).")
@click.option("--s3", metavar="s3://BUCKET/PREFIX", help="Push the outputs to S3 at the end (PREFIX/<job-id>/).")
@click.option("--force", is_flag=True, help="Launch even on a GPU the estimate says is too small.")
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation before renting.")
@click.option("--json", "as_json", is_flag=True, help="Last line of stdout: the job as one JSON object.")
def launch(local: bool, backend: str | None, template: str | None, output: str | None, datasets: tuple[str, ...],
           detach: bool, keep_pod: bool, force: bool, yes: bool, as_json: bool, export_gguf: bool,
           export_modelfile: bool, export_merged: bool, s3: str | None, **flags: Any) -> None:
    """Validate, estimate, provision, upload, train, download the adapter, tear down."""
    from launcher.errors import RtrainError
    from launcher.job import launch as run_launch
    from launcher.ui import Reporter

    values = job_values(local, backend, datasets, flags, default_cloud=False)
    if s3:
        values["s3"] = s3
    if output:
        values["output_dir"] = output
    exports = [name for name, on in (("gguf", export_gguf), ("modelfile", export_modelfile),
                                     ("merged", export_merged)) if on]
    if exports:
        values["exports"] = exports
    registry = open_registry()
    known = {r.id for r in registry.jobs()}
    try:
        rec = run_launch(values, template, settings=load_settings(), registry=registry, ui=Reporter(),
                         detach=detach, keep_pod=keep_pod, force=force, yes=yes)
    except RtrainError:
        created = [r for r in registry.jobs() if r.id not in known]
        if as_json and created:
            click.echo(json.dumps(_public(created[-1])))
        raise
    _report(rec, as_json)


def _public(rec: JobRecord) -> dict[str, Any]:
    keys = ("job_id", "status", "backend", "output_dir", "adapter_dir", "steps", "final_loss", "cost_usd", "pod_id")
    data = rec.public()
    summary = [e for e in open_registry().events(rec.id) if e["kind"] == "summary" and e["data"]]
    return {**{k: data[k] for k in keys}, "summary": summary[-1]["data"]["lines"] if summary else []}


def _report(rec: JobRecord, as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps(_public(rec)))
        return
    if rec.status == "running":
        click.echo(f"job {rec.id} is running detached on {rec.pod_id}: `rtrain resume {rec.id}` to follow it")
        return
    loss = f", final loss {rec.final_loss:.4f}" if rec.final_loss is not None else ""
    cost = ""
    if rec.cost_usd and rec.started_at and rec.finished_at:
        from launcher.ui import fmt_duration

        cost = (f", billed ${rec.cost_usd:.2f} ({fmt_duration(rec.finished_at - rec.started_at)} at "
                f"${rec.price_per_hr or 0:.2f}/hr)")
    click.echo(f"job {rec.id} {rec.status}: {rec.steps} steps{loss}{cost}")
    if rec.adapter_dir:
        click.echo(f"adapter: {rec.adapter_dir}")


@cli.command()
@click.argument("job")
@click.option("--json", "as_json", is_flag=True, help="Last line of stdout: the job as one JSON object.")
def resume(job: str, as_json: bool) -> None:
    """Reattach to a job whose launcher died: follow, download, tear down."""
    from launcher.errors import UsageError
    from launcher.job import Lifecycle
    from launcher.state import FINISHED
    from launcher.ui import Reporter

    registry = open_registry()
    rec = find_job(registry, job)
    if rec.status in FINISHED:
        raise UsageError(f"job {rec.id} already {rec.status}: nothing to resume")
    lifecycle = Lifecycle(rec.id, load_settings(), registry, Reporter())
    _report(lifecycle.run(resume=True), as_json)


@cli.command()
@click.argument("target")
def down(target: str) -> None:
    """End a job's machine (by job id, name or machine id), or an rtrain machine or leftover no job here
    knows."""
    from launcher.teardown import down as end

    click.echo(end(target, load_settings(), open_registry()))


@cli.command()
def templates() -> None:
    """List the run presets for --template."""
    from launcher.templates import available, load_template

    for name in available():
        t = load_template(name)
        click.echo(f"{click.style(name, bold=True)}\n    {t.description}")
        if t.gpus:
            click.echo(f"    fits: {', '.join(t.gpus)}")


@cli.command(name="init-tiny-model")
@click.argument("directory", type=click.Path(file_okay=False))
def init_tiny_model(directory: str) -> None:
    """Build rtrain's tiny offline model (Qwen2 architecture, BPE tokenizer, ChatML) into DIRECTORY."""
    import subprocess

    from launcher.bundle import require_training_stack, trainer_env_pythonpath
    from launcher.errors import TrainingError
    from launcher.paths import sample_dataset

    python = load_settings().local_python or sys.executable
    require_training_stack(python, "init-tiny-model")
    env = dict(os.environ, PYTHONPATH=trainer_env_pythonpath())
    cmd = [python, "-m", "remote.tiny_model", directory, "--data", str(sample_dataset())]
    if subprocess.run(cmd, env=env).returncode != 0:
        raise TrainingError("building the tiny model failed (its output above says why)")


def _sigterm_as_interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    """Entry point: run the CLI and map every outcome to an exit code, with a one-line error."""
    from launcher.errors import RtrainError

    # A kill or a closed terminal must still run teardown (a pod left behind keeps billing).
    signal.signal(signal.SIGTERM, _sigterm_as_interrupt)
    if hasattr(signal, "SIGHUP"):
        signal.signal(signal.SIGHUP, _sigterm_as_interrupt)
    try:
        result = cli.main(args=argv, prog_name="rtrain", standalone_mode=False)
        return result if isinstance(result, int) else 0
    except click.exceptions.Exit as exc:
        return exc.exit_code
    except click.exceptions.Abort:
        _err("aborted")
        return 130
    except click.ClickException as exc:
        _err(exc.format_message())
        return 2
    except KeyboardInterrupt:
        _err("interrupted")
        return 130
    except RtrainError as exc:
        _err(str(exc))
        return exc.exit_code
    except Exception as exc:
        if os.environ.get("RTRAIN_DEBUG"):
            raise
        _err(f"internal error: {type(exc).__name__}: {exc} (set RTRAIN_DEBUG=1 for a traceback)")
        return 1


if __name__ == "__main__":
    sys.exit(main())
