"""The alerts pages' forms: filters, an alert rule and a silence, as people type them (matchers as
`app="web", replica=~"0|1"`, labels as one `key=value` a line, durations as 5m). They only
gather text into the shape alerting.services takes; the services validate it, and their errors
(which name the rule's field, e.g. `matchers[0].label`) go next to the form control they came from.
"""

from __future__ import annotations

import math
import re

from django import forms

from alerting.api.serializers import MAX_THRESHOLD
from alerting.models import Alert, AlertRule
from hivemind.core.units import QuantityError, parse_duration

_MATCHER = re.compile(r'\s*([A-Za-z_][A-Za-z0-9_]*)\s*(=~|!~|!=|=)\s*"((?:[^"\\]|\\.)*)"\s*(?:,|$)')
_NAMES = re.compile(r"[\s,]+")
MATCHERS_HELP = 'label="value", comma-separated; ops = != =~ !~ (regular expressions match the whole value)'


def parse_matchers_text(text: str) -> list[dict]:
    """`app="web", replica=~"0|1"` -> [{"label": "app", "op": "=", "value": "web"}, ...]."""
    text = text.strip()
    matchers, position = [], 0
    while position < len(text):
        found = _MATCHER.match(text, position)
        if not found or found.end() == position:
            rest = text[position:].strip()
            raise forms.ValidationError(f'expected label="value" (ops = != =~ !~), got {rest[:40]!r}')
        label, op, value = found.groups()
        matchers.append({"label": label, "op": op, "value": re.sub(r"\\(.)", r"\1", value)})
        position = found.end()
    return matchers


def matchers_text(matchers: list[dict]) -> str:
    def quoted(value: str) -> str:
        return value.replace("\\", "\\\\").replace('"', '\\"')

    return ", ".join(f'{m["label"]}{m.get("op", "=")}"{quoted(m.get("value", ""))}"' for m in matchers or [])


def parse_pairs(text: str) -> dict[str, str]:
    """One `key=value` a line (the value may hold `=` and spaces); blank lines are skipped."""
    pairs = {}
    for line in text.splitlines():
        if not line.strip():
            continue
        key, sep, value = line.partition("=")
        if not sep or not key.strip():
            raise forms.ValidationError(f"expected key=value, one a line, got {line.strip()[:40]!r}")
        pairs[key.strip()] = value.strip()
    return pairs


def pairs_text(pairs: dict) -> str:
    return "\n".join(f"{key}={value}" for key, value in (pairs or {}).items())


def duration_text(seconds: int | None) -> str:
    """300 -> "5m", 7200 -> "2h", 90 -> "90s": what one would type back."""
    if seconds is None:
        return ""
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds and seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def rule_expression(rule: AlertRule) -> str:
    """A rule's condition in one line, e.g. `avg over 5m of cpu{app="web"} by (app) > 0.8`."""
    matchers, window = matchers_text(rule.matchers), duration_text(rule.window_seconds)
    if rule.kind == AlertRule.Kind.EVENT:
        where = f"{{{matchers}}} " if matchers else ""
        return f"event {rule.event} {where}over {window} {rule.comparison} {rule.threshold:g}"
    series = f"{rule.metric}{{{matchers}}}" if matchers else rule.metric
    head = series if rule.aggregation == "last" else f"{rule.aggregation} over {window} of {series}"
    by = f" by ({', '.join(rule.by)})" if rule.by else ""
    return f"{head}{by} {rule.comparison} {rule.threshold:g}"


class AlertFilterForm(forms.Form):
    state = forms.ChoiceField(required=False, label="State")
    severity = forms.ChoiceField(required=False, label="Severity")

    STATES = [("firing", "firing"), ("pending", "pending"), ("silenced", "silenced"), ("resolved", "resolved")]

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["state"].choices = [("", "any"), *self.STATES]
        self.fields["severity"].choices = [("", "any"), *AlertRule.Severity.choices]


class HistoryFilterForm(forms.Form):
    kind = forms.ChoiceField(required=False, label="Change")
    rule = forms.CharField(required=False, max_length=63, label="Rule")

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        from alerting.models import AlertEvent

        self.fields["kind"].choices = [("", "any"), *AlertEvent.Kind.choices]


class DurationField(forms.CharField):
    """A duration as text (90s, 5m, 2h, 1d): seconds, with the API's words for a bad one."""

    def __init__(self, *, low: float, high: float, **kwargs):
        self.low, self.high = low, high
        kwargs.setdefault("max_length", 20)
        super().__init__(**kwargs)
        self.validators = []  # the length is checked on the text, before it becomes seconds

    def to_python(self, value):
        text = super().to_python(value)
        if not text:
            return None
        if len(text) > self.max_length:
            raise forms.ValidationError(f"expected at most {self.max_length} characters, got {len(text)}")
        try:
            return round(parse_duration(text, low=self.low, high=self.high))
        except QuantityError as exc:
            raise forms.ValidationError(str(exc)) from None


class RuleForm(forms.Form):
    """An alert rule. Metric rules read a series /metrics serves and compare it; anomaly rules
    judge a metric's series against their own learnt baseline; event rules watch a platform
    event. Field names are the service's where they are the same, so its errors land on them."""

    name = forms.CharField(max_length=63, help_text="a DNS label, unique in the tenant, e.g. high-cpu")
    kind = forms.ChoiceField(
        choices=[(k, k) for k in (AlertRule.Kind.METRIC, AlertRule.Kind.ANOMALY, AlertRule.Kind.EVENT)],
        initial=AlertRule.Kind.METRIC,
    )
    metric = forms.CharField(
        max_length=200, required=False, help_text="a metric /metrics serves, e.g. hivemind_container_cpu_millicores"
    )
    event = forms.ChoiceField(required=False, help_text="what an event rule watches")
    matchers = forms.CharField(max_length=4000, required=False, help_text=MATCHERS_HELP)
    aggregation = forms.ChoiceField(
        choices=AlertRule.Aggregation.choices, initial=AlertRule.Aggregation.LAST,
        help_text="over the window, per series; last: the current value",
    )  # fmt: skip
    window = DurationField(
        low=1, high=7 * 86400, required=False,
        help_text="e.g. 5m; empty: 5m (metric, event), 1h of history to learn from (anomaly, at least 10m)",
    )  # fmt: skip
    by = forms.CharField(max_length=1000, required=False, help_text="labels to combine series by, e.g. app")
    comparison = forms.ChoiceField(choices=[(c, c) for c in AlertRule.Comparison.values], initial=">")
    threshold = forms.CharField(
        max_length=40, required=False, help_text="a number; empty for an event rule: its default"
    )
    for_duration = DurationField(
        low=0, high=7 * 86400, required=False, initial="0s", label="For",
        help_text="how long the condition holds before the alert fires, e.g. 2m",
    )  # fmt: skip
    severity = forms.ChoiceField(choices=AlertRule.Severity.choices, initial=AlertRule.Severity.WARNING)
    labels = forms.CharField(
        widget=forms.Textarea(attrs={"rows": 2}), required=False, max_length=10_000,
        help_text="added to every alert: one key=value a line",
    )  # fmt: skip
    annotations = forms.CharField(
        widget=forms.Textarea(attrs={"rows": 3}), required=False, max_length=50_000,
        help_text="one name=text a line; {{ value }}, {{ threshold }}, {{ labels.NAME }}, {{ rule.name }}",
    )  # fmt: skip
    group_by = forms.CharField(
        max_length=1000, required=False, label="Group by", help_text="labels that split notifications"
    )
    notifiers = forms.MultipleChoiceField(required=False, widget=forms.CheckboxSelectMultiple)
    repeat_interval = DurationField(
        low=60, high=30 * 86400, required=False, initial="4h", label="Repeat interval",
        help_text="how often a group still firing is announced again",
    )  # fmt: skip
    enabled = forms.BooleanField(required=False, initial=True)

    # Where a service error about a rule field is shown (the rest keep their own names).
    SERVICE_FIELDS = {
        "window_seconds": "window",
        "for_seconds": "for_duration",
        "repeat_interval_seconds": "repeat_interval",
    }

    def __init__(self, *args, notifier_names: list[str], **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["event"].choices = [("", "—"), *AlertRule.Event.choices]
        self.fields["notifiers"].choices = [(n, n) for n in notifier_names]

    @classmethod
    def initial_of(cls, rule: AlertRule) -> dict:
        return {
            "name": rule.name, "kind": rule.kind, "metric": rule.metric, "event": rule.event,
            "matchers": matchers_text(rule.matchers), "aggregation": rule.aggregation,
            "window": duration_text(rule.window_seconds), "by": ", ".join(rule.by),
            "comparison": rule.comparison, "threshold": f"{rule.threshold:g}",
            "for_duration": duration_text(rule.for_seconds), "severity": rule.severity,
            "labels": pairs_text(rule.labels), "annotations": pairs_text(rule.annotations),
            "group_by": ", ".join(rule.group_by), "notifiers": [n.name for n in rule.notifiers.all()],
            "repeat_interval": duration_text(rule.repeat_interval_seconds), "enabled": rule.enabled,
        }  # fmt: skip

    def clean_matchers(self):
        return parse_matchers_text(self.cleaned_data["matchers"])

    def clean_by(self):
        return [n for n in _NAMES.split(self.cleaned_data["by"].strip()) if n]

    def clean_group_by(self):
        return [n for n in _NAMES.split(self.cleaned_data["group_by"].strip()) if n]

    def clean_labels(self):
        return parse_pairs(self.cleaned_data["labels"])

    def clean_annotations(self):
        return parse_pairs(self.cleaned_data["annotations"])

    def clean_threshold(self):
        text = self.cleaned_data["threshold"].strip()
        if not text:
            return None
        try:
            value = float(text)
        except ValueError:
            raise forms.ValidationError(f"expected a number, got {text[:40]!r}") from None
        if not math.isfinite(value) or abs(value) > MAX_THRESHOLD:
            raise forms.ValidationError(f"expected a finite number between -{MAX_THRESHOLD:g} and {MAX_THRESHOLD:g}")
        return value

    def clean(self):
        data = super().clean()
        if data.get("kind") == AlertRule.Kind.METRIC and "threshold" in data and data["threshold"] is None:
            self.add_error("threshold", "a metric rule needs a threshold")
        return data

    def values(self) -> dict:
        """The rule's fields as rule_create / rule_update / rule_preview take them. A metric rule
        has no event and an event rule no metric (what the other kind's boxes hold is left out)."""
        data = self.cleaned_data
        kind = data["kind"]
        values = {
            "name": data["name"].strip(), "kind": kind, "matchers": data["matchers"],
            "metric": data["metric"].strip() if kind in (AlertRule.Kind.METRIC, AlertRule.Kind.ANOMALY) else "",
            "event": data["event"] if kind == AlertRule.Kind.EVENT else "",
            "severity": data["severity"], "labels": data["labels"], "annotations": data["annotations"],
            "group_by": data["group_by"], "enabled": data["enabled"],
        }  # fmt: skip
        if kind == AlertRule.Kind.METRIC:
            values.update(aggregation=data["aggregation"], by=data["by"], comparison=data["comparison"])
        if data["threshold"] is not None and kind != AlertRule.Kind.ANOMALY:  # its band is its threshold
            values.update(threshold=data["threshold"], comparison=data["comparison"])
        for field, key in (("window", "window_seconds"), ("for_duration", "for_seconds"),
                           ("repeat_interval", "repeat_interval_seconds")):  # fmt: skip
            if data[field] is not None:
                values[key] = data[field]
        return values

    def add_service_errors(self, error) -> None:
        """A service's ValidationError next to the control it names: `matchers[0].label` goes to
        matchers (with its path kept in the message), `window_seconds` to window."""
        errors = error.message_dict if hasattr(error, "error_dict") else {None: error.messages}
        for key, messages in errors.items():
            root = re.split(r"[.\[]", key or "", maxsplit=1)[0]
            field = self.SERVICE_FIELDS.get(root, root)
            for message in messages:
                if field in self.fields:
                    self.add_error(field, message if key == root else f"{key}: {message}")
                else:
                    self.add_error(None, f"{key}: {message}" if key and key != "__all__" else message)


class SilenceForm(forms.Form):
    matchers = forms.CharField(max_length=4000, help_text=f'e.g. alertname="high-cpu", app="web"; {MATCHERS_HELP}')
    duration = DurationField(
        low=60, high=366 * 86400, required=False, initial="2h", help_text="how long from now, e.g. 2h (or an end time)"
    )
    ends_at = forms.DateTimeField(
        required=False, label="Or until", help_text="an end time in UTC, e.g. 2026-12-01 18:00",
    )  # fmt: skip
    comment = forms.CharField(max_length=500, required=False, help_text="why, for the others")

    def clean_matchers(self):
        return parse_matchers_text(self.cleaned_data["matchers"])

    def clean(self):
        data = super().clean()
        if data.get("duration") is None and data.get("ends_at") is None and not self.has_error("duration"):
            if not self.has_error("ends_at"):
                self.add_error("duration", "give a duration or an end time")
        elif data.get("duration") is not None and data.get("ends_at") is not None:
            self.add_error("ends_at", "give either a duration or an end time (not both)")
        return data

    @classmethod
    def initial_for(cls, alert: Alert) -> dict:
        """A silence of one alert: its rule's name and its own labels (not the rule's severity)."""
        labels = {k: v for k, v in alert.labels.items() if k != "severity"}
        labels.setdefault("alertname", alert.rule.name)
        matchers = [{"label": k, "op": "=", "value": v} for k, v in sorted(labels.items())]
        return {"matchers": matchers_text(matchers), "duration": "2h"}
