import django_filters

from backups.models import BackupLocation
from hivemind.core.filtersets import TenantOwnedFilterSet


class BackupLocationFilterSet(TenantOwnedFilterSet):
    name = django_filters.CharFilter()
    kind = django_filters.ChoiceFilter(choices=BackupLocation.Kind.choices)
    check_state = django_filters.ChoiceFilter(choices=BackupLocation.Check.choices)

    class Meta:
        model = BackupLocation
        fields = ["tenant", "name", "kind", "check_state"]
