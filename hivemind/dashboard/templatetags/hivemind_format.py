"""Template filters for numbers: {% load hivemind_format %} then {{ node.cpu_millis|cpu }}."""

import shlex

from django import template

from hivemind.dashboard import formatting

register = template.Library()
register.filter("cpu", formatting.cpu_text)
register.filter("bytes", formatting.bytes_text)
register.filter("seconds", formatting.seconds_text)


@register.filter
def amount(value, unit: str) -> str:
    return formatting.amount_text(value, unit)


@register.filter
def bar_width(percent) -> str:
    """A percentage as a CSS width, clamped to 0-100 and written with a dot whatever the locale."""
    try:
        return f"{max(0.0, min(100.0, float(percent))):.1f}"
    except (TypeError, ValueError):
        return "0.0"


@register.filter
def shell(words) -> str:
    """A command stored as a list of words, written back as one would type it."""
    return shlex.join(str(w) for w in words) if isinstance(words, list | tuple) else str(words or "")


@register.filter
def number(value) -> str:
    """A measured value as the alerting annotations write it: 3 rather than 3.0, 0.1235 rather than 0.123456."""
    if value is None:
        return "—"
    try:
        value = float(value)
    except (TypeError, ValueError):
        return str(value)
    if value.is_integer() and abs(value) < 1e15:
        return str(int(value))
    return f"{value:.4g}"
