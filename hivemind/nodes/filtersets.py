"""Node filters: `?state=ready&state=cordoned` and label selectors `?label=zone=eu-1,gpu`."""

from __future__ import annotations

import functools
import operator
from dataclasses import dataclass

import django_filters
from django import forms
from django.db.models import Q, TextField
from django.db.models.fields.json import KeyTextTransform
from django.db.models.functions import Cast
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema_field

from hivemind.core.filtersets import FilterSet
from hivemind.nodes.labels import LabelError, check_key, check_value
from hivemind.nodes.models import Node
from hivemind.nodes.selectors import NODE_STATES


@dataclass(frozen=True)
class Requirement:
    """One clause of a label selector: key=value, key!=value, key (has it) or !key (lacks it)."""

    key: str
    op: str  # "=", "!=", "exists", "!exists"
    value: str = ""


def parse_selector(text: str) -> list[Requirement]:
    """`zone=eu-1,gpu,!spot,tier!=db` -> requirements; LabelError names the bad clause."""
    requirements = []
    for clause in (part.strip() for part in text.split(",")):
        if not clause:
            continue
        if "!=" in clause:
            key, value = (s.strip() for s in clause.split("!=", 1))
            op = "!="
        elif "=" in clause:
            key, value = (s.strip() for s in clause.split("=", 1))
            key, value, op = key.rstrip("="), value.lstrip("="), "="  # key==value means the same
        elif clause.startswith("!"):
            key, value, op = clause[1:].strip(), "", "!exists"
        else:
            key, value, op = clause, "", "exists"
        check_key(key)
        if op in ("=", "!="):
            check_value(key, value)
        requirements.append(Requirement(key, op, value))
    return requirements


class _RepeatableTextInput(forms.TextInput):
    """Reads every `?label=` given, so repeated selectors add up instead of the last one winning."""

    def value_from_datadict(self, data, files, name):
        getlist = getattr(data, "getlist", None)
        if getlist is not None:
            return getlist(name)
        return [data[name]] if name in data else []

    def format_value(self, value):
        return ",".join(value) if isinstance(value, list | tuple) else value


class LabelSelectorField(forms.Field):
    widget = _RepeatableTextInput

    def to_python(self, value):
        texts = value if isinstance(value, list | tuple) else [value] if value else []
        try:
            return [req for text in texts for req in parse_selector(str(text))]
        except LabelError as exc:
            # The message quotes the user's text, which may hold a "%": pass it as a parameter.
            raise forms.ValidationError(
                "%(problem)s; a selector is key=value, key!=value, key or !key, comma-separated",
                params={"problem": str(exc)},
            ) from None


@extend_schema_field(OpenApiTypes.STR)
class LabelSelectorFilter(django_filters.Filter):
    field_class = LabelSelectorField

    def filter(self, qs, value):
        for index, req in enumerate(value or []):
            if req.op in ("exists", "!exists"):
                condition = Q(labels__has_key=req.key)
                qs = qs.filter(condition if req.op == "exists" else ~condition)
                continue
            # The value as text, for any key (even one with `__`); the cast makes SQLite compare
            # text with text instead of JSON with an unquoted string.
            alias = f"_label_{index}"
            qs = qs.alias(**{alias: Cast(KeyTextTransform(req.key, "labels"), TextField())})
            if req.op == "=":
                qs = qs.filter(**{alias: req.value})
            else:  # like Kubernetes, key!=value also matches nodes without the key
                qs = qs.filter(~Q(**{alias: req.value}) | Q(**{f"{alias}__isnull": True}))
        return qs


class NodeFilterSet(FilterSet):
    state = django_filters.MultipleChoiceFilter(
        choices=[(name, name) for name in NODE_STATES],
        method="filter_state",
        help_text="One or more states: ?state=ready&state=cordoned.",
    )
    label = LabelSelectorFilter(
        help_text="Label selector: key=value, key!=value, key (has it) or !key (lacks it); "
        "comma-separated or repeated, all must match. E.g. ?label=zone=eu-1,gpu."
    )

    class Meta:
        model = Node
        fields = ["state", "label"]

    def filter_state(self, queryset, name, value):
        if not value:
            return queryset
        return queryset.filter(functools.reduce(operator.or_, (NODE_STATES[state] for state in value)))
