"""`rtrain gpus`, `rtrain cost`, and the estimate `rtrain launch` shows before it rents anything."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from launcher.cli_options import job_options, job_values, load_settings

if TYPE_CHECKING:
    from launcher.config import Settings
    from launcher.cost import Estimate
    from launcher.plan import Plan
    from launcher.ui import Reporter


@click.command()
@click.option("--backend", type=click.Choice(["runpod", "lambda"]), default="runpod", show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print the table as JSON.")
def gpus(backend: str, as_json: bool) -> None:
    """The GPUs rtrain knows: aliases for --gpu, provider ids, VRAM, architecture, speed, $/hr."""
    from launcher.catalog import catalog
    from launcher.pricing import prices

    table = prices(backend, load_settings())
    rows = []
    for alias, gpu in catalog().items():
        if gpu.provider_id(backend) is None:
            continue
        rows.append({"alias": alias, "provider_id": gpu.provider_id(backend), "vram_gb": gpu.vram_gb,
                     "arch": gpu.arch, "bf16_tflops": gpu.bf16_tflops, "price_per_hr": table.on_demand.get(alias),
                     "prices": table.detail.get(alias, {})})
    if as_json:
        click.echo(json.dumps({"backend": backend, "source": table.source, "gpus": rows}))
        return
    click.echo(f"{backend} GPUs, $/GPU-hour on demand ({table.source})")
    kinds = sorted({k for r in rows for k in r["prices"]})
    header = ["ALIAS", "PROVIDER ID", "VRAM", "ARCH", "BF16 TFLOP/S", *[k.upper() for k in kinds]]
    lines = [[r["alias"], r["provider_id"], f"{r['vram_gb']} GB", r["arch"], f"{r['bf16_tflops']:g}",
              *[f"${r['prices'][k]:.2f}" if k in r["prices"] else "-" for k in kinds]] for r in rows]
    _table(header, lines)


def _table(header: list[str], lines: list[list[str]]) -> None:
    widths = [max(len(row[i]) for row in (header, *lines)) for i in range(len(header))]
    click.echo(click.style("  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)).rstrip(), bold=True))
    for row in lines:
        click.echo("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())


def local_model_dir(plan: Plan, settings: Settings) -> Path | None:
    from launcher.bundle import ensure_tiny_model

    if plan.spec.is_tiny_model:
        return ensure_tiny_model(settings.rtrain_home(), settings.local_python)
    return Path(plan.spec.model) if Path(plan.spec.model).is_dir() else None


def build_estimate(plan: Plan, settings: Settings, gpu_aliases: list[str] | None = None) -> Estimate:
    """The estimate for exactly the job ``plan`` describes, on the given GPUs (default: every GPU the
    backend offers)."""
    from launcher.catalog import catalog, resolve_gpu
    from launcher.cost import count_tokens, estimate, model_shape
    from launcher.pricing import prices

    spec = plan.spec
    backend = spec.backend if spec.backend != "local" else "runpod"
    local_dir = local_model_dir(plan, settings)
    shape, source = model_shape(spec.model, local_dir)
    count = count_tokens(spec.datasets, local_dir, spec.max_seq_length, spec.max_samples)
    aliases = gpu_aliases if gpu_aliases is not None else (
        spec.gpu or [a for a, g in catalog().items() if g.provider_id(backend)])
    table = prices(backend, settings)
    return estimate(spec, shape, source, count, [resolve_gpu(a, backend) for a in aliases], table.on_demand,
                    dataset_bytes=sum(f.size_bytes for f in plan.datasets.files), price_source=table.source)


def estimate_json(est: Estimate) -> dict[str, Any]:
    cheapest = est.cheapest_fit()
    return {
        "model": {"name": est.model.name, "parameters": est.model.params, "active_parameters": est.model.active,
                  "source": est.model_source},
        "tokens": {"examples": est.tokens.examples, "per_epoch": est.tokens.tokens, "method": est.tokens.method,
                   "trained": round(est.trained_tokens)},
        "engine": est.engine, "prices": est.price_source,
        "gpus": [{"alias": g.gpu.alias, "vram_gb": g.gpu.vram_gb, "needs_gb": round(g.vram_gb, 1), "fits": g.fits,
                  "price_per_hr": g.price_per_hr, "training_hours": round(g.training_hours, 4),
                  "hours": dict(zip(("low", "expected", "high"), (round(h, 4) for h in g.hours), strict=True)),
                  "usd": dict(zip(("low", "expected", "high"), (round(u, 2) for u in g.usd), strict=True))
                  if g.usd else None} for g in est.per_gpu],
        "cheapest_fit": cheapest.gpu.alias if cheapest else None,
    }


def print_estimate(est: Estimate, echo: Any = click.echo) -> None:
    m = est.model
    active = f" ({m.active / 1e9:.1f} B active)" if m.active < m.params else ""
    echo(f"model {m.name}: {m.params / 1e9:.2f} B parameters{active}, from {est.model_source}")
    echo(f"data: {est.tokens.examples} examples, {est.tokens.tokens:,} tokens an epoch ({est.tokens.method}); "
         f"{est.trained_tokens:,.0f} tokens trained")
    echo(f"assumes {est.engine} at 4 N FLOPs a token (LoRA), prices {est.price_source}")
    from launcher.ui import fmt_duration

    header = ["GPU", "VRAM", "NEEDS", "FITS", "TIME", "COST (LOW-HIGH)", "$/HR"]
    lines = []
    for g in est.per_gpu:
        usd = g.usd
        lines.append([g.gpu.alias, f"{g.gpu.vram_gb} GB", f"{g.vram_gb:.1f} GB", "yes" if g.fits else "NO",
                      fmt_duration(g.hours[1] * 3600), f"${usd[1]:.2f} (${usd[0]:.2f}-${usd[2]:.2f})" if usd else "-",
                      f"${g.price_per_hr:.2f}" if g.price_per_hr is not None else "-"])
    _table(header, lines)
    cheapest = est.cheapest_fit()
    if cheapest is not None and len(est.per_gpu) > 1:
        echo(f"cheapest that fits: {cheapest.gpu.alias}, about ${cheapest.usd[1]:.2f}")  # type: ignore[index]
    elif cheapest is None:
        echo("no GPU here fits this job: try --load-in-4bit, a smaller --max-seq-length or --batch-size")


@click.command()
@job_options
@click.option("--json", "as_json", is_flag=True, help="Print the estimate as JSON.")
def cost(local: bool, backend: str | None, template: str | None, datasets: tuple[str, ...], as_json: bool,
         **flags: Any) -> None:
    """What a job will cost on each GPU (or the one asked), before anything is rented."""
    from launcher.plan import validate

    values = job_values(local, backend, datasets, flags, default_cloud=True)
    if values["backend"] == "local":
        values["backend"] = "runpod"  # the local machine costs nothing: price the job as a RunPod one
    plan = validate(values, template, load_settings(), to_launch=False)
    est = build_estimate(plan, load_settings())
    if as_json:
        click.echo(json.dumps(estimate_json(est)))
    else:
        print_estimate(est)


def confirm_launch(plan: Plan, settings: Settings, ui: Reporter, *, force: bool, yes: bool) -> dict[str, Any]:
    """Show the estimate for the first-choice GPU; refuse one it does not fit (unless --force); ask
    before renting (unless --yes). Returns the estimate, for the registry."""
    from launcher.catalog import resolve_gpu
    from launcher.cost import model_shape, peak_vram_gb
    from launcher.errors import UsageError

    gpu = resolve_gpu(plan.spec.gpu[0], plan.spec.backend)
    try:
        shape, _ = model_shape(plan.spec.model, local_model_dir(plan, settings))
    except UsageError as exc:  # an unknown hub model can still be trained; it just cannot be priced
        ui.warn(f"no estimate: {exc}")
        _confirm(gpu.alias, yes)
        return {"summary": "no estimate (unknown model size)"}
    needs = peak_vram_gb(shape, plan.spec)
    if needs > gpu.vram_gb * 0.95 and not force:  # refused before any API call, prices included
        raise UsageError(f"--gpu {gpu.alias}: the job needs about {needs:.0f} GB and it has {gpu.vram_gb} GB "
                         "(try --load-in-4bit, a smaller batch or sequence length, a bigger GPU, or --force)")
    est = build_estimate(plan, settings, plan.spec.gpu[:1])
    first = est.per_gpu[0]
    usd = first.usd
    cost_text = f"${usd[1]:.2f} (${usd[0]:.2f}-${usd[2]:.2f})" if usd else "unknown cost"
    from launcher.ui import fmt_duration

    summary = (f"estimate on {first.gpu.alias}: {fmt_duration(first.hours[1] * 3600)}, {cost_text}; needs "
               f"{first.vram_gb:.1f} GB of {first.gpu.vram_gb} GB")
    ui.info(summary)
    _confirm(first.gpu.alias, yes)
    data = estimate_json(est)
    data["summary"] = summary
    return data


def _confirm(alias: str, yes: bool) -> None:
    from launcher.errors import UsageError

    if yes:
        return
    if not sys.stdin.isatty():
        raise UsageError("not asking for confirmation on a non-interactive input: add --yes to launch")
    if not click.confirm(f"rent a {alias} pod for this job?", default=True, err=True):
        raise UsageError("not launched: you said no")
