"""GPU prices per hour, per provider: live from its API when its key is set, else the bundled catalog
(with its date, so a user knows how old the numbers are). A provider that cannot be reached never
stops a price lookup: its table falls back to the catalog with a one-line warning."""

from __future__ import annotations

from dataclasses import dataclass, field

from launcher.backends import backend_class, get_backend
from launcher.catalog import catalog, catalog_date
from launcher.config import Settings
from launcher.errors import AuthRejected, ProviderError


@dataclass
class PriceTable:
    backend: str
    #: alias -> on-demand $/GPU-hour of what rtrain would rent there
    on_demand: dict[str, float]
    #: alias -> every price known, by kind (secure, community, spot, on_demand)
    detail: dict[str, dict[str, float]] = field(default_factory=dict)
    source: str = ""
    #: why the live prices could not be had (the table is then the bundled catalog's)
    warning: str | None = None

    @classmethod
    def of(cls, backend: str, detail: dict[str, dict[str, float]], settings: Settings, source: str) -> PriceTable:
        pick = backend_class(backend).price
        on_demand = {alias: price for alias, kinds in detail.items() if (price := pick(kinds, settings))}
        return cls(backend, on_demand, detail, source)

    def price(self, alias: str, settings: Settings, spot: bool = False) -> float | None:
        """What rtrain pays per GPU-hour for ``alias`` here: on demand, or spot."""
        if not spot:
            return self.on_demand.get(alias)
        return backend_class(self.backend).price(self.detail.get(alias, {}), settings, spot=True)


def bundled(backend: str, settings: Settings) -> PriceTable:
    detail = {alias: dict(gpu.prices[backend]) for alias, gpu in catalog().items()
              if gpu.provider_id(backend) and backend in gpu.prices}
    return PriceTable.of(backend, detail, settings, f"bundled catalog of {catalog_date()}")


def prices(backend: str, settings: Settings, *, for_launch: bool = False) -> PriceTable:
    """Live prices when the provider's key is set and it answers within seconds, else the catalog's.
    ``for_launch``: a rejected key stops here (AuthRejected), before anything is asked to rent."""
    cls = backend_class(backend)
    if not cls.api_key(settings):
        return bundled(backend, settings)
    try:
        return get_backend(backend, settings, quick=True).live_prices()
    except AuthRejected:
        if for_launch:
            raise
        table = bundled(backend, settings)
        table.warning = f"{cls.title} rejected the API key: check {cls.key_env}; using the {table.source}"
        return table
    except ProviderError as exc:
        table = bundled(backend, settings)
        table.warning = f"{cls.title} prices: {exc}; using the {table.source}"
        return table
