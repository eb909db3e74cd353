"""The pure parts of an alert rule: label matchers, window aggregations, comparisons, fingerprints
and annotation templates. No database here: services.py feeds these with series and samples.

A series is a label set (a dict of label name -> value) and a value. A rule's expression is

    <aggregation> over <window> of <metric>{<matchers>} [combined by <by>] <comparison> <threshold>

- matchers: `{"label": "app", "op": "=", "value": "web"}`; ops `=`, `!=`, `=~`, `!~` (regular
  expressions match the whole value, as in PromQL; a missing label is the empty string);
- aggregation over the window, per series: avg, min, max, sum, count (samples), last (the current
  value; needs no history), rate (per second) and increase (counters: a drop is a reset, as in
  PromQL, without its extrapolation);
- `by`: series that agree on these labels are combined into one (avg -> avg, min -> min,
  max -> max, anything else -> sum) and keep only those labels, like PromQL's `sum by (...)`.
"""

from __future__ import annotations

import hashlib
import json
import math
import operator
import re
from collections.abc import Callable, Iterable, Mapping

MATCH_OPS = ("=", "!=", "=~", "!~")
COMPARISONS: dict[str, Callable[[float, float], bool]] = {
    ">": operator.gt,
    ">=": operator.ge,
    "<": operator.lt,
    "<=": operator.le,
    "==": operator.eq,
    "!=": operator.ne,
}
AGGREGATIONS = ("avg", "min", "max", "sum", "count", "last", "rate", "increase")
WINDOWED = (frozenset(AGGREGATIONS) - {"last"}) | {"anomaly"}  # anomaly rules read their window too
MAX_REGEX = 200
LABEL_NAME = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]{0,62}$")
MAX_MATCHERS = 20


class ExpressionError(ValueError):
    """A part of a rule that cannot be used; `field` names it."""

    def __init__(self, field: str, message: str):
        super().__init__(message)
        self.field = field
        self.message = message


# --- matchers -------------------------------------------------------------------------------------


class Matcher:
    __slots__ = ("_regex", "label", "op", "value")

    def __init__(self, label: str, op: str, value: str):
        self.label, self.op, self.value = label, op, value
        self._regex = re.compile(value) if op in ("=~", "!~") else None

    def matches(self, labels: Mapping[str, str]) -> bool:
        found = labels.get(self.label, "")
        if self.op == "=":
            return found == self.value
        if self.op == "!=":
            return found != self.value
        hit = self._regex.fullmatch(found) is not None
        return hit if self.op == "=~" else not hit

    def as_dict(self) -> dict:
        return {"label": self.label, "op": self.op, "value": self.value}


def parse_matchers(raw: object, field: str = "matchers") -> list[Matcher]:
    """`[{"label", "op", "value"}]` -> Matchers, or ExpressionError naming the field and the entry."""
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise ExpressionError(field, 'expected a list of {"label": ..., "op": "=", "value": ...}')
    if len(raw) > MAX_MATCHERS:
        raise ExpressionError(field, f"at most {MAX_MATCHERS} matchers")
    matchers = []
    for index, item in enumerate(raw):
        where = f"{field}[{index}]"
        if not isinstance(item, dict) or set(item) - {"label", "op", "value"} or "label" not in item:
            raise ExpressionError(where, 'expected {"label": NAME, "op": "=|!=|=~|!~", "value": TEXT}')
        label, op, value = item.get("label"), item.get("op", "="), item.get("value", "")
        if not isinstance(label, str) or not LABEL_NAME.match(label):
            raise ExpressionError(f"{where}.label", "expected a label name (letters, digits and _, at most 63)")
        if op not in MATCH_OPS:
            raise ExpressionError(f"{where}.op", f"expected one of {', '.join(MATCH_OPS)}")
        if not isinstance(value, str) or len(value) > MAX_REGEX or any(ord(c) < 32 or ord(c) == 127 for c in value):
            raise ExpressionError(f"{where}.value", f"expected text of at most {MAX_REGEX} printable characters")
        try:
            matchers.append(Matcher(label, op, value))
        except re.error as exc:
            raise ExpressionError(f"{where}.value", f"not a regular expression: {exc}") from None
    return matchers


def matches_all(matchers: Iterable[Matcher], labels: Mapping[str, str]) -> bool:
    return all(m.matches(labels) for m in matchers)


def parse_label_names(raw: object, field: str) -> list[str]:
    if raw is None:
        return []
    if not isinstance(raw, list) or not all(isinstance(n, str) and LABEL_NAME.match(n) for n in raw):
        raise ExpressionError(field, "expected a list of label names (letters, digits and _)")
    if len(raw) > MAX_MATCHERS:
        raise ExpressionError(field, f"at most {MAX_MATCHERS} labels")
    return list(dict.fromkeys(raw))


# --- aggregation ----------------------------------------------------------------------------------


def increase(samples: list[tuple[float, float]]) -> float | None:
    """What a counter gained over `samples` ((time, value), oldest first); a drop is a reset."""
    if len(samples) < 2:
        return None
    total, previous = 0.0, samples[0][1]
    for _, value in samples[1:]:
        total += value - previous if value >= previous else value
        previous = value
    return total


def aggregate(aggregation: str, samples: list[tuple[float, float]]) -> float | None:
    """One series' samples in the window ((seconds, value), oldest first) -> the expression's value,
    or None when there are too few (rate and increase need two)."""
    if not samples:
        return None
    values = [v for _, v in samples]
    if aggregation == "last":
        return values[-1]
    if aggregation == "avg":
        return sum(values) / len(values)
    if aggregation == "min":
        return min(values)
    if aggregation == "max":
        return max(values)
    if aggregation == "sum":
        return sum(values)
    if aggregation == "count":
        return float(len(values))
    gained = increase(samples)
    if gained is None:
        return None
    if aggregation == "increase":
        return gained
    span = samples[-1][0] - samples[0][0]
    return gained / span if span > 0 else None  # rate


def combine_by(aggregation: str, by: list[str], series: Iterable[tuple[dict, float]]) -> list[tuple[dict, float]]:
    """Series that agree on the `by` labels become one series with only those labels."""
    groups: dict[tuple, list[float]] = {}
    keys: dict[tuple, dict] = {}
    for labels, value in series:
        key = tuple(labels.get(name, "") for name in by)
        groups.setdefault(key, []).append(value)
        keys[key] = {name: labels[name] for name in by if labels.get(name)}
    combined = []
    for key, values in groups.items():
        if aggregation == "avg":
            value = sum(values) / len(values)
        elif aggregation == "min":
            value = min(values)
        elif aggregation == "max":
            value = max(values)
        else:
            value = sum(values)
        combined.append((keys[key], value))
    return combined


def compare(comparison: str, value: float, threshold: float) -> bool:
    return not math.isnan(value) and COMPARISONS[comparison](value, threshold)


def fingerprint(labels: Mapping[str, str]) -> str:
    """A stable key for a label set (sorted JSON, SHA-256, 32 hex digits)."""
    text = json.dumps(sorted(labels.items()), separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:32]


# --- annotation templates ---------------------------------------------------------------------------

# `{{ value }}`, `{{ threshold }}`, `{{ labels.app }}`, `{{ rule.name }}`, `{{ rule.severity }}`.
# Nothing else: no attribute access, no calls, no filters beyond the formatting of numbers.
_PLACEHOLDER = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_]*)(?:\.([A-Za-z_][A-Za-z0-9_]*))?\s*\}\}")
TEMPLATE_HELP = "placeholders: {{ value }}, {{ threshold }}, {{ labels.NAME }}, {{ rule.name }}, {{ rule.severity }}"
MAX_ANNOTATION = 2000


def check_template(text: str, field: str) -> None:
    leftover = _PLACEHOLDER.sub("", text)
    if "{{" in leftover or "}}" in leftover:
        raise ExpressionError(field, f"a placeholder cannot be read; {TEMPLATE_HELP}")
    for match in _PLACEHOLDER.finditer(text):
        root, key = match.groups()
        if (root in ("value", "threshold") and key is None) or (root == "labels" and key):
            continue
        if root == "rule" and key in ("name", "severity"):
            continue
        raise ExpressionError(field, f"unknown placeholder {match.group(0)!r}; {TEMPLATE_HELP}")


def _number(value: float | None) -> str:
    if value is None:
        return ""
    if float(value).is_integer() and abs(value) < 1e15:
        return str(int(value))
    return f"{value:.4g}"


def render(text: str, *, labels: Mapping[str, str], value: float | None, threshold: float, rule: Mapping) -> str:
    def replace(match: re.Match) -> str:
        root, key = match.groups()
        if root == "value":
            return _number(value)
        if root == "threshold":
            return _number(threshold)
        if root == "labels":
            return str(labels.get(key, ""))
        if root == "rule":
            return str(rule.get(key, ""))
        return ""

    return _PLACEHOLDER.sub(replace, text)
