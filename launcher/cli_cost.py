"""`rtrain gpus` and `rtrain cost`: every provider side by side, live prices where a key is set (the
bundled catalog otherwise, with a one-line warning when a provider does not answer)."""

from __future__ import annotations

import json
from typing import Any

import click

from launcher.backends import AUTO, cloud_names
from launcher.cli_options import job_options, job_values, load_settings


def _table(header: list[str], lines: list[list[str]]) -> None:
    widths = [max(len(row[i]) for row in (header, *lines)) for i in range(len(header))]
    click.echo(click.style("  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)).rstrip(), bold=True))
    for row in lines:
        click.echo("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())


def _providers(backend: str | None) -> list[str]:
    return cloud_names() if backend in (None, AUTO, "local") else [backend]


@click.command()
@click.option("--backend", type=click.Choice([*cloud_names(), AUTO]), default=AUTO, show_default=True,
              help="One provider, or every one side by side (auto).")
@click.option("--json", "as_json", is_flag=True, help="Print the table as JSON.")
def gpus(backend: str, as_json: bool) -> None:
    """The GPUs rtrain knows: aliases for --gpu, VRAM, architecture, speed, and each provider's id and $/hr."""
    from launcher.backends import backend_class
    from launcher.catalog import catalog
    from launcher.pricing import prices

    settings = load_settings()
    providers = _providers(backend)
    tables = {name: prices(name, settings) for name in providers}
    for table in tables.values():
        if table.warning:
            click.echo(f"warning: {table.warning}", err=True)
    rows = []
    for alias, gpu in catalog().items():
        offers = {name: {"id": gpu.provider_id(name), "price_per_hr": tables[name].on_demand.get(alias),
                         "prices": tables[name].detail.get(alias, {})}
                  for name in providers if gpu.provider_id(name)}
        if offers:
            rows.append({"alias": alias, "vram_gb": gpu.vram_gb, "arch": gpu.arch, "bf16_tflops": gpu.bf16_tflops,
                         "offers": offers})
    if as_json:
        click.echo(json.dumps({"sources": {n: t.source for n, t in tables.items()}, "gpus": rows}))
        return
    for name, table in tables.items():
        click.echo(f"{backend_class(name).title}: $/GPU-hour on demand, {table.source}")
    header = ["ALIAS", "VRAM", "ARCH", "BF16 TFLOP/S", *[f"{n.upper()} $/HR" for n in providers]]
    if len(providers) == 1:
        header.insert(1, "PROVIDER ID")
    lines = []
    for r in rows:
        cells = [r["alias"], f"{r['vram_gb']} GB", r["arch"], f"{r['bf16_tflops']:g}"]
        for name in providers:
            offer = r["offers"].get(name)
            price = offer["price_per_hr"] if offer else None
            spot = (offer or {}).get("prices", {}).get("spot")
            cells.append("-" if offer is None else f"${price:.2f}" + (f" (spot ${spot:.2f})" if spot else "")
                         if price is not None else "offered")
        if len(providers) == 1:
            cells.insert(1, r["offers"][providers[0]]["id"])
        lines.append(cells)
    _table(header, lines)


def print_estimate(est: Any) -> None:
    from launcher.ui import fmt_duration

    m = est.model
    active = f" ({m.active / 1e9:.1f} B active)" if m.active < m.params else ""
    click.echo(f"model {m.name}: {m.params / 1e9:.2f} B parameters{active}, from {est.model_source}")
    click.echo(f"data: {est.tokens.examples} examples, {est.tokens.tokens:,} tokens an epoch ({est.tokens.method}); "
               f"{est.trained_tokens:,.0f} tokens trained")
    sources = "; ".join(f"{name} {source}" for name, source in est.price_sources.items())
    click.echo(f"assumes {est.engine} at 4 N FLOPs a token (LoRA); prices: {sources}")
    header = ["GPU", "PROVIDER", "VRAM", "NEEDS", "FITS", "TIME", "COST (LOW-HIGH)", "$/HR"]
    lines = []
    for g in est.per_gpu:
        usd = g.usd
        lines.append([g.gpu.alias, g.provider, f"{g.gpu.vram_gb} GB", f"{g.vram_gb:.1f} GB", "yes" if g.fits else "NO",
                      fmt_duration(g.hours[1] * 3600), f"${usd[1]:.2f} (${usd[0]:.2f}-${usd[2]:.2f})" if usd else "-",
                      f"${g.price_per_hr:.2f}" if g.price_per_hr is not None else "-"])
    _table(header, lines)
    cheapest = est.cheapest_fit()
    if cheapest is not None and len(est.per_gpu) > 1:
        click.echo(f"cheapest that fits: {cheapest.gpu.alias} on {cheapest.provider}, about "
                   f"${cheapest.usd[1]:.2f}")  # type: ignore[index]
    elif cheapest is None:
        click.echo("no GPU here fits this job: try --load-in-4bit, a smaller --max-seq-length or --batch-size")


@click.command()
@job_options
@click.option("--json", "as_json", is_flag=True, help="Print the estimate as JSON.")
def cost(local: bool, backend: str | None, template: str | None, datasets: tuple[str, ...], as_json: bool,
         **flags: Any) -> None:
    """What a job will cost on each provider and GPU (or the ones asked), before anything is rented."""
    from launcher.estimate import build_estimate, estimate_json
    from launcher.plan import validate

    values = job_values(local, backend, datasets, flags, default_cloud=True)
    providers = _providers(values["backend"])
    if values["backend"] == "local":
        values["backend"] = "auto"  # the local machine costs nothing: price the job where it could be rented
    settings = load_settings()
    plan = validate(values, template, settings, to_launch=False)
    if plan.spec.is_tiny_model:  # built on first use: say so while it is (progress on stderr)
        from launcher.uploads import local_model_folder

        local_model_folder(plan.spec, settings, say=lambda line: click.echo(line, err=True))
    est, warnings = build_estimate(plan, settings, providers, plan.spec.gpu or None)
    for warning in warnings:
        click.echo(f"warning: {warning}", err=True)
    if as_json:
        click.echo(json.dumps(estimate_json(est)))
    else:
        print_estimate(est)
