"""The resources a tenant's quota limits: API name -> (model field, unit, parser, default limit)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from hivemind.core.units import parse_bytes, parse_count, parse_cpu

WARNING_PERCENT = 80


@dataclass(frozen=True)
class Resource:
    name: str
    field: str
    unit: str
    parse: Callable[[object], int]
    default_limit: int | None


GiB = 2**30
RESOURCES: dict[str, Resource] = {
    r.name: r
    for r in (
        Resource("cpu", "cpu_millis", "millicores", parse_cpu, 8000),
        Resource("memory", "memory_bytes", "bytes", parse_bytes, 16 * GiB),
        Resource("containers", "containers", "count", parse_count, 50),
        Resource("apps", "apps", "count", parse_count, 20),
        Resource("volumes", "volumes", "count", parse_count, 20),
        Resource("storage", "storage_bytes", "bytes", parse_bytes, 100 * GiB),
        Resource("networks", "networks", "count", parse_count, 5),
        Resource("backups", "backups", "count", parse_count, 50),
    )
}


def usage_percent(used: int, limit: int | None) -> float | None:
    """Share of the limit in use; None when there is no limit, 100 when the limit is 0."""
    if limit is None:
        return None
    return 100.0 if limit == 0 else round(used * 100 / limit, 2)


def parse_amounts(raw: dict) -> dict[str, int]:
    """Validate {"cpu": "500m", "memory": "1Gi", ...}; raise ValueError naming the bad key."""
    if not isinstance(raw, dict) or not raw:
        raise ValueError('expected an object of resource amounts, e.g. {"cpu": "500m", "containers": 2}')
    amounts = {}
    for name, value in raw.items():
        resource = RESOURCES.get(name)
        if resource is None:
            raise ValueError(f"unknown resource {name!r}; expected one of {', '.join(RESOURCES)}")
        try:
            amounts[name] = resource.parse(value)
        except ValueError as exc:
            raise ValueError(f"{name}: {exc}") from None
    return amounts
