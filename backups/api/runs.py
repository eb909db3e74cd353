"""/api/v1/backups/: a tenant's backup runs. POST starts one (202, its workflow runs it), GET
shows its progress and figures, `files` browses a volume's backup, DELETE forgets its
snapshots in the location's repository and removes the record. No answer holds a credential or
a key: the repository's id and snapshot ids only."""

from __future__ import annotations

import django_filters
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import exceptions, serializers, status
from rest_framework.decorators import action
from rest_framework.response import Response

from backups import policies, runs
from backups.api.common import VerifyRequestSerializer, VerifyStartedSerializer, read_choice, repository_answer
from backups.api.restores import BackupRestoreSerializer, RestoreSerializer, start_restore
from backups.models import Backup, BackupPolicy
from backups.repository import RepositoryError
from backups.stores import StoreError
from hivemind.core.api import TenantField, TenantOwnedSerializer, TenantScopedViewSet
from hivemind.core.filtersets import TenantOwnedFilterSet


class BackupFilterSet(TenantOwnedFilterSet):
    status = django_filters.ChoiceFilter(choices=Backup.Status.choices)
    location = django_filters.CharFilter(field_name="location__name", help_text="The location's name.")
    policy = django_filters.CharFilter(field_name="policy__name", help_text="The policy's name.")

    class Meta:
        model = Backup
        fields = ["tenant", "status", "location", "policy"]


class BackupSerializer(TenantOwnedSerializer):
    tenant = TenantField(required=False, help_text="Tenant slug (or send X-Hivemind-Tenant).")
    location = serializers.CharField(
        max_length=63, help_text="The backup location's name: the tenant's, else the platform's of that name."
    )
    policy = serializers.SlugRelatedField(slug_field="name", read_only=True, help_text="The policy that ran it.")
    scope = serializers.ChoiceField(
        choices=BackupPolicy.Scope.choices, default=BackupPolicy.Scope.TENANT,
        help_text="tenant (its configuration and every volume), apps (the named apps and the volumes they mount) "
                  "or volumes (the named volumes).",
    )  # fmt: skip
    names = serializers.ListField(
        child=serializers.CharField(max_length=63), required=False, max_length=runs.MAX_NAMES,
        help_text="The apps or volumes of the scope, by name.",
    )  # fmt: skip
    workflow = serializers.PrimaryKeyRelatedField(read_only=True, help_text="The workflow running it.")
    workflow_state = serializers.CharField(source="workflow.state", read_only=True, default=None)
    volumes = serializers.JSONField(
        read_only=True,
        help_text="Per volume: name, node, state (pending, running, done; failed or undone when the run failed), "
                  "snapshot (in the repository), files, size, bytes_read, bytes_new.",
    )  # fmt: skip
    dedup_ratio = serializers.SerializerMethodField(help_text="Bytes read per new byte stored.")
    duration_seconds = serializers.SerializerMethodField()

    class Meta:
        model = Backup
        fields = ["id", "tenant", "location", "policy", "scope", "names", "status", "workflow", "workflow_state",
                  "repository_id", "state_snapshot", "volumes", "files", "bytes_read", "bytes_new", "dedup_ratio",
                  "duration_seconds", "error", "verified", "verified_at", "started_at", "finished_at",
                  "created_at"]  # fmt: skip
        read_only_fields = ["status", "repository_id", "state_snapshot", "files", "bytes_read", "bytes_new", "error",
                            "verified", "verified_at", "started_at", "finished_at", "created_at"]  # fmt: skip

    def to_representation(self, instance):
        data = super().to_representation(instance)
        data["location"] = instance.location.name
        return data

    def get_dedup_ratio(self, backup) -> float:
        return runs.dedup_ratio(backup)

    def get_duration_seconds(self, backup) -> float | None:
        return runs.duration_seconds(backup)


class FileSerializer(serializers.Serializer):
    path = serializers.CharField()
    type = serializers.CharField(help_text="file, dir, symlink; volume in the backup's top level")
    size = serializers.IntegerField(required=False)
    mode = serializers.CharField(required=False, help_text="permission bits, octal")
    uid = serializers.IntegerField(required=False)
    gid = serializers.IntegerField(required=False)
    mtime_ns = serializers.IntegerField(required=False)
    target = serializers.CharField(required=False, help_text="a symlink's target")


class FilesSerializer(serializers.Serializer):
    volume = serializers.CharField(allow_null=True, help_text="null: the backup's top level, its volumes")
    path = serializers.CharField()
    entries = FileSerializer(many=True)


class BackupViewSet(TenantScopedViewSet):
    """A tenant's backup runs into its backup locations: the configuration document and each
    volume's data (read on the node holding it; only what the repository lacks is uploaded).
    Viewers see them and browse their files; operators and above start and remove them."""

    queryset = Backup.objects.select_related("tenant", "location", "policy", "workflow")
    serializer_class = BackupSerializer
    filterset_class = BackupFilterSet
    http_method_names = ["get", "post", "delete", "head", "options"]

    @extend_schema(responses={202: BackupSerializer})
    def create(self, request, *args, **kwargs):
        """Start a backup (202: its workflow runs it; `workflow` follows it). The location's
        last check is not required; a failed run says why in `error`."""
        serializer = self.get_serializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        tenant = data["tenant"]
        self._check_add(tenant)
        location = policies.location_named(tenant, data["location"])
        backup = runs.backup_start(tenant=tenant, location=location, scope=data.get("scope", "tenant"),
                                   names=data.get("names") or [], actor=request.user)  # fmt: skip
        self._recheck(backup)
        # By its id alone: the tenant named in the body may not be the one in the request's tenant
        # header (a CLI context on another tenant), and what was just made was checked above.
        fresh = self.queryset.get(pk=backup.pk)
        return Response(BackupSerializer(fresh, context=self.get_serializer_context()).data,
                        status=status.HTTP_202_ACCEPTED)  # fmt: skip

    def delete_object(self, instance) -> None:
        try:
            runs.backup_delete(backup=instance, actor=self.request.user)
        except (StoreError, RepositoryError) as exc:
            raise repository_answer(exc) from None

    def perform_destroy(self, instance) -> None:
        self.delete_object(instance)  # the location's calls happen outside a database transaction

    @extend_schema(
        parameters=[
            OpenApiParameter("volume", OpenApiTypes.STR, description="A volume of the backup; none: list its volumes."),
            OpenApiParameter("path", OpenApiTypes.STR, description="A directory (or file) in it; default its root."),
        ],
        responses={200: FilesSerializer},
    )
    @action(detail=True, methods=["get"], permission_action="view")
    def files(self, request, pk=None):
        """Browse a volume's backup: a directory's entries (or one file's), as backed up. Without
        `volume`: the backup's volumes."""
        backup = self.get_object()
        volume = request.query_params.get("volume")
        path = runs.check_path(request.query_params.get("path", ""))
        if not volume:
            if path.strip("/"):
                raise exceptions.ValidationError({"path": "name the volume it is in (?volume=NAME)"})
            # The backup's top level: its volumes, as directories.
            names = sorted(entry.get("name") for entry in backup.volumes or [] if entry.get("name"))
            return Response({"volume": None, "path": "/", "entries": [{"path": f"/{name}", "type": "volume"}
                                                                      for name in names]})  # fmt: skip
        try:
            entries = runs.backup_files(backup=backup, volume=volume, path=path)
        except (StoreError, RepositoryError) as exc:
            raise repository_answer(exc) from None
        except ValueError as exc:
            raise exceptions.ValidationError({"path": str(exc)}) from None
        return Response({"volume": volume, "path": path or "/", "entries": entries})

    @extend_schema(request=VerifyRequestSerializer, responses={202: VerifyStartedSerializer})
    @action(detail=True, methods=["post"], permission_action="change")
    def verify(self, request, pk=None):
        """Verify the repository this backup is in (202: the `backup.verify` workflow): its
        structure, and with read_data (or read_percent) its data. Every backup of the tenant there
        is marked ok or damaged, naming the objects and files."""
        from backups import verify

        backup = self.get_object()
        body = VerifyRequestSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        read = read_choice(body.validated_data, default=False)
        workflow = verify.verify_start(location=backup.location, read_data=read, tenant=backup.tenant,
                                       actor=request.user)  # fmt: skip
        return Response({"workflow": workflow.pk, "location": backup.location.name,
                         "read_data": workflow.params["read_data"]}, status=status.HTTP_202_ACCEPTED)  # fmt: skip

    @extend_schema(request=BackupRestoreSerializer, responses={201: RestoreSerializer, 202: RestoreSerializer})
    @action(detail=True, methods=["post"], permission_action="view")
    def restore(self, request, pk=None):
        """Restore this backup (or part of it) as POST /api/v1/restores/ does with its id: a dry
        run answers 201 with the plan, a restore 202 with its workflow. Into the tenant named (or
        the backup's own), where the caller must operate."""
        backup = self.get_object()
        context = {**self.get_serializer_context(), "backup": backup}
        serializer = BackupRestoreSerializer(data=request.data, context=context)
        serializer.is_valid(raise_exception=True)
        return start_restore(request, backup=backup, data=serializer.validated_data,
                             context=self.get_serializer_context())  # fmt: skip
