import django_filters

from hivemind.core.filtersets import TenantOwnedFilterSet, UTCDateTimeFilter
from hivemind.core.input import BooleanFilter
from hivemind.workflows.models import ACTIVE_STATES, Workflow, WorkflowState


class WorkflowFilterSet(TenantOwnedFilterSet):
    state = django_filters.MultipleChoiceFilter(
        choices=WorkflowState.choices, help_text="One or more states: ?state=running&state=pending."
    )
    kind = django_filters.CharFilter()
    subject = django_filters.CharFilter(help_text="What the workflow works on, e.g. app:12.")
    active = BooleanFilter(method="filter_active", help_text="Only unfinished (true) or finished.")
    since = UTCDateTimeFilter(field_name="created_at", lookup_expr="gte")
    trace_id = django_filters.CharFilter(
        max_length=32, help_text="The workflow of a trace: its 32 hex digits, as a log line or a trace shows it."
    )

    class Meta:
        model = Workflow
        fields = ["tenant", "state", "kind", "subject", "active", "since", "trace_id"]

    def filter_active(self, queryset, name, value):
        if value is None:
            return queryset
        return queryset.filter(state__in=ACTIVE_STATES) if value else queryset.exclude(state__in=ACTIVE_STATES)
