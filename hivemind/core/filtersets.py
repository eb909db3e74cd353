"""Filter bases shared by every resource's filterset."""

import copy

import django_filters
from django import forms
from django.db import models

from hivemind.core.input import BooleanFilter
from hivemind.core.units import QuantityError, parse_timestamp

# Model fields filtered by name get filters that refuse a malformed value (?active=maybe).
FILTER_DEFAULTS = copy.deepcopy(django_filters.filterset.FILTER_FOR_DBFIELD_DEFAULTS)
FILTER_DEFAULTS[models.BooleanField] = {"filter_class": BooleanFilter}


class FilterSet(django_filters.FilterSet):
    FILTER_DEFAULTS = FILTER_DEFAULTS


class TenantOwnedFilterSet(FilterSet):
    tenant = django_filters.CharFilter(field_name="tenant__slug", help_text="Tenant slug.")


class TimestampField(forms.CharField):
    """A time as core.units.parse_timestamp reads it: ISO 8601 or how long ago ("5m")."""

    def to_python(self, value):
        value = super().to_python(value)
        if value in self.empty_values:
            return None
        try:
            return parse_timestamp(value)
        except QuantityError as exc:
            raise forms.ValidationError(str(exc), code="invalid") from None


class UTCDateTimeFilter(django_filters.Filter):
    """An ISO 8601 time with any offset (or how long ago, e.g. 5m), compared in UTC."""

    field_class = TimestampField
