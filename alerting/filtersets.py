import django_filters

from alerting.models import Alert, AlertEvent, AlertRule, Silence
from hivemind.core.filtersets import TenantOwnedFilterSet, UTCDateTimeFilter
from hivemind.core.input import BooleanFilter


class AlertRuleFilterSet(TenantOwnedFilterSet):
    name = django_filters.CharFilter()
    kind = django_filters.ChoiceFilter(choices=AlertRule.Kind.choices)
    severity = django_filters.ChoiceFilter(choices=AlertRule.Severity.choices)
    status = django_filters.ChoiceFilter(choices=AlertRule.Status.choices)

    class Meta:
        model = AlertRule
        fields = ["tenant", "name", "kind", "severity", "status", "enabled"]


class AlertFilterSet(TenantOwnedFilterSet):
    state = django_filters.ChoiceFilter(choices=Alert.State.choices)
    severity = django_filters.ChoiceFilter(field_name="rule__severity", choices=AlertRule.Severity.choices)
    rule = django_filters.CharFilter(field_name="rule__name", help_text="The rule's name.")

    class Meta:
        model = Alert
        fields = ["tenant", "state", "severity", "rule", "silenced"]


class AlertEventFilterSet(TenantOwnedFilterSet):
    rule = django_filters.CharFilter(field_name="rule__name", help_text="The rule's name.")
    kind = django_filters.ChoiceFilter(choices=AlertEvent.Kind.choices)
    since = UTCDateTimeFilter(field_name="at", lookup_expr="gte", help_text="ISO 8601 time or how long ago (1h).")

    class Meta:
        model = AlertEvent
        fields = ["tenant", "rule", "kind", "since"]


class SilenceFilterSet(TenantOwnedFilterSet):
    expired = BooleanFilter(method="filter_expired", help_text="true: only ended silences.")

    class Meta:
        model = Silence
        fields = ["tenant", "expired"]

    def filter_expired(self, queryset, name, value):
        from django.utils import timezone

        now = timezone.now()
        return queryset.filter(ends_at__lte=now) if value else queryset.filter(ends_at__gt=now)
