from datetime import UTC

import django_filters

from tenants.models import AuditEvent, Membership, QuotaReservation, Role, ServiceAccount, Tenant


class TenantFilterSet(django_filters.FilterSet):
    status = django_filters.ChoiceFilter(choices=Tenant.Status.choices)
    isolation_level = django_filters.ChoiceFilter(choices=Tenant.Isolation.choices)

    class Meta:
        model = Tenant
        fields = ["status", "isolation_level"]


class _TenantOwnedFilterSet(django_filters.FilterSet):
    tenant = django_filters.CharFilter(field_name="tenant__slug", help_text="Tenant slug.")


class MembershipFilterSet(_TenantOwnedFilterSet):
    user = django_filters.CharFilter(field_name="user__username")
    role = django_filters.ChoiceFilter(choices=Role.choices)

    class Meta:
        model = Membership
        fields = ["tenant", "user", "role"]


class ServiceAccountFilterSet(_TenantOwnedFilterSet):
    class Meta:
        model = ServiceAccount
        fields = ["tenant", "name"]


class QuotaReservationFilterSet(_TenantOwnedFilterSet):
    state = django_filters.ChoiceFilter(choices=QuotaReservation.State.choices)

    class Meta:
        model = QuotaReservation
        fields = ["tenant", "state"]


class UTCDateTimeFilter(django_filters.IsoDateTimeFilter):
    """An ISO 8601 time with any offset, compared in UTC (databases refuse odd offsets)."""

    def filter(self, qs, value):
        return super().filter(qs, value.astimezone(UTC) if value is not None else None)


class AuditEventFilterSet(django_filters.FilterSet):
    tenant = django_filters.CharFilter(field_name="tenant_slug")
    actor = django_filters.CharFilter(field_name="actor_name")
    action = django_filters.CharFilter(field_name="action")
    since = UTCDateTimeFilter(field_name="created_at", lookup_expr="gte")

    class Meta:
        model = AuditEvent
        fields = ["tenant", "actor", "action", "since"]
