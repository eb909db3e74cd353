"""Numbers as people read them on a page: CPU in millicores or cores, sizes in binary units,
durations in s/min/h. Used by the templates (templatetags/hivemind_format.py) and the charts."""

from __future__ import annotations

_BINARY = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"]


def cpu_text(millis: float | None) -> str:
    if millis is None:
        return "—"
    if millis < 1000:
        return f"{millis:.0f}m"
    return f"{millis / 1000:.3g} cores" if millis != 1000 else "1 core"


def bytes_text(value: float | None) -> str:
    if value is None:
        return "—"
    size, unit = float(value), 0
    while size >= 1024 and unit < len(_BINARY) - 1:
        size, unit = size / 1024, unit + 1
    if unit == 0:
        return f"{size:.0f} B"
    return f"{size:.3g} {_BINARY[unit]}"


def seconds_text(value: float | None) -> str:
    if value is None:
        return "—"
    if value < 60:
        return f"{value:.1f} s" if value < 10 else f"{value:.0f} s"
    if value < 3600:
        return f"{value / 60:.1f} min"
    return f"{value / 3600:.1f} h"


def amount_text(value: float | None, unit: str) -> str:
    """A quota amount in the unit tenants.quotas names (millicores, bytes or count)."""
    if value is None:
        return "no limit"
    if unit == "millicores":
        return cpu_text(value)
    if unit == "bytes":
        return bytes_text(value)
    return f"{value:,}"
