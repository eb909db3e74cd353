import django_filters

from hivemind.core.filtersets import TenantOwnedFilterSet
from networking.models import Network, NetworkPolicy


class NetworkFilterSet(TenantOwnedFilterSet):
    name = django_filters.CharFilter()

    class Meta:
        model = Network
        fields = ["tenant", "name"]


class NetworkPolicyFilterSet(TenantOwnedFilterSet):
    name = django_filters.CharFilter()

    class Meta:
        model = NetworkPolicy
        fields = ["tenant", "name"]
