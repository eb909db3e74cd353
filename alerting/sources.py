"""What one evaluation pass reads, each read at most once per pass however many rules need it.

`PassData` collects the metric families of every collector once (observability/registry.py) and
splits them by their `tenant` label itself: the same series `registry.families(tenant=slug)`
serves a tenant, without running every collector again for each tenant. Event rules read the
rows the agents and workflows wrote (failed workflows, nodes, containers), also once per pass.
"""

from __future__ import annotations

import time
from collections import defaultdict
from datetime import datetime, timedelta

from prometheus_client.metrics_core import Metric

from observability import registry
from observability.registry import TENANT_LABEL

Series = tuple[dict, float]


def served(families: list[Metric]) -> dict[str, set[str] | None]:
    """Metric name -> the label names its series carry (None: not known, no series yet). A
    counter is served under its `_total` name; a histogram's `_bucket`, `_sum` and `_count` too."""
    names: dict[str, set[str] | None] = {}
    for family in families:
        known = set(getattr(family, "_labelnames", ()) or ())
        keys = [family.name]
        if family.type == "counter":
            keys.append(f"{family.name}_total")
        for key in keys:
            names.setdefault(key, set(known) if known else None)
        for sample in family.samples:
            if sample.name.endswith("_created"):
                continue
            labels = names.get(sample.name) or set()
            labels |= set(sample.labels) - {"le", "quantile"}
            names[sample.name] = labels
    return names


_served_cache: tuple[tuple, float, dict] | None = None
SERVED_TTL = 10.0


def served_now() -> dict[str, set[str] | None]:
    """`served()` of every collector's families, kept SERVED_TTL seconds while the same collectors
    are registered: checking a rule's metric at each API call then does not run every collector
    (a scrape's work) again. A metric that appears is known within those seconds."""
    global _served_cache
    key = tuple(id(c) for c in registry.collectors())
    now = time.monotonic()
    if _served_cache is not None and _served_cache[0] == key and _served_cache[1] > now:
        return _served_cache[2]
    found = served(registry.families())
    _served_cache = (key, now + SERVED_TTL, found)
    return found


class PassData:
    def __init__(self, *, now: datetime, families: list[Metric] | None = None):
        self.now = now
        self._families = families
        self._index: dict[str, dict[str | None, list[Series]]] | None = None
        self._by_label: dict[tuple, dict[str, list[Series]]] = {}
        self._served: dict[str, set[str] | None] | None = None
        self._cache: dict[str, object] = {}

    # --- metrics ----------------------------------------------------------------------------------

    def families(self) -> list[Metric]:
        if self._families is None:
            self._families = registry.families()
        return self._families

    def served(self) -> dict[str, set[str] | None]:
        if self._served is None:
            self._served = served(self.families())
        return self._served

    def _build(self) -> dict[str, dict[str | None, list[Series]]]:
        index: dict[str, dict[str | None, list[Series]]] = defaultdict(lambda: defaultdict(list))
        for family in self.families():
            for sample in family.samples:
                if sample.name.endswith("_created"):
                    continue
                series = (sample.labels, float(sample.value))
                by_tenant = index[sample.name]
                by_tenant[None].append(series)
                tenant = sample.labels.get(TENANT_LABEL)
                if tenant:
                    by_tenant[tenant].append(series)
        return index

    def series(self, metric: str, tenant: str | None) -> list[Series]:
        """The metric's series; with a tenant slug only those labelled with it (None: all)."""
        if self._index is None:
            self._index = self._build()
        found = self._index.get(metric)
        return found.get(tenant, []) if found else []

    def series_where(self, metric: str, tenant: str | None, label: str, value: str) -> list[Series]:
        """The metric's series whose `label` is `value`, through an index built once per pass: a
        thousand rules each naming one app do not each walk all the tenant's series."""
        key = (metric, tenant, label)
        index = self._by_label.get(key)
        if index is None:
            index = defaultdict(list)
            for series in self.series(metric, tenant):
                index[series[0].get(label, "")].append(series)
            self._by_label[key] = index
        return index.get(value, [])

    # --- events -------------------------------------------------------------------------------------

    def failed_workflows(self, window: int) -> list[tuple[str, str, datetime]]:
        """(tenant slug, kind, finished at) of the workflows that failed in the last `window` seconds
        (read once for the widest window any rule asks)."""
        cached = self._cache.get("workflows")
        if cached is None or cached[0] < window:
            from hivemind.workflows.models import Workflow, WorkflowState

            rows = list(
                Workflow.objects.filter(
                    state=WorkflowState.FAILED, finished_at__gte=self.now - timedelta(seconds=window)
                ).values_list("tenant__slug", "kind", "finished_at")
            )
            cached = (window, rows)
            self._cache["workflows"] = cached
        return cached[1]

    def nodes(self) -> list[tuple[str, str]]:
        if "nodes" not in self._cache:
            from hivemind.nodes.models import Node

            self._cache["nodes"] = list(Node.objects.values_list("name", "status"))
        return self._cache["nodes"]

    def containers(self) -> list[tuple[str, str, int, str, int]]:
        """(tenant, app, replica, node, restarts) of every container its node still reports."""
        if "containers" not in self._cache:
            from hivemind.applications.models import Container

            live = Container.objects.exclude(state__in=[Container.State.REMOVED, Container.State.MISSING])
            self._cache["containers"] = list(
                live.values_list("tenant__slug", "app__name", "replica", "node__name", "restarts")
            )
        return self._cache["containers"]

    def failed_backups(self, window: int) -> list[tuple[str, str, str, datetime]]:
        """(tenant slug, location, policy or "", finished at) of the backup runs that failed in the
        last `window` seconds (read once for the widest window any rule asks)."""
        cached = self._cache.get("failed_backups")
        if cached is None or cached[0] < window:
            from backups.metrics import location_label
            from backups.models import Backup

            rows = list(
                Backup.objects.filter(
                    status=Backup.Status.FAILED, finished_at__gte=self.now - timedelta(seconds=window)
                )
                .annotate(where=location_label("location__"))
                .values_list("tenant__slug", "where", "policy__name", "finished_at")
            )
            cached = (window, [(slug, location, policy or "", at) for slug, location, policy, at in rows])
            self._cache["failed_backups"] = cached
        return cached[1]

    def damaged_backups(self) -> list[tuple[str, str, int]]:
        """(tenant slug, location, backup id) of the backups their last verification found damaged."""
        if "damaged_backups" not in self._cache:
            from backups.metrics import location_label
            from backups.models import Backup

            self._cache["damaged_backups"] = list(
                Backup.objects.filter(verified=Backup.Verified.DAMAGED)
                .annotate(where=location_label("location__"))
                .values_list("tenant__slug", "where", "pk")
            )
        return self._cache["damaged_backups"]
