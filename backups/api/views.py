from __future__ import annotations

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema
from rest_framework import exceptions, mixins, status, viewsets
from rest_framework.decorators import action
from rest_framework.response import Response

from backups import services
from backups.api import serializers as s
from backups.filtersets import BackupLocationFilterSet
from backups.models import BackupLocation
from backups.stores import StoreError
from hivemind.core.api import StaffOnlyMixin, TenantScopedViewSet
from hivemind.core.errors import Conflict
from tenants.services import audit_record


class LocationError(exceptions.APIException):
    """The location's server refused or could not be reached (its answer is the detail)."""

    status_code = status.HTTP_502_BAD_GATEWAY
    default_code = "backup_location_error"


class BackupLocationViewSet(TenantScopedViewSet):
    """Where a tenant's backups are stored: a directory, an S3-compatible bucket, an Azure Blob
    container or a Google Cloud Storage bucket. Credentials are write-only: answers say which
    are set (`secrets_set`), never their values."""

    queryset = BackupLocation.objects.filter(tenant__isnull=False).select_related("tenant")
    serializer_class = s.BackupLocationSerializer
    filterset_class = BackupLocationFilterSet
    http_method_names = ["get", "post", "patch", "delete", "head", "options"]

    def create_object(self, serializer):
        return create_location(serializer.validated_data["tenant"], serializer, self.request.user)

    def update_object(self, serializer):
        return update_location(serializer, self.request.user)

    def delete_object(self, instance) -> None:
        services.location_delete(location=instance, actor=self.request.user)

    @extend_schema(request=None, responses={200: s.CheckResultSerializer})
    @action(detail=True, methods=["post"], permission_action="change")
    def check(self, request, pk=None):
        """Prove the location reachable and writable now: a probe object is written, read back,
        listed and deleted. 200 when all of it worked; 502 with the server's own answer at the
        step that failed (a missing bucket, refused credentials, a closed port). The result is
        kept on the location (`check_state`, `check_error`, `checked_at`)."""
        return check_response(self.get_object(), request.user)

    @extend_schema(request=None, responses={200: s.SyncResultSerializer})
    @action(detail=True, methods=["post"], permission_action="change")
    def sync(self, request, pk=None):
        """Record the backups the location's repository holds that this install does not know yet
        (disaster recovery: after the tenant's repository keys were imported). 200 with the
        backups found; 409 when this tenant has no key for the repository there; 502 with the
        server's answer when the location cannot be read."""
        return sync_response(self.get_object(), request.user)


def create_location(tenant, serializer, user) -> BackupLocation:
    data = serializer.validated_data
    return services.location_create(
        tenant=tenant, name=data["name"], kind=data["kind"], config=data.get("config") or {},
        secrets=data.get("secrets") or {}, actor=user,
    )  # fmt: skip


def update_location(serializer, user) -> BackupLocation:
    data = serializer.validated_data
    return services.location_update(location=serializer.instance, actor=user, name=data.get("name"),
                                    config=data.get("config"), secrets=data.get("secrets"))  # fmt: skip


def check_response(location: BackupLocation, user) -> Response:
    try:
        detail = services.location_check(location=location, actor=user)
    except StoreError as exc:
        raise LocationError(str(exc)) from None
    return Response({"ok": True, "detail": detail})


def sync_response(location: BackupLocation, user, tenant=None) -> Response:
    from backups.discover import location_sync
    from backups.keys import NoRepositoryKey
    from backups.repository import RepositoryError

    try:
        found = location_sync(location=location, actor=user, tenant=tenant)
    except StoreError as exc:
        raise LocationError(str(exc)) from None
    except NoRepositoryKey as exc:
        raise Conflict(str(exc), code="backup_repository_key_missing") from None
    except RepositoryError as exc:
        raise Conflict(str(exc), code="backup_repository_unreadable") from None
    return Response({"found": len(found), "backups": [backup.pk for backup in found]})


class PlatformBackupLocationViewSet(
    StaffOnlyMixin,
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    mixins.CreateModelMixin,
    mixins.UpdateModelMixin,
    mixins.DestroyModelMixin,
    viewsets.GenericViewSet,
):
    """Platform backup locations (platform staff only; others get 403 on the list and on create,
    and 404 for any one). Every tenant may back up into one by name (a tenant's own location of
    that name comes first), each tenant into a repository of its own under tenants/<slug>/,
    encrypted with that tenant's key. Credentials are write-only. One holding tenants' backups
    or used by their policies cannot go."""

    queryset = BackupLocation.objects.filter(tenant__isnull=True)
    serializer_class = s.PlatformBackupLocationSerializer
    http_method_names = ["get", "post", "patch", "delete", "head", "options"]
    staff_only_noun = "platform backup locations"

    def perform_create(self, serializer) -> None:
        serializer.instance = create_location(None, serializer, self.request.user)

    def perform_update(self, serializer) -> None:
        serializer.instance = update_location(serializer, self.request.user)

    def perform_destroy(self, instance) -> None:
        services.location_delete(location=instance, actor=self.request.user)

    @extend_schema(request=None, responses={200: s.CheckResultSerializer})
    @action(detail=True, methods=["post"])
    def check(self, request, pk=None):
        """Prove the location reachable and writable now (as a tenant location's check): 200, or
        502 with the server's own answer at the step that failed."""
        return check_response(self.get_object(), request.user)

    @extend_schema(request=s.SyncRequestSerializer, responses={200: s.SyncResultSerializer})
    @action(detail=True, methods=["post"])
    def sync(self, request, pk=None):
        """Record the backups a tenant's repository in the location holds that this install does
        not know yet (disaster recovery, once the tenant's keys were imported)."""
        from tenants.models import Tenant

        location = self.get_object()
        body = s.SyncRequestSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        tenant = Tenant.objects.filter(slug=body.validated_data["tenant"]).first()
        if tenant is None:
            raise exceptions.ValidationError({"tenant": f"no tenant {body.validated_data['tenant']!r}"})
        return sync_response(location, request.user, tenant)

    @extend_schema(request=s.PlatformRestoreSerializer, responses={200: s.PlatformRestoreResultSerializer})
    @action(detail=True, methods=["post"])
    def restore(self, request, pk=None):
        """Disaster recovery of the platform: for each tenant here (all, or `tenants`) whose
        repository the location holds and whose key was imported, record its runs again and
        restore its newest backup whole into it, as platform staff (settings, quota, members
        too). Each entry names the restore and its workflow, or why the tenant was skipped."""
        from backups.platform_restore import platform_restore
        from backups.repository import RepositoryError

        location = self.get_object()
        body = s.PlatformRestoreSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        data = body.validated_data
        try:
            done = platform_restore(location=location, actor=request.user, tenants=data.get("tenants"),
                                    conflicts=data["conflicts"], dry_run=data["dry_run"])  # fmt: skip
        except StoreError as exc:
            raise LocationError(str(exc)) from None
        except RepositoryError as exc:
            raise Conflict(str(exc), code="backup_repository_unreadable") from None
        return Response({"tenants": done})

    @extend_schema(request=s.PlatformKeysSerializer, responses={200: OpenApiTypes.OBJECT})
    @action(detail=False, methods=["post"], url_path="export-keys")
    def export_keys(self, request):
        """Every tenant's backup repository keys (and names) in one document, encrypted under a
        passphrase: with it, a new install makes the tenants and reads their backups."""
        from backups import export
        from backups.api.restores import key_errors

        body = s.PlatformKeysSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        with key_errors():
            document = export.export_platform_keys(body.validated_data["passphrase"])
        audit_record(actor=request.user, tenant=None, action="backup.platform_keys_export",
                     changes={"tenants": [part["tenant"] for part in document["tenants"]]})  # fmt: skip
        return Response(document)

    @extend_schema(request=s.PlatformKeysSerializer, responses={200: s.ImportedPlatformKeysSerializer})
    @action(detail=False, methods=["post"], url_path="import-keys")
    def import_keys(self, request):
        """Store every tenant's keys of a platform keys document, making the tenants this install
        lacks; a wrong passphrase or an edited document makes and stores nothing (400 naming which)."""
        from backups import export
        from backups.api.restores import key_errors

        body = s.PlatformKeysSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        document = body.validated_data.get("document")
        if document is None:
            raise exceptions.ValidationError({"document": "required: the document export-keys wrote"})
        with key_errors():
            done = export.import_platform_keys(document, body.validated_data["passphrase"], request.user)
        audit_record(actor=request.user, tenant=None, action="backup.platform_keys_import",
                     changes={"tenants": [(d["tenant"], d["created"]) for d in done]})  # fmt: skip
        return Response({"tenants": done})
