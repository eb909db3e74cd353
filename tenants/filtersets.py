import django_filters

from hivemind.core.filtersets import FilterSet, TenantOwnedFilterSet, UTCDateTimeFilter
from tenants.models import AuditEvent, Membership, QuotaReservation, Role, ServiceAccount, Tenant


class TenantFilterSet(FilterSet):
    status = django_filters.ChoiceFilter(choices=Tenant.Status.choices)
    isolation_level = django_filters.ChoiceFilter(choices=Tenant.Isolation.choices)

    class Meta:
        model = Tenant
        fields = ["status", "isolation_level"]


class MembershipFilterSet(TenantOwnedFilterSet):
    user = django_filters.CharFilter(field_name="user__username")
    role = django_filters.ChoiceFilter(choices=Role.choices)

    class Meta:
        model = Membership
        fields = ["tenant", "user", "role"]


class ServiceAccountFilterSet(TenantOwnedFilterSet):
    class Meta:
        model = ServiceAccount
        fields = ["tenant", "name"]


class QuotaReservationFilterSet(TenantOwnedFilterSet):
    state = django_filters.ChoiceFilter(choices=QuotaReservation.State.choices)

    class Meta:
        model = QuotaReservation
        fields = ["tenant", "state"]


class AuditEventFilterSet(FilterSet):
    tenant = django_filters.CharFilter(field_name="tenant_slug")
    actor = django_filters.CharFilter(field_name="actor_name")
    action = django_filters.CharFilter(field_name="action")
    since = UTCDateTimeFilter(field_name="created_at", lookup_expr="gte")

    class Meta:
        model = AuditEvent
        fields = ["tenant", "actor", "action", "since"]
