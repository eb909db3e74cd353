"""/api/v1/restores/: putting a backup (or part of one) back, into its own tenant or another.

POST plans a restore: a dry run answers 201 with the plan and writes nothing else; a real one
answers 202 with the workflow that carries it out (backups/restore_steps.py). The caller needs
to see the backup (another tenant's backup they cannot see is a 404) and to operate in the
tenant restored into. `export-keys` and `import-keys` move a tenant's backup repository keys
under a passphrase (disaster recovery, backups/export.py): tenant admins and owners only.
No answer holds a key in the clear or a passphrase."""

from __future__ import annotations

from contextlib import contextmanager

import django_filters
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema
from rest_framework import exceptions, serializers, status
from rest_framework.decorators import action
from rest_framework.response import Response

from backups import export, restores
from backups.api.common import repository_answer
from backups.models import Restore
from backups.repository import RepositoryError
from backups.stores import StoreError
from hivemind.core.api import StrictFieldsMixin, TenantField, TenantOwnedSerializer, TenantScopedViewSet
from hivemind.core.filtersets import TenantOwnedFilterSet
from hivemind.core.scoping import tenants_for
from tenants.keys import KeyUnavailable
from tenants.models import Tenant
from tenants.services import audit_record


@contextmanager
def key_errors():
    """A keys document or passphrase refused: a 400 naming which; a key that does not open here
    (the master key changed): a 500 saying so."""
    try:
        yield
    except export.KeyExportError as exc:
        field = "passphrase" if str(exc).startswith("passphrase") else "document"
        raise exceptions.ValidationError({field: str(exc)}) from None
    except KeyUnavailable as exc:
        raise exceptions.APIException(str(exc)) from None


class RestoreFilterSet(TenantOwnedFilterSet):
    status = django_filters.ChoiceFilter(choices=Restore.Status.choices)

    class Meta:
        model = Restore
        fields = ["tenant", "status", "backup", "dry_run"]


class RestoreSerializer(TenantOwnedSerializer):
    tenant = TenantField(required=False, help_text="The tenant restored into (or send X-Hivemind-Tenant).")
    backup = serializers.IntegerField(
        source="backup_id", min_value=1, help_text="The backup's id (one the caller may see, of any tenant)."
    )
    selection = serializers.JSONField(
        required=False, default=dict,
        help_text='What to restore: {} or {"state": true} (everything), {"apps": [...], "volumes": [...]}, or '
                  '{"files": {"volume", "paths": ["/a/b"], "into_volume", "into_path": "/restored"}}.',
    )  # fmt: skip
    rename = serializers.JSONField(
        required=False, default=dict, help_text='New names by kind, e.g. {"apps": {"web": "web2"}}.'
    )
    conflicts = serializers.ChoiceField(choices=Restore.Conflicts.choices, default=Restore.Conflicts.SKIP)
    dry_run = serializers.BooleanField(default=False, help_text="Plan only: nothing is written.")
    at = serializers.DateTimeField(
        required=False, allow_null=True,
        help_text="Point in time: the newest backup of the backup's tenant taken before it, apps as the journal "
                  "has them then.",
    )  # fmt: skip
    workflow = serializers.PrimaryKeyRelatedField(read_only=True)
    workflow_state = serializers.CharField(source="workflow.state", read_only=True, default=None)
    plan = serializers.JSONField(
        read_only=True,
        help_text="One action per object: action (create, replace, skip, restore), kind, name (in the target), "
                  "source (in the backup), reason, warnings, object.",
    )  # fmt: skip
    result = serializers.JSONField(read_only=True)

    class Meta:
        model = Restore
        fields = ["id", "tenant", "backup", "selection", "rename", "conflicts", "dry_run", "at", "status", "workflow",
                  "workflow_state", "plan", "result", "error", "created_at", "finished_at"]  # fmt: skip
        read_only_fields = ["status", "error", "created_at", "finished_at"]


class KeysSerializer(StrictFieldsMixin, serializers.Serializer):
    tenant = serializers.SlugField(max_length=50, help_text="The tenant whose backup repository keys move.")
    passphrase = serializers.CharField(
        write_only=True, trim_whitespace=False, max_length=1024, style={"input_type": "password"}
    )
    document = serializers.JSONField(required=False, help_text="import: the document the export wrote.")


class ImportedKeysSerializer(serializers.Serializer):
    tenant = serializers.CharField()
    repositories = serializers.ListField(child=serializers.CharField(), help_text="The repositories' ids.")


class BackupRestoreSerializer(RestoreSerializer):
    """A restore of the backup the URL names (POST /api/v1/backups/{id}/restore/): into the
    tenant named, else the backup's own."""

    tenant = TenantField(required=False, help_text="The tenant restored into (default: the backup's).")
    backup = None

    class Meta(RestoreSerializer.Meta):
        fields = [f for f in RestoreSerializer.Meta.fields if f != "backup"]

    def validate(self, attrs):
        attrs.setdefault("tenant", self.context["backup"].tenant)
        return super().validate(attrs)


def start_restore(request, *, backup, data: dict, context: dict) -> Response:
    """Plan (201, dry run) or start (202) a restore of `backup` (one the caller sees) into the
    tenant `data` names, where the caller must operate."""
    from hivemind.core.scoping import may_in_tenant, tenant_permission_for

    tenant = data["tenant"]
    if not may_in_tenant(request.user, tenant_permission_for(Restore, "add"), tenant):
        raise exceptions.PermissionDenied(f"you may not add a restore in tenant {tenant.slug}")
    try:
        restore = restores.restore_start(
            backup=backup, into_tenant=tenant, selection=data.get("selection"), rename=data.get("rename"),
            conflicts=data["conflicts"], dry_run=data["dry_run"], at=data.get("at"), actor=request.user,
        )  # fmt: skip
    except (StoreError, RepositoryError) as exc:
        raise repository_answer(exc) from None
    if not Restore.objects.restrict(request.user, "view").filter(pk=restore.pk).exists():
        raise exceptions.PermissionDenied("the result would be outside what you may see")
    # By its id alone: the tenant named in the body may not be the one in the request's tenant
    # header (a CLI context on another tenant), and what was just made was checked above.
    fresh = Restore.objects.select_related("tenant", "workflow").get(pk=restore.pk)
    answer = status.HTTP_201_CREATED if restore.dry_run else status.HTTP_202_ACCEPTED
    return Response(RestoreSerializer(fresh, context=context).data, status=answer)


class RestoreViewSet(TenantScopedViewSet):
    """Restores into a tenant: viewers see them and their plans, operators and above start them."""

    queryset = Restore.objects.select_related("tenant", "workflow")
    serializer_class = RestoreSerializer
    filterset_class = RestoreFilterSet
    http_method_names = ["get", "post", "head", "options"]

    @extend_schema(responses={201: RestoreSerializer, 202: RestoreSerializer})
    def create(self, request, *args, **kwargs):
        """Plan a restore (201, dry_run) or start one (202: `workflow` follows it)."""
        serializer = self.get_serializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        backup = restores.visible_backup(request.user, data["backup_id"])
        return start_restore(request, backup=backup, data=data, context=self.get_serializer_context())

    def _keys_tenant(self, slug: str) -> Tenant:
        """The tenant if the caller administers it (403 for a member below admin, 404 otherwise)."""
        user = self.request.user
        tenant = tenants_for(user, "tenants.change_tenant").filter(slug=slug).first()
        if tenant is not None:
            return tenant
        if tenants_for(user, "tenants.view_tenant").filter(slug=slug).exists():
            raise exceptions.PermissionDenied(f"only tenant admins and owners move the backup keys of {slug}")
        raise exceptions.NotFound(f"no tenant {slug}")

    @extend_schema(request=KeysSerializer, responses={200: OpenApiTypes.OBJECT})
    @action(detail=False, methods=["post"], url_path="export-keys", permission_action="view")
    def export_keys(self, request):
        """A tenant's backup repository keys, encrypted under a passphrase (scrypt, AES-256-GCM):
        keep the document apart from the backups; with it and the passphrase, a new install
        reads them (`import-keys`)."""
        serializer = KeysSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        tenant = self._keys_tenant(serializer.validated_data["tenant"])
        with key_errors():
            document = export.export_keys(tenant, serializer.validated_data["passphrase"])
        audit_record(actor=request.user, tenant=tenant, action="backup.keys_export",
                     changes={"repositories": [entry["repository"] for entry in document["repositories"]]})  # fmt: skip
        return Response(document)

    @extend_schema(request=KeysSerializer, responses={200: ImportedKeysSerializer})
    @action(detail=False, methods=["post"], url_path="import-keys", permission_action="view")
    def import_keys(self, request):
        """Store the repository keys of an exported document for a tenant; a wrong passphrase
        or an edited document stores nothing (400 naming which)."""
        serializer = KeysSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        tenant = self._keys_tenant(serializer.validated_data["tenant"])
        document = serializer.validated_data.get("document")
        if document is None:
            raise exceptions.ValidationError({"document": "required: the document `export-keys` wrote"})
        with key_errors():
            imported = export.import_keys(tenant, document, serializer.validated_data["passphrase"])
        audit_record(actor=request.user, tenant=tenant, action="backup.keys_import", changes={"repositories": imported})
        return Response({"tenant": tenant.slug, "repositories": imported})
