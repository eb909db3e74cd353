"""Restores: a backup (or part of one) put back. (A read-only first version: its owner replaces it.)"""

from __future__ import annotations

from backups.models import Restore
from hivemind.core.api import TenantOwnedSerializer, TenantScopedViewSet


class RestoreSerializer(TenantOwnedSerializer):
    class Meta:
        model = Restore
        fields = ["id", "tenant", "created_at"]
        read_only_fields = fields


class RestoreViewSet(TenantScopedViewSet):
    queryset = Restore.objects.select_related("tenant")
    serializer_class = RestoreSerializer
    http_method_names = ["get", "head", "options"]
