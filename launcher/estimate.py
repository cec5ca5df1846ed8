"""What a job will cost, before anything is rented: the estimate ``rtrain cost`` prints and ``rtrain
launch`` shows, the fit check (a GPU too small is refused before any API call), the confirmation,
and for ``--backend auto`` the offers ranked cheapest-first among the providers with a key."""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from typing import Any

from launcher.catalog import catalog, resolve_gpu
from launcher.config import JobSpec, Settings
from launcher.cost import Estimate, GpuEstimate, Offer, TokenCount, count_tokens, estimate, model_shape, peak_vram_gb
from launcher.errors import UsageError
from launcher.plan import Plan
from launcher.ui import Reporter, fmt_duration
from launcher.uploads import local_model_folder


def price_offers(providers: list[str], aliases: list[str] | None, settings: Settings, *, for_launch: bool = False,
                 spot: bool = False) -> tuple[list[Offer], dict[str, str], list[str]]:
    """Every (provider, GPU) offer among ``aliases`` (default: all a provider has), priced; where each
    provider's prices came from; a warning per provider whose live prices could not be had."""
    from launcher.pricing import prices

    offers, sources, warnings = [], {}, []
    for provider in providers:
        table = prices(provider, settings, for_launch=for_launch)
        sources[provider] = table.source
        if table.warning:
            warnings.append(table.warning)
        for alias in aliases if aliases is not None else list(catalog()):
            gpu = resolve_gpu(alias)
            if gpu.provider_id(provider):
                offers.append(Offer(provider, gpu, table.price(gpu.alias, settings, spot),
                                    table.on_demand.get(gpu.alias) if spot else None))
    return offers, sources, warnings


def build_estimate(plan: Plan, settings: Settings, providers: list[str], aliases: list[str] | None = None, *,
                   for_launch: bool = False) -> tuple[Estimate, list[str]]:
    """The estimate for exactly the job ``plan`` describes, on the given providers and GPUs."""
    spec = plan.spec
    local_dir = local_model_folder(spec, settings)
    shape, source = model_shape(spec.model, local_dir)
    files = plan.datasets.files
    if files and all(f.counted is not None for f in files) and spec.max_samples is None:
        from launcher.tokens import COUNTED  # launch counted them already, as the trainer will

        count = TokenCount(sum(f.examples for f in files), sum(f.counted or 0 for f in files), COUNTED)
    else:
        count = count_tokens(spec.datasets, local_dir, spec.max_seq_length, spec.max_samples)
    offers, sources, warnings = price_offers(providers, aliases, settings, for_launch=for_launch, spot=spec.spot)
    est = estimate(spec, shape, source, count, offers, dataset_bytes=sum(f.size_bytes for f in plan.datasets.files),
                   price_sources=sources)
    return est, warnings


def estimate_json(est: Estimate) -> dict[str, Any]:
    cheapest = est.cheapest_fit()
    return {
        "model": {"name": est.model.name, "parameters": est.model.params, "active_parameters": est.model.active,
                  "source": est.model_source},
        "tokens": {"examples": est.tokens.examples, "per_epoch": est.tokens.tokens, "method": est.tokens.method,
                   "trained": round(est.trained_tokens)},
        "engine": est.engine, "prices": est.price_sources,
        "gpus": [{"provider": g.provider, "alias": g.gpu.alias, "vram_gb": g.gpu.vram_gb,
                  "needs_gb": round(g.vram_gb, 1), "fits": g.fits, "price_per_hr": g.price_per_hr,
                  "on_demand_per_gpu_hr": g.offer.on_demand_per_gpu_hr,
                  "training_hours": round(g.training_hours, 4),
                  "hours": dict(zip(("low", "expected", "high"), (round(h, 4) for h in g.hours), strict=True)),
                  "usd": dict(zip(("low", "expected", "high"), (round(u, 2) for u in g.usd), strict=True))
                  if g.usd else None} for g in est.per_gpu],
        "cheapest_fit": {"provider": cheapest.provider, "gpu": cheapest.gpu.alias} if cheapest else None,
    }


def summary(g: GpuEstimate) -> str:
    usd = g.usd
    cost = f"${usd[1]:.2f} (${usd[0]:.2f}-${usd[2]:.2f})" if usd else "unknown cost"
    spot = ""
    if g.offer.on_demand_per_gpu_hr is not None and g.price_per_hr is not None:
        spot = f" at spot ${g.price_per_hr:.2f}/hr (on demand ${g.offer.on_demand_per_gpu_hr:.2f}/hr per GPU)"
    return (f"{g.provider} {g.gpu.alias}: {fmt_duration(g.hours[1] * 3600)}, {cost}{spot}; needs {g.vram_gb:.1f} GB "
            f"of {g.gpu.vram_gb} GB")


@dataclass
class LaunchChoice:
    """What ``launch`` settled on before renting: the offers to try in order, and the estimate shown."""

    #: (provider, GPU alias), in the order to try them on no capacity
    offers: list[tuple[str, str]]
    record: dict[str, Any] = field(default_factory=dict)


def fitting_aliases(spec: JobSpec, settings: Settings, ui: Reporter, *, force: bool) -> list[str] | None:
    """The GPUs of ``--gpu`` the job fits on (all when its size is unknown: None). Refuses when none
    fits (unless --force): before any API call, prices included."""
    try:
        shape, _ = model_shape(spec.model, local_model_folder(spec, settings))
    except UsageError as exc:  # an unknown hub model can still be trained; it just cannot be priced
        ui.warn(f"no estimate: {exc}")
        return None
    needs = peak_vram_gb(shape, spec)
    fits = [a for a in spec.gpu if needs <= resolve_gpu(a).vram_gb * 0.95]
    if force:
        return list(spec.gpu)
    if not fits:
        gpu = resolve_gpu(spec.gpu[0])
        raise UsageError(f"--gpu {gpu.alias}: the job needs about {needs:.0f} GB and it has {gpu.vram_gb} GB "
                         "(try --load-in-4bit, a smaller batch or sequence length, a bigger GPU, or --force)")
    for alias in spec.gpu:
        if alias not in fits:
            ui.warn(f"--gpu {alias}: too small for this job (it needs about {needs:.0f} GB): not tried")
    return fits


def confirm_launch(plan: Plan, settings: Settings, ui: Reporter, providers: list[str], *, force: bool,
                   yes: bool) -> LaunchChoice:
    """Show the estimate of the offer that will be tried first; rank the offers (``--backend auto``:
    cheapest that fits first, across ``providers``); ask before renting (unless --yes)."""
    aliases = fitting_aliases(plan.spec, settings, ui, force=force)
    if aliases is None:
        first = (providers[0], plan.spec.gpu[0])
        confirm(f"{first[0]} {first[1]}", yes)
        return LaunchChoice([(p, a) for p in providers for a in plan.spec.gpu if resolve_gpu(a).provider_id(p)],
                            {"summary": "no estimate (unknown model size)"})
    est, warnings = build_estimate(plan, settings, providers, aliases, for_launch=True)
    for warning in warnings:
        ui.warn(warning)
    if len(providers) > 1:  # auto: cheapest first (every GPU left fits, or --force); the user's order breaks ties
        order = sorted(est.per_gpu, key=lambda g: (g.usd is None, g.usd[1] if g.usd else 0.0))
    else:
        order = [g for alias in aliases for g in est.per_gpu if g.gpu.alias == alias]
    first = order[0]
    text = f"estimate on {summary(first)}"
    if len(providers) > 1:
        rest = ", ".join(f"{g.provider} {g.gpu.alias} ${g.price_per_hr or 0:.2f}/hr" for g in order[1:4])
        text += f" (cheapest offer that fits{'; then ' + rest if rest else ''})"
    ui.info(text)
    confirm(f"{first.provider} {first.gpu.alias}", yes)
    record = estimate_json(est)
    record["summary"] = text
    return LaunchChoice([(g.provider, g.gpu.alias) for g in order], record)


def confirm(what: str, yes: bool) -> None:
    if yes:
        return
    if not sys.stdin.isatty():
        raise UsageError("not asking for confirmation on a non-interactive input: add --yes to launch")
    import click

    if not click.confirm(f"rent a {what} machine for this job?", default=True, err=True):
        raise UsageError("not launched: you said no")
