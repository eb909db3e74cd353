"""Filter bases shared by every resource's filterset."""

from datetime import UTC

import django_filters


class TenantOwnedFilterSet(django_filters.FilterSet):
    tenant = django_filters.CharFilter(field_name="tenant__slug", help_text="Tenant slug.")


class UTCDateTimeFilter(django_filters.IsoDateTimeFilter):
    """An ISO 8601 time with any offset, compared in UTC (databases refuse odd offsets)."""

    def filter(self, qs, value):
        return super().filter(qs, value.astimezone(UTC) if value is not None else None)
