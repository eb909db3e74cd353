"""/api/v1/backup-policies/: what a tenant backs up, where, when (cron, UTC) and how many backups
it keeps. Every value is checked by backups/policies.py (the admin's form too); a policy's
schedules are beat's periodic tasks, kept in step on every change. `run` starts a backup of the
policy now, `verify` verifies its location's repository (both 202 with their workflow), `prune`
applies its retention now."""

from __future__ import annotations

import django_filters
from drf_spectacular.utils import extend_schema
from rest_framework import serializers, status
from rest_framework.decorators import action
from rest_framework.response import Response

from backups import policies, verify
from backups.api.common import VerifyRequestSerializer, VerifyStartedSerializer, read_choice, repository_answer
from backups.api.runs import BackupSerializer
from backups.models import BackupPolicy
from backups.repository import RepositoryError
from backups.stores import StoreError
from hivemind.core.api import TenantField, TenantOwnedSerializer, TenantScopedViewSet
from hivemind.core.filtersets import TenantOwnedFilterSet

CRON_HELP = "Cron, 5 fields, UTC: minute hour day-of-month month day-of-week, e.g. '0 3 * * *'. Blank: none."


class BackupPolicyFilterSet(TenantOwnedFilterSet):
    name = django_filters.CharFilter()
    location = django_filters.CharFilter(field_name="location__name", help_text="The location's name.")

    class Meta:
        model = BackupPolicy
        fields = ["tenant", "name", "location", "enabled"]


class BackupPolicySerializer(TenantOwnedSerializer):
    tenant = TenantField(required=False, help_text="Tenant slug (or send X-Hivemind-Tenant).")
    location = serializers.CharField(
        max_length=63, help_text="The backup location's name: the tenant's, else the platform's of that name."
    )
    scope = serializers.ChoiceField(
        choices=BackupPolicy.Scope.choices, required=False,
        help_text="tenant, apps (the named apps) or volumes (the named volumes).",
    )  # fmt: skip
    names = serializers.ListField(child=serializers.CharField(max_length=63), required=False, max_length=100,
                                  help_text="The apps or volumes of the scope, by name (they must exist).")  # fmt: skip
    schedule = serializers.CharField(max_length=100, required=False, allow_blank=True, help_text=CRON_HELP)
    verify_schedule = serializers.CharField(max_length=100, required=False, allow_blank=True, help_text=CRON_HELP)
    run_task = serializers.SerializerMethodField(help_text="Its periodic task's name, when scheduled.")

    class Meta:
        model = BackupPolicy
        fields = ["id", "tenant", "name", "location", "scope", "names", "schedule", *policies.KEEP_FIELDS,
                  "verify_schedule", "verify_read_percent", "enabled", "run_task", "last_success_at",
                  "last_failure_at", "created_at", "updated_at"]  # fmt: skip
        read_only_fields = ["last_success_at", "last_failure_at", "created_at", "updated_at"]
        validators = []  # a taken name is a 409 from the service

    def to_representation(self, instance):
        data = super().to_representation(instance)
        data["location"] = instance.location.name
        return data

    def get_run_task(self, policy) -> str | None:
        return policies.run_task_name(policy) if policy.schedule else None


class RetentionResultSerializer(serializers.Serializer):
    kept = serializers.ListField(child=serializers.IntegerField(), help_text="The backups kept.")
    removed = serializers.ListField(child=serializers.IntegerField(), help_text="The backups forgotten and removed.")
    snapshots_forgotten = serializers.IntegerField(required=False)
    prune = serializers.JSONField(required=False, help_text="What the prune deleted (or why it was deferred).")
    why = serializers.CharField(required=False, help_text="Why nothing was removed, when the policy keeps all.")


class BackupPolicyViewSet(TenantScopedViewSet):
    """A tenant's backup policies. Viewers see them; operators and above change, run, verify
    and prune them."""

    queryset = BackupPolicy.objects.select_related("tenant", "location")
    serializer_class = BackupPolicySerializer
    filterset_class = BackupPolicyFilterSet
    http_method_names = ["get", "post", "patch", "delete", "head", "options"]

    def _values(self, serializer) -> dict:
        return {k: v for k, v in serializer.validated_data.items() if k in policies.EDITABLE and k != "name"}

    def create_object(self, serializer):
        data = serializer.validated_data
        values = self._values(serializer)
        return policies.policy_create(tenant=data["tenant"], name=data["name"], actor=self.request.user, **values)

    def update_object(self, serializer):
        values = self._values(serializer)
        if "name" in serializer.validated_data:
            values["name"] = serializer.validated_data["name"]
        return policies.policy_update(policy=serializer.instance, actor=self.request.user, **values)

    def delete_object(self, instance) -> None:
        policies.policy_delete(policy=instance, actor=self.request.user)

    @extend_schema(request=None, responses={202: BackupSerializer})
    @action(detail=True, methods=["post"], permission_action="change")
    def run(self, request, pk=None):
        """Back up now as the policy says (202: its workflow runs it, retention last)."""
        policy = self.get_object()
        backup = policies.run_now(policy=policy, actor=request.user)
        fresh = BackupSerializer.Meta.model.objects.select_related("tenant", "location", "policy", "workflow")
        return Response(BackupSerializer(fresh.get(pk=backup.pk), context=self.get_serializer_context()).data,
                        status=status.HTTP_202_ACCEPTED)  # fmt: skip

    @extend_schema(request=VerifyRequestSerializer, responses={202: VerifyStartedSerializer})
    @action(detail=True, methods=["post"], permission_action="change")
    def verify(self, request, pk=None):
        """Verify the policy's location's repository (202: the `backup.verify` workflow). Without
        read_data or read_percent, the policy's verify_read_percent is read. Backups there are
        marked ok or damaged (naming the objects and files)."""
        policy = self.get_object()
        body = VerifyRequestSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        read = read_choice(body.validated_data, default=policy.verify_read_percent or False)
        workflow = verify.verify_start(location=policy.location, read_data=read, policy=policy, actor=request.user)
        return Response({"workflow": workflow.pk, "location": policy.location.name,
                         "read_data": workflow.params["read_data"]}, status=status.HTTP_202_ACCEPTED)  # fmt: skip

    @extend_schema(request=None, responses={200: RetentionResultSerializer})
    @action(detail=True, methods=["post"], permission_action="change")
    def prune(self, request, pk=None):
        """Apply the policy's retention now: the backups it does not keep are forgotten in the
        repository and removed, then the repository is pruned. Answers what was kept and removed."""
        policy = self.get_object()
        try:
            return Response(policies.apply_retention(policy))
        except (StoreError, RepositoryError) as exc:
            raise repository_answer(exc) from None
