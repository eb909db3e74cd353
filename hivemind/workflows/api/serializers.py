from __future__ import annotations

from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from hivemind.core.api import StrictFieldsMixin, TenantField
from hivemind.workflows import selectors
from hivemind.workflows.models import Step, Workflow


class StepSerializer(serializers.ModelSerializer):
    duration = serializers.FloatField(read_only=True, allow_null=True, help_text="Seconds of the last attempt.")
    compensates = serializers.IntegerField(source="compensates.index", read_only=True, allow_null=True)

    class Meta:
        model = Step
        fields = [
            "id",
            "phase",
            "index",
            "name",
            "queue",
            "state",
            "attempts",
            "max_attempts",
            "timeout",
            "compensates",
            "worker",
            "started_at",
            "finished_at",
            "heartbeat_at",
            "retry_at",
            "duration",
            "error",
            "output",
            "history",
            "trace_id",
            "span_id",
        ]
        read_only_fields = fields


class FailedStepSerializer(serializers.Serializer):
    index = serializers.IntegerField()
    name = serializers.CharField()
    attempts = serializers.IntegerField()
    error = serializers.CharField()


class WorkflowSerializer(serializers.ModelSerializer):
    tenant = TenantField(required=False, help_text="Tenant slug (or send X-Hivemind-Tenant).")
    created_by = serializers.CharField(source="created_by.username", read_only=True, allow_null=True)
    steps_done = serializers.IntegerField(read_only=True, help_text="Forward steps that succeeded.")
    current_step = serializers.CharField(read_only=True, allow_null=True)
    duration = serializers.FloatField(read_only=True, allow_null=True, help_text="Seconds since it started.")
    cancel_requested = serializers.SerializerMethodField()

    class Meta:
        model = Workflow
        fields = [
            "id",
            "kind",
            "tenant",
            "subject",
            "state",
            "step_count",
            "steps_done",
            "current_step",
            "waiting_on",
            "error",
            "cancel_requested",
            "runs",
            "created_by",
            "created_at",
            "started_at",
            "finished_at",
            "duration",
            "trace_id",
        ]
        read_only_fields = [f for f in fields if f not in ("kind", "tenant")]

    def get_cancel_requested(self, workflow: Workflow) -> bool:
        return workflow.cancel_requested_at is not None


class WorkflowDetailSerializer(WorkflowSerializer):
    params = serializers.JSONField(required=False, help_text="Parameters of the workflow kind.")
    steps = serializers.SerializerMethodField()
    failed_step = serializers.SerializerMethodField()

    class Meta(WorkflowSerializer.Meta):
        fields = [
            *WorkflowSerializer.Meta.fields,
            "params",
            "result",
            "locks",
            "traceparent",
            "compensation_count",
            "failed_step",
            "steps",
        ]
        read_only_fields = [f for f in fields if f not in ("kind", "tenant", "params")]

    @extend_schema_field(StepSerializer(many=True))
    def get_steps(self, workflow: Workflow):
        return StepSerializer(selectors.workflow_steps(workflow), many=True).data

    @extend_schema_field(FailedStepSerializer(allow_null=True))
    def get_failed_step(self, workflow: Workflow):
        step = selectors.failed_step(workflow)
        if step is None:
            return None
        return {"index": step.index, "name": step.name, "attempts": step.attempts, "error": step.error}


class WorkflowCreateSerializer(StrictFieldsMixin, serializers.Serializer):
    kind = serializers.CharField(max_length=64)
    tenant = TenantField(required=False, help_text="Tenant slug (or send X-Hivemind-Tenant).")
    params = serializers.JSONField(required=False, default=dict)

    def validate_params(self, value):
        if not isinstance(value, dict):
            raise serializers.ValidationError("expected an object")
        return value
