"""Filter bases shared by every resource's filterset."""

import copy
from datetime import UTC

import django_filters
from django.db import models

from hivemind.core.input import BooleanFilter

# Model fields filtered by name get filters that refuse a malformed value (?active=maybe).
FILTER_DEFAULTS = copy.deepcopy(django_filters.filterset.FILTER_FOR_DBFIELD_DEFAULTS)
FILTER_DEFAULTS[models.BooleanField] = {"filter_class": BooleanFilter}


class FilterSet(django_filters.FilterSet):
    FILTER_DEFAULTS = FILTER_DEFAULTS


class TenantOwnedFilterSet(FilterSet):
    tenant = django_filters.CharFilter(field_name="tenant__slug", help_text="Tenant slug.")


class UTCDateTimeFilter(django_filters.IsoDateTimeFilter):
    """An ISO 8601 time with any offset, compared in UTC (databases refuse odd offsets)."""

    def filter(self, qs, value):
        return super().filter(qs, value.astimezone(UTC) if value is not None else None)
