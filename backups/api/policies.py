"""Backup policies: what, where, when, how many to keep. (A read-only first version: its owner replaces it.)"""

from __future__ import annotations

from backups.models import BackupPolicy
from hivemind.core.api import TenantOwnedSerializer, TenantScopedViewSet


class BackupPolicySerializer(TenantOwnedSerializer):
    class Meta:
        model = BackupPolicy
        fields = ["id", "tenant", "created_at"]
        read_only_fields = fields


class BackupPolicyViewSet(TenantScopedViewSet):
    queryset = BackupPolicy.objects.select_related("tenant")
    serializer_class = BackupPolicySerializer
    http_method_names = ["get", "head", "options"]
