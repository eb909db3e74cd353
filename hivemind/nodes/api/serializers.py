from __future__ import annotations

from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from hivemind.core.api import StrictFieldsMixin
from hivemind.core.scoping import is_platform_staff
from hivemind.nodes.models import Node, TaintEffect
from hivemind.nodes.selectors import NODE_STATES

EFFECT_ERRORS = {"invalid_choice": f"expected one of {', '.join(TaintEffect.values)}, got {{input!r}}"}


class TaintSerializer(StrictFieldsMixin, serializers.Serializer):
    key = serializers.CharField(trim_whitespace=False)
    value = serializers.CharField(trim_whitespace=False, allow_blank=True, required=False, default="")
    effect = serializers.ChoiceField(
        choices=TaintEffect.choices,
        error_messages=EFFECT_ERRORS,
        help_text="NoSchedule: only replicas that tolerate it are placed here; PreferNoSchedule: avoided "
        "when possible; NoExecute: replicas that do not tolerate it are moved away too.",
    )


class TaintRemoveSerializer(StrictFieldsMixin, serializers.Serializer):
    key = serializers.CharField(trim_whitespace=False)
    effect = serializers.ChoiceField(
        choices=TaintEffect.choices,
        required=False,
        error_messages=EFFECT_ERRORS,
        help_text="Remove only the taint of this effect; left out, every taint of the key.",
    )


class CapacitySerializer(serializers.Serializer):
    cpu_millis = serializers.IntegerField(help_text="Millicores.")
    memory_bytes = serializers.IntegerField()
    disk_bytes = serializers.IntegerField(help_text="Free space of Docker's root directory.")


class AllocatedSerializer(serializers.Serializer):
    cpu_millis = serializers.IntegerField(help_text="Requested by its containers that are not removed.")
    memory_bytes = serializers.IntegerField(help_text="Requested by its containers that are not removed.")


class FreeSerializer(CapacitySerializer):
    """Capacity less allocation; negative when the node is overcommitted."""


class NodeSerializer(serializers.ModelSerializer):
    state = serializers.ChoiceField(
        choices=[(name, name) for name in NODE_STATES],
        read_only=True,
        help_text="ready; not-ready (its agent missed three heartbeats, or its Docker does not answer); "
        "cordoned (takes no new replicas); draining (its replicas are being moved away).",
    )
    schedulable = serializers.BooleanField(read_only=True, help_text="Ready, not cordoned and not draining.")
    labels = serializers.DictField(child=serializers.CharField(), read_only=True)
    taints = TaintSerializer(many=True, read_only=True)
    capacity = serializers.SerializerMethodField()
    allocated = serializers.SerializerMethodField()
    free = serializers.SerializerMethodField()
    containers = serializers.IntegerField(
        source="container_count", read_only=True, help_text="Its containers that are not removed."
    )
    docker_host = serializers.SerializerMethodField(help_text="The agent's Docker endpoint (platform staff only).")

    class Meta:
        model = Node
        fields = [
            "name",
            "state",
            "schedulable",
            "cordoned",
            "draining",
            "address",
            "labels",
            "taints",
            "capacity",
            "allocated",
            "free",
            "containers",
            "docker_version",
            "docker_host",
            "os",
            "arch",
            "last_heartbeat",
            "registered_at",
            "updated_at",
        ]
        read_only_fields = fields

    @extend_schema_field(CapacitySerializer)
    def get_capacity(self, node: Node) -> dict:
        return {"cpu_millis": node.cpu_millis, "memory_bytes": node.memory_bytes, "disk_bytes": node.disk_bytes}

    @extend_schema_field(AllocatedSerializer)
    def get_allocated(self, node: Node) -> dict:
        return {"cpu_millis": node.allocated_cpu_millis, "memory_bytes": node.allocated_memory_bytes}

    @extend_schema_field(FreeSerializer)
    def get_free(self, node: Node) -> dict:
        return {
            "cpu_millis": node.cpu_millis - node.allocated_cpu_millis,
            "memory_bytes": node.memory_bytes - node.allocated_memory_bytes,
            "disk_bytes": node.disk_bytes,
        }

    @extend_schema_field(serializers.CharField(allow_null=True))
    def get_docker_host(self, node: Node) -> str | None:
        # An unauthenticated tcp:// Docker endpoint is root on the node: tenants' members do not see it.
        request = self.context.get("request")
        return node.docker_host if request is not None and is_platform_staff(request.user) else None


class NodeLabelSerializer(StrictFieldsMixin, serializers.Serializer):
    set = serializers.DictField(
        child=serializers.CharField(allow_blank=True, trim_whitespace=False),
        required=False,
        default=dict,
        help_text='Labels to add or change, e.g. {"zone": "eu-1"}.',
    )
    remove = serializers.ListField(
        child=serializers.CharField(trim_whitespace=False),
        required=False,
        default=list,
        help_text="Keys of labels to remove (a missing one is no error).",
    )


class NodeTaintSerializer(StrictFieldsMixin, serializers.Serializer):
    add = TaintSerializer(many=True, required=False, default=list, help_text="Taints to add (or change the value of).")
    remove = TaintRemoveSerializer(many=True, required=False, default=list, help_text="Taints to remove.")
