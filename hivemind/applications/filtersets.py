import django_filters

from hivemind.applications.models import App, Container
from hivemind.core.filtersets import TenantOwnedFilterSet


class AppFilterSet(TenantOwnedFilterSet):
    name = django_filters.CharFilter()
    status = django_filters.ChoiceFilter(choices=App.Status.choices)

    class Meta:
        model = App
        fields = ["tenant", "name", "status"]


class ContainerFilterSet(TenantOwnedFilterSet):
    app = django_filters.CharFilter(field_name="app__name")
    node = django_filters.CharFilter(field_name="node__name")
    state = django_filters.ChoiceFilter(choices=Container.State.choices)

    class Meta:
        model = Container
        fields = ["tenant", "app", "node", "state"]
