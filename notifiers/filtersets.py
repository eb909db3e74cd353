import django_filters

from hivemind.core.filtersets import FilterSet, TenantOwnedFilterSet
from notifiers.models import Delivery, Notifier


class NotifierFilterSet(TenantOwnedFilterSet):
    name = django_filters.CharFilter()
    kind = django_filters.ChoiceFilter(choices=Notifier.Kind.choices)

    class Meta:
        model = Notifier
        fields = ["tenant", "name", "kind"]


class DeliveryFilterSet(FilterSet):
    state = django_filters.ChoiceFilter(choices=Delivery.State.choices)
    status = django_filters.ChoiceFilter(choices=Delivery.Status.choices)

    class Meta:
        model = Delivery
        fields = ["state", "status"]
