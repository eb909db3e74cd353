from __future__ import annotations

from drf_spectacular.utils import extend_schema
from rest_framework import exceptions, status
from rest_framework.decorators import action
from rest_framework.response import Response

from backups import services
from backups.api import serializers as s
from backups.filtersets import BackupLocationFilterSet
from backups.models import BackupLocation
from backups.stores import StoreError
from hivemind.core.api import TenantScopedViewSet
from hivemind.core.errors import Conflict


class LocationError(exceptions.APIException):
    """The location's server refused or could not be reached (its answer is the detail)."""

    status_code = status.HTTP_502_BAD_GATEWAY
    default_code = "backup_location_error"


class BackupLocationViewSet(TenantScopedViewSet):
    """Where a tenant's backups are stored: a directory, an S3-compatible bucket, an Azure Blob
    container or a Google Cloud Storage bucket. Credentials are write-only: answers say which
    are set (`secrets_set`), never their values."""

    queryset = BackupLocation.objects.select_related("tenant")
    serializer_class = s.BackupLocationSerializer
    filterset_class = BackupLocationFilterSet
    http_method_names = ["get", "post", "patch", "delete", "head", "options"]

    def create_object(self, serializer):
        data = serializer.validated_data
        return services.location_create(
            tenant=data["tenant"], name=data["name"], kind=data["kind"], config=data.get("config") or {},
            secrets=data.get("secrets") or {}, actor=self.request.user,
        )  # fmt: skip

    def update_object(self, serializer):
        data = serializer.validated_data
        return services.location_update(
            location=serializer.instance, actor=self.request.user, name=data.get("name"),
            config=data.get("config"), secrets=data.get("secrets"),
        )  # fmt: skip

    def delete_object(self, instance) -> None:
        services.location_delete(location=instance, actor=self.request.user)

    @extend_schema(request=None, responses={200: s.CheckResultSerializer})
    @action(detail=True, methods=["post"], permission_action="change")
    def check(self, request, pk=None):
        """Prove the location reachable and writable now: a probe object is written, read back,
        listed and deleted. 200 when all of it worked; 502 with the server's own answer at the
        step that failed (a missing bucket, refused credentials, a closed port). The result is
        kept on the location (`check_state`, `check_error`, `checked_at`)."""
        location = self.get_object()
        try:
            detail = services.location_check(location=location, actor=request.user)
        except StoreError as exc:
            raise LocationError(str(exc)) from None
        return Response({"ok": True, "detail": detail})

    @extend_schema(request=None, responses={200: s.SyncResultSerializer})
    @action(detail=True, methods=["post"], permission_action="change")
    def sync(self, request, pk=None):
        """Record the backups the location's repository holds that this install does not know yet
        (disaster recovery: after the tenant's repository keys were imported). 200 with the
        backups found; 409 when this tenant has no key for the repository there; 502 with the
        server's answer when the location cannot be read."""
        from backups.discover import location_sync
        from backups.keys import NoRepositoryKey
        from backups.repository import RepositoryError

        location = self.get_object()
        try:
            found = location_sync(location=location, actor=request.user)
        except StoreError as exc:
            raise LocationError(str(exc)) from None
        except NoRepositoryKey as exc:
            raise Conflict(str(exc), code="backup_repository_key_missing") from None
        except RepositoryError as exc:
            raise Conflict(str(exc), code="backup_repository_unreadable") from None
        return Response({"found": len(found), "backups": [backup.pk for backup in found]})
