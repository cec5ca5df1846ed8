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

from launcher.cli_options import job_options, job_values

if TYPE_CHECKING:
    from launcher.state import JobRecord, Registry



def _err(message: str) -> None:
    click.echo(f"error: {message}", err=True)


def _registry() -> Registry:
    from launcher.state import Registry

    return Registry.open_default()


def _settings() -> Any:
    from launcher.config import Settings

    return Settings()


def _find(registry: Registry, key: str) -> JobRecord:
    from launcher.errors import UsageError

    try:
        return registry.get(key)
    except KeyError as exc:
        raise UsageError(str(exc.args[0])) from None


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
@click.option("--merged", "export_merged", is_flag=True, help="Also make the merged 16-bit model (large).")
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

    settings = _settings()
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
    registry = _registry()
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

    registry = _registry()
    rec = _find(registry, job)
    if rec.status in FINISHED:
        raise UsageError(f"job {rec.id} already {rec.status}: nothing to resume")
    lifecycle = Lifecycle(rec.id, _settings(), registry, Reporter())
    _report(lifecycle.run(resume=True), as_json)


@cli.command()
@click.argument("target")
def down(target: str) -> None:
    """Terminate a job's machine (by job id, name or pod id), or an rtrain pod no job here knows."""
    import time

    from launcher.backends import get_backend
    from launcher.errors import UsageError
    from launcher.job import terminate_with_retries
    from launcher.keys import delete_job_keys

    registry, settings = _registry(), _settings()
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


@cli.command(name="ls")
@click.option("--json", "as_json", is_flag=True, help="Print the jobs as a JSON list.")
@click.option("--pods", is_flag=True, help="Also ask each provider with a key which rtrain pods are up.")
def list_jobs(as_json: bool, pods: bool) -> None:
    """List jobs, newest last (and, with --pods, the pods the providers still run)."""
    registry = _registry()
    jobs = registry.jobs()
    live = _live_pods(jobs) if pods else None
    if as_json:
        listed = [r.public() for r in jobs]
        click.echo(json.dumps({"jobs": listed, "pods": live} if pods else listed))
        return
    if live is not None:
        _print_pods(live)
    if not jobs:
        click.echo("no jobs yet: try `rtrain launch --local`")
        return
    header = ("JOB", "NAME", "STATUS", "PHASE", "BACKEND", "STEPS", "LOSS", "COST", "CREATED", "POD")
    rows = []
    for r in jobs:
        created = (r.public()["created_at"] or "").replace("T", " ").rstrip("Z")
        rows.append((r.id, r.name or "", _status_word(r), r.phase, r.backend, str(r.steps or ""),
                     f"{r.final_loss:.4f}" if r.final_loss is not None else "",
                     f"${r.cost_usd:.2f}" if r.cost_usd is not None else "", created, r.pod_id or ""))
    # A plain aligned table: rich's Table renders 200 rows in ~250 ms, and `rtrain ls` must start fast.
    widths = [max(len(row[i]) for row in (header, *rows)) for i in range(len(header))]
    click.echo(click.style("  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)).rstrip(), bold=True))
    for row in rows:
        cells = [click.style(c.ljust(w), fg=_STATUS_COLOUR.get(c)) if i == 2 else c.ljust(w)
                 for i, (c, w) in enumerate(zip(row, widths, strict=True))]
        click.echo("  ".join(cells).rstrip())


_STATUS_COLOUR = {"succeeded": "green", "failed": "red", "interrupted": "yellow", "running": "cyan",
                  "LEAK RISK": "red"}


def _live_pods(jobs: list[JobRecord]) -> list[dict[str, Any]]:
    """rtrain's pods that providers with a key set still run, matched to this machine's jobs."""
    from launcher.backends import get_backend

    settings = _settings()
    by_pod = {j.pod_id: j.id for j in jobs if j.pod_id}
    by_name = {j.pod_name: j.id for j in jobs if j.pod_name}
    found = []
    if settings.runpod_api_key is not None:
        for pod in get_backend("runpod", settings).list():
            found.append({"backend": "runpod", "pod_id": pod.id, "name": pod.name, "status": pod.status,
                          "price_per_hr": pod.price_per_hr,
                          "job_id": by_pod.get(pod.id) or by_name.get(pod.name)})
    return found


def _print_pods(pods: list[dict[str, Any]]) -> None:
    if not pods:
        click.echo("no rtrain pod is running on any provider with a key set\n")
        return
    click.echo(click.style(f"{len(pods)} rtrain pod(s) up, billing:", bold=True))
    for p in pods:
        owner = f"job {p['job_id']}" if p["job_id"] else click.style("no job here: `rtrain down " + p["pod_id"] + "`",
                                                                     fg="red")
        click.echo(f"  {p['backend']:<7} {p['pod_id']:<16} {p['name']:<32} {p['status']:<10} "
                   f"${p['price_per_hr']:.2f}/hr  {owner}")
    click.echo("")


def _status_word(rec: JobRecord) -> str:
    return "LEAK RISK" if (rec.error or "").startswith("LEAK RISK") else rec.status


@cli.command()
@click.argument("job")
@click.option("--json", "as_json", is_flag=True, help="Print the job and its events as JSON.")
def show(job: str, as_json: bool) -> None:
    """Show one job: its spec, outcome and events."""
    import time

    registry = _registry()
    rec = _find(registry, job)
    events = registry.events(rec.id)
    if as_json:
        click.echo(json.dumps({**rec.public(), "spec": rec.spec_dict, "events": events}))
        return
    d = rec.public()
    for key in ("job_id", "name", "status", "phase", "backend", "pod_id", "output_dir", "adapter_dir", "steps",
                "final_loss", "cost_usd", "created_at", "updated_at", "error"):
        if d.get(key) is not None:
            click.echo(f"{key:>12}: {d[key]}")
    estimate = next((e for e in events if e["kind"] == "estimate"), None)
    if estimate is not None:
        billed = f"billed ${rec.cost_usd:.2f}" if rec.cost_usd is not None else "not billed yet"
        click.echo(f"{'cost':>12}: {billed}; {estimate['message']}")
    spec = rec.spec_dict
    click.echo(f"{'spec':>12}: " + ", ".join(f"{k}={v}" for k, v in sorted(spec.items()) if v is not None))
    click.echo("events:")
    for ev in events:
        stamp = time.strftime("%H:%M:%S", time.localtime(ev["ts"]))
        click.echo(f"  {stamp} {ev['kind']:<16} {ev['message']}")


@cli.command()
@click.argument("job")
@click.option("--events", "show_events", is_flag=True, help="Print the trainer's JSON events instead of its log.")
@click.option("--follow", "-f", is_flag=True, help="Keep printing as the trainer writes, until it ends.")
def logs(job: str, show_events: bool, follow: bool) -> None:
    """Print a job's trainer log (from its machine while it runs, from runs/<job>/logs after)."""
    import shlex
    import time
    from pathlib import Path

    from launcher.backends import get_backend
    from launcher.errors import UsageError
    from launcher.remote_trainer import EVENTS, EXIT_CODE, LOG

    registry = _registry()
    rec = _find(registry, job)
    name = EVENTS if show_events else LOG
    saved = Path(rec.output_dir or "") / "logs" / name
    backend = get_backend(rec.backend, _settings())
    pod = backend.get(rec.pod_id) if rec.pod_id else None
    if pod is not None and rec.workdir:
        from launcher.keys import load_job_keys
        from launcher.transfer import read_from

        ex, offset = backend.executor(pod, load_job_keys(_settings().rtrain_home(), rec.id)), 0
        while True:
            data = read_from(ex, f"{rec.workdir}/{name}", offset)
            sys.stdout.write(data.decode(errors="replace"))
            sys.stdout.flush()
            offset += len(data)
            ended = f"test -f {shlex.quote(rec.workdir)}/{EXIT_CODE} || ! test -d {shlex.quote(rec.workdir)}"
            if not follow or (not data and ex.run(ended).ok):
                break
            if not data:
                time.sleep(1.0)
    elif saved.is_file():
        sys.stdout.write(saved.read_text(errors="replace"))
    else:
        raise UsageError(f"job {rec.id}: no {name} (its machine is gone and no copy was saved)")


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
    cmd = [_settings().local_python or sys.executable, "-m", "remote.tiny_model", directory,
           "--data", str(sample_dataset())]
    if subprocess.run(cmd, env=env).returncode != 0:
        raise TrainingError("building the tiny model failed (is rtrain[train] installed?)")


def _register_commands() -> None:
    from launcher.cli_cost import cost, gpus
    from launcher.cli_export import export_cmd, merge_adapters_cmd

    for command in (gpus, cost, export_cmd, merge_adapters_cmd):
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
