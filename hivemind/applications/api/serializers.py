from __future__ import annotations

from rest_framework import serializers

from hivemind.applications.models import App, AppRevision, Container
from hivemind.core.api import TenantField, TenantOwnedSerializer


class AppRevisionSerializer(serializers.ModelSerializer):
    created_by = serializers.CharField(source="created_by.username", read_only=True, allow_null=True)

    class Meta:
        model = AppRevision
        fields = ["number", "spec", "change", "created_by", "created_at"]
        read_only_fields = fields


class AppSerializer(TenantOwnedSerializer):
    tenant = TenantField(required=False, help_text="Tenant slug (or send X-Hivemind-Tenant).")
    revision = serializers.IntegerField(source="revision.number", read_only=True, allow_null=True)
    image = serializers.CharField(source="revision.spec.image", read_only=True, allow_null=True)
    running = serializers.IntegerField(read_only=True, help_text="Replicas running now.")
    spec = serializers.JSONField(write_only=True, help_text="image, command, args, env, ports, resources, health…")
    workflow = serializers.SerializerMethodField(help_text="The workflow this request started, if any.")

    class Meta:
        model = App
        fields = ["id", "tenant", "name", "service_name", "replicas", "running", "revision", "image", "status",
                  "message", "spec", "workflow", "created_at", "updated_at"]  # fmt: skip
        read_only_fields = ["status", "message", "created_at", "updated_at"]
        validators = []  # a taken name is a 409 from the service, not a 400

    def get_workflow(self, app) -> int | None:
        workflow = getattr(app, "workflow", None)
        return workflow.pk if workflow is not None else None


class AppDetailSerializer(AppSerializer):
    current_spec = serializers.JSONField(source="revision.spec", read_only=True, allow_null=True)

    class Meta(AppSerializer.Meta):
        fields = [*AppSerializer.Meta.fields, "current_spec"]


class ScaleSerializer(serializers.Serializer):
    replicas = serializers.IntegerField(min_value=0, max_value=1000)


class RollbackSerializer(serializers.Serializer):
    revision = serializers.IntegerField(min_value=1, required=False, help_text="Default: the one before the current.")


class UpdateSerializer(serializers.Serializer):
    spec = serializers.JSONField()
    change = serializers.CharField(max_length=200, required=False, allow_blank=True)


class WorkflowStartedSerializer(serializers.Serializer):
    workflow = serializers.IntegerField()
    url = serializers.CharField()


class ContainerSerializer(serializers.ModelSerializer):
    tenant = serializers.CharField(source="tenant.slug", read_only=True)
    app = serializers.CharField(source="app.name", read_only=True)
    revision = serializers.IntegerField(source="revision.number", read_only=True)
    node = serializers.CharField(source="node.name", read_only=True, allow_null=True)

    class Meta:
        model = Container
        fields = ["id", "tenant", "app", "revision", "replica", "node", "name", "docker_id", "state", "health",
                  "exit_code", "restarts", "cpu_millis", "memory_bytes", "message", "created_at", "started_at",
                  "last_seen_at"]  # fmt: skip
        read_only_fields = fields
