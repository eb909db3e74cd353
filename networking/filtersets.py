import django_filters

from hivemind.core.filtersets import TenantOwnedFilterSet
from networking.models import Network


class NetworkFilterSet(TenantOwnedFilterSet):
    name = django_filters.CharFilter()

    class Meta:
        model = Network
        fields = ["tenant", "name"]
