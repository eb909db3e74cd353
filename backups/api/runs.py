"""Backups of a tenant: runs and what they stored. (A read-only first version: its owner replaces it.)"""

from __future__ import annotations

from backups.models import Backup
from hivemind.core.api import TenantOwnedSerializer, TenantScopedViewSet


class BackupSerializer(TenantOwnedSerializer):
    class Meta:
        model = Backup
        fields = ["id", "tenant", "created_at"]
        read_only_fields = fields


class BackupViewSet(TenantScopedViewSet):
    queryset = Backup.objects.select_related("tenant")
    serializer_class = BackupSerializer
    http_method_names = ["get", "head", "options"]
