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


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
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
@click.option("--pod", "reuse_pod", metavar="POD_ID", help="Run on a pod an earlier job kept (--keep-pod).")
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
    values = job_values(local, backend, datasets, flags, default_cloud=False)
    if s3:
        values["s3"] = s3
    if output:
        values["output_dir"] = output
    exports = [name for name, on in (("gguf", export_gguf), ("modelfile", export_modelfile),
                                     ("merged", export_merged)) if on]
    if exports:
        values["exports"] = exports
    _run_job(values, template, detach=detach, keep_pod=keep_pod, force=force, yes=yes, as_json=as_json)


def _run_job(values: dict[str, Any], template: str | None, *, detach: bool, keep_pod: bool, force: bool,
             yes: bool, as_json: bool) -> None:
    from launcher.bundle import training_stack_missing
    from launcher.errors import RtrainError, UsageError
    from launcher.job import Lifecycle, create_job
    from launcher.plan import validate
    from launcher.ui import Reporter

    settings = load_settings()
    ui = Reporter()
    plan = validate(values, template, settings)
    if plan.spec.backend == "local":
        missing = training_stack_missing(settings.local_python)
        if missing:
            raise UsageError(f"the local backend needs the training stack ({', '.join(missing)} missing): "
                             "pip install 'rtrain[train]'")
    for note in plan.notes:
        ui.info(note)
    for summary in plan.datasets.files:
        ui.info(summary.describe())
    registry = open_registry()
    estimate = None
    if plan.spec.reuse_pod:
        from launcher.job import owning_job

        owning_job(registry, plan.spec.reuse_pod)  # a usage error, before anything is recorded
    elif plan.spec.backend != "local":
        from launcher.cli_cost import confirm_launch

        estimate = confirm_launch(plan, settings, ui, force=force, yes=yes)
    create_job(plan, registry)
    if estimate is not None:
        registry.add_event(plan.job_id, "estimate", estimate["summary"], estimate)
    lifecycle = Lifecycle(plan.job_id, settings, registry, ui, keep_pod=keep_pod, detach=detach)
    try:
        rec = lifecycle.run()
    except RtrainError:
        if as_json:
            click.echo(json.dumps(_public(registry.get(plan.job_id))))
        raise
    _report(rec, as_json)


def _public(rec: JobRecord) -> dict[str, Any]:
    keys = ("job_id", "status", "backend", "output_dir", "adapter_dir", "steps", "final_loss", "cost_usd", "pod_id")
    data = rec.public()
    return {k: data[k] for k in keys}


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
    """Terminate a job's machine (by job id, name or pod id), or an rtrain pod no job here knows."""
    import time

    from launcher.backends import get_backend
    from launcher.errors import UsageError
    from launcher.keys import delete_job_keys
    from launcher.teardown import terminate_with_retries

    registry, settings = open_registry(), load_settings()
    try:
        rec = registry.get(target)
    except KeyError as exc:
        if "several" in str(exc.args[0]):
            raise UsageError(str(exc.args[0])) from None
        _down_orphan(target, settings)
        return
    if rec.pod_id is None:
        click.echo(f"job {rec.id} has no pod")
        return
    terminate_with_retries(get_backend(rec.backend, settings), rec.pod_id)
    now = time.time()
    values: dict[str, Any] = {"finished_at": rec.finished_at or now}
    if rec.price_per_hr is not None and rec.started_at is not None:
        values["cost_usd"] = round(rec.price_per_hr * (now - rec.started_at) / 3600, 4)  # it billed until now
    if rec.status == "running":
        values.update(status="interrupted", error="stopped by rtrain down")
    elif (rec.error or "").startswith("LEAK RISK"):
        values["error"] = rec.error.removeprefix("LEAK RISK: ") + " (terminated later by rtrain down)"
    registry.update(rec.id, **values)
    registry.add_event(rec.id, "down", f"pod {rec.pod_id} terminated by rtrain down")
    delete_job_keys(settings.rtrain_home(), rec.id)
    click.echo(f"terminated {rec.pod_id} (job {rec.id})")


def _down_orphan(pod_id: str, settings: Any) -> None:
    """A pod no job of this machine knows (another laptop's, a lost registry): end it if it is ours."""
    from launcher.backends import get_backend
    from launcher.errors import UsageError

    if settings.runpod_api_key is None:
        raise UsageError(f"no job {pod_id!r} here, and no RUNPOD_API_KEY to look for a pod with that id")
    backend = get_backend("runpod", settings)
    pod = backend.get(pod_id)
    if pod is None or not pod.name.startswith("rtrain-"):
        raise UsageError(f"no job {pod_id!r} here, and RunPod has no rtrain pod with that id")
    backend.terminate(pod.id)
    click.echo(f"terminated {pod.id} ({pod.name}, not a job of this machine)")


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

    from launcher.bundle import trainer_env_pythonpath
    from launcher.errors import TrainingError
    from launcher.paths import sample_dataset

    env = dict(os.environ, PYTHONPATH=trainer_env_pythonpath())
    cmd = [load_settings().local_python or sys.executable, "-m", "remote.tiny_model", directory,
           "--data", str(sample_dataset())]
    if subprocess.run(cmd, env=env).returncode != 0:
        raise TrainingError("building the tiny model failed (is rtrain[train] installed?)")


def _register_commands() -> None:
    from launcher.cli_cost import cost, gpus
    from launcher.cli_export import export_cmd, merge_adapters_cmd
    from launcher.cli_jobs import list_jobs, logs, show

    for command in (list_jobs, show, logs, gpus, cost, export_cmd, merge_adapters_cmd):
        cli.add_command(command)


_register_commands()


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
