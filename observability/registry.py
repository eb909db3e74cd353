"""The metrics engine's registry: collectors, each written in the area it measures, under a name.

A collector reads what the agents reported (rows in the database), never per-process counters
that vanish with a worker, so every web process serves the same figures. Areas add their own
in their AppConfig.ready():

    from observability import registry
    registry.register(StorageCollector())  # under its class name

A collector is any object with `collect()` returning prometheus-client metric families (the
prometheus-client collector protocol); one with `by_tenant = True` also takes
`collect(tenant=slug)` and reads only that tenant's rows (the series are filtered by label
either way). Its labels are bounded by the objects that exist:
`tenant` (a tenant's slug), `app`, `volume`, `network`, `policy`, `pool` (names Hivemind
validated as DNS labels), `node`, `replica` (an index), and fixed vocabularies (`direction`,
`state`, `provider`). No label carries free text a user typed (docs/observability.md).

`families(tenant=...)` is what the alert rules evaluate and what the per-tenant endpoint
serves: only the series whose `tenant` label is that tenant's slug.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Protocol

from prometheus_client.metrics_core import Metric
from prometheus_client.utils import floatToGoString

log = logging.getLogger(__name__)

TENANT_LABEL = "tenant"


class Collector(Protocol):
    def collect(self) -> Iterable[Metric]: ...


_collectors: dict[str, Collector] = {}


def register(collector: Collector, *, name: str | None = None) -> None:
    """Add a collector (idempotent by name: its class name unless given)."""
    _collectors[name or type(collector).__name__] = collector


def unregister(name: str) -> None:
    _collectors.pop(name, None)


def collectors() -> list[Collector]:
    return list(_collectors.values())


def families(*, tenant: str | None = None) -> list[Metric]:
    """Every collector's families; with `tenant` (a slug), only the series labelled with it
    (families left with no series are dropped). A collector that fails is logged and skipped:
    one broken area must not blank the whole scrape."""
    found: list[Metric] = []
    for name, collector in list(_collectors.items()):
        try:
            if tenant is not None and getattr(collector, "by_tenant", False):
                collected = list(collector.collect(tenant=tenant))  # it narrows its own queries
            else:
                collected = list(collector.collect())
        except Exception:
            log.exception("metrics collector %s failed", name)
            continue
        if tenant is None:
            found.extend(collected)
            continue
        for family in collected:
            samples = [s for s in family.samples if s.labels.get(TENANT_LABEL) == tenant]
            if samples:
                scoped = Metric(family.name, family.documentation, family.type, family.unit)
                scoped.samples = samples
                found.append(scoped)
    return found


_TYPES = {"counter": "counter", "gauge": "gauge", "histogram": "histogram", "summary": "summary"}


def _escape(value: str) -> str:
    return value.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")


def render(found: list[Metric]) -> bytes:
    """The families in Prometheus's text format (0.0.4), as prometheus-client's generate_latest
    writes them, three times faster: the engine's label names are constants of the collectors,
    valid by construction, so only label values are escaped (tests/observability compares the
    two byte for byte)."""
    out: list[str] = []
    append = out.append
    label_text: dict[int, str] = {}  # id of a labels dict -> its text: collectors share one per object
    for family in found:
        kind = _TYPES.get(family.type, "untyped")
        name = f"{family.name}_total" if kind == "counter" else family.name
        documentation = family.documentation.replace("\\", r"\\").replace("\n", r"\n")
        append(f"# HELP {name} {documentation}\n# TYPE {name} {kind}\n")
        for sample in family.samples:
            if sample.labels:
                # Every labels dict is alive until the end (its samples hold it): ids stay unique.
                labels = label_text.get(id(sample.labels))
                if labels is None:
                    labels = ",".join(f'{k}="{_escape(v)}"' for k, v in sorted(sample.labels.items()))
                    label_text[id(sample.labels)] = labels
                append(f"{sample.name}{{{labels}}} {floatToGoString(sample.value)}\n")
            else:
                append(f"{sample.name} {floatToGoString(sample.value)}\n")
    return "".join(out).encode()
