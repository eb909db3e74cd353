import django_filters

from hivemind.core.filtersets import TenantOwnedFilterSet
from storage.models import Snapshot, Volume


class VolumeFilterSet(TenantOwnedFilterSet):
    name = django_filters.CharFilter()
    status = django_filters.ChoiceFilter(choices=Volume.Status.choices)

    class Meta:
        model = Volume
        fields = ["tenant", "name", "status"]


class SnapshotFilterSet(TenantOwnedFilterSet):
    name = django_filters.CharFilter()
    volume = django_filters.CharFilter(field_name="volume__name", help_text="The volume's name.")

    class Meta:
        model = Snapshot
        fields = ["tenant", "name", "volume"]
