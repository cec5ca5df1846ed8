"""`rtrain ls`, `rtrain show`, `rtrain logs`: what the registry (and the machines) know of jobs.

`ls` must start fast: it needs only click, sqlite3 and the registry; rich is not used for its table.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from launcher.cli_options import find_job, load_settings, open_registry

if TYPE_CHECKING:
    from launcher.state import JobRecord


@click.command(name="ls")
@click.option("--json", "as_json", is_flag=True, help="Print the jobs as a JSON list.")
@click.option("--pods", is_flag=True, help="Also ask each provider with a key which rtrain pods are up.")
def list_jobs(as_json: bool, pods: bool) -> None:
    """List jobs, newest last (and, with --pods, the pods the providers still run)."""
    registry = open_registry()
    jobs = registry.jobs()
    live = _live_pods(jobs) if pods else None
    if as_json:
        listed = [r.public() for r in jobs]
        click.echo(json.dumps({"jobs": listed, **live} if live is not None else listed))
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


def _live_pods(jobs: list[JobRecord]) -> dict[str, Any]:
    """rtrain's machines and leftovers on every provider with a key, matched to this machine's jobs."""
    from launcher.backends import live_pods

    pods, leftovers, notes = live_pods(load_settings())
    by_pod = {j.pod_id: j.id for j in jobs if j.pod_id}
    by_name = {j.pod_name: j.id for j in jobs if j.pod_name}
    return {
        "pods": [{"backend": backend, "pod_id": pod.id, "name": pod.name, "status": pod.status,
                  "price_per_hr": pod.price_per_hr, "job_id": by_pod.get(pod.id) or by_name.get(pod.name)}
                 for backend, pod in pods],
        "leftovers": [{"backend": x.backend, "kind": x.kind, "id": x.id, "name": x.name} for x in leftovers],
        "notes": notes,
    }


def _print_pods(live: dict[str, Any]) -> None:
    for note in live["notes"]:
        click.echo(note)
    pods, leftovers = live["pods"], live["leftovers"]
    if not pods and not leftovers:
        click.echo("no rtrain machine is running on any provider with a key set\n")
        return
    if pods:
        click.echo(click.style(f"{len(pods)} rtrain machine(s) up, billing:", bold=True))
    for p in pods:
        owner = f"job {p['job_id']}" if p["job_id"] else click.style("no job here: `rtrain down " + p["pod_id"] + "`",
                                                                     fg="red")
        click.echo(f"  {p['backend']:<7} {p['pod_id']:<16} {p['name']:<32} {p['status']:<10} "
                   f"${p['price_per_hr']:.2f}/hr  {owner}")
    for x in leftovers:
        click.echo(click.style(f"  {x['backend']:<7} {x['kind']} {x['name']} left registered: "
                               f"`rtrain down {x['name']}`", fg="red"))
    click.echo("")


def _status_word(rec: JobRecord) -> str:
    from launcher.state import LEAK_RISK

    return "LEAK RISK" if rec.status == LEAK_RISK else rec.status


@click.command()
@click.argument("job")
@click.option("--json", "as_json", is_flag=True, help="Print the job and its events as JSON.")
@click.option("--plot", "plot_to", type=click.Path(dir_okay=False),
              help="Write the loss (and eval loss) curve to FILE.png or FILE.svg (needs rtrain[ui]).")
def show(job: str, as_json: bool, plot_to: str | None) -> None:
    """Show one job: its spec, outcome and events (and a sparkline of its loss)."""
    import time

    from launcher.dashboard import trainer_events

    registry = open_registry()
    rec = find_job(registry, job)
    events = registry.events(rec.id)
    needed = plot_to or not as_json  # the curve is for the plot and the sparkline, not for --json
    curve = trainer_events(rec, load_settings().rtrain_home()) if needed else []
    if plot_to:
        from launcher.plot import plot_losses

        title = f"job {rec.id}" + (f" ({rec.name})" if rec.name else "")
        click.echo(f"plot: {plot_losses(curve, Path(plot_to), title)}", err=as_json)
    if as_json:
        click.echo(json.dumps({**rec.public(), "spec": rec.spec_dict, "events": events}))
        return
    d = rec.public()
    for key in ("job_id", "name", "status", "phase", "backend", "pod_id", "output_dir", "adapter_dir", "steps",
                "final_loss", "cost_usd", "created_at", "updated_at", "error"):
        if d.get(key) is not None:
            click.echo(f"{key:>12}: {d[key]}")
    losses = [e["loss"] for e in curve if e["event"] == "step" and isinstance(e.get("loss"), (int, float))]
    if losses:
        click.echo(f"{'loss':>12}: {sparkline(losses)} {losses[0]:.4f} -> {losses[-1]:.4f} ({len(losses)} steps)")
    estimate = next((e for e in events if e["kind"] == "estimate"), None)
    if estimate is not None:
        billed = f"billed ${rec.cost_usd:.2f}" if rec.cost_usd is not None else "not billed yet"
        click.echo(f"{'cost':>12}: {billed}; {estimate['message']}")
    spec = rec.spec_dict
    click.echo(f"{'spec':>12}: " + ", ".join(f"{k}={v}" for k, v in sorted(spec.items()) if v is not None))
    _print_attempts(rec, events)
    click.echo("events:")
    for ev in events:
        stamp = time.strftime("%H:%M:%S", time.localtime(ev["ts"]))
        click.echo(f"  {stamp} {ev['kind']:<16} {ev['message']}")


def sparkline(values: list[float], width: int = 40) -> str:
    """The values as one line of block characters, averaged into at most ``width`` buckets."""
    if len(values) > width:
        per = len(values) / width
        values = [sum(chunk) / len(chunk) for chunk in
                  (values[int(i * per):max(int((i + 1) * per), int(i * per) + 1)] for i in range(width))]
    low, high = min(values), max(values)
    bars = "▁▂▃▄▅▆▇█"
    if high - low < 1e-12:
        return bars[3] * len(values)
    return "".join(bars[min(7, int((v - low) / (high - low) * 8))] for v in values)


def _print_attempts(rec: JobRecord, events: list[dict[str, Any]]) -> None:
    """Each machine the job ran on, when a lost one was replaced or resumed (the cost is their sum)."""
    ended = [e["data"] for e in events if e["kind"] == "attempt" and e["data"]]
    if not ended:
        return
    click.echo("attempts:")
    for a in ended:
        click.echo(f"  {a['attempt']}: {a['backend']} {a['pod_id']} ({a.get('gpu') or '?'}), to step "
                   f"{a.get('steps') or 0}, ${a.get('cost_usd') or 0:.2f}; {a['reason']}")
    cost = f"${(rec.cost_usd or 0) - rec.prior_cost_usd:.2f}" if rec.cost_usd is not None else "billing"
    click.echo(f"  {rec.attempt}: {rec.backend} {rec.pod_id} ({rec.gpu or '?'}), to step {rec.steps or 0}, {cost}; "
               f"{rec.status}")


@click.command()
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

    registry = open_registry()
    rec = find_job(registry, job)
    name = EVENTS if show_events else LOG
    saved = Path(rec.output_dir or "") / "logs" / name
    from launcher.backends import AUTO

    backend = get_backend(rec.backend, load_settings()) if rec.backend != AUTO else None
    pod = backend.get(rec.pod_id) if backend is not None and rec.pod_id else None
    if backend is not None and pod is not None and rec.workdir:
        from launcher.keys import load_job_keys
        from launcher.transfer import read_from

        ex, offset = backend.executor(pod, load_job_keys(load_settings().rtrain_home(), rec.id)), 0
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
