from __future__ import annotations

from rest_framework import serializers

from hivemind.core.api import StrictFieldsMixin, TenantField, TenantOwnedSerializer
from networking.models import IPPool, Network, NetworkPolicy, NodeRange


class NodeRangeSerializer(serializers.ModelSerializer):
    node = serializers.CharField(source="node.name", read_only=True)

    class Meta:
        model = NodeRange
        fields = ["node", "range4", "range6", "gateway4", "gateway6"]
        read_only_fields = fields


class NetworkSerializer(TenantOwnedSerializer):
    tenant = TenantField(required=False, help_text="Tenant slug (or send X-Hivemind-Tenant).")
    ipv4 = serializers.BooleanField(default=True, help_text="An IPv4 prefix (default yes).")
    ipv6 = serializers.BooleanField(default=True, help_text="An IPv6 prefix (default yes).")
    prefix4 = serializers.IntegerField(
        required=False, write_only=True, help_text="IPv4 prefix length (default the pool's, /24)."
    )
    prefix6 = serializers.IntegerField(
        required=False, write_only=True, help_text="IPv6 prefix length (default the pool's, /64)."
    )
    labels = serializers.JSONField(required=False, help_text='e.g. {"tier": "backend"}')

    class Meta:
        model = Network
        fields = ["id", "tenant", "name", "is_default", "ipv4", "ipv6", "prefix4", "prefix6", "subnet4", "subnet6",
                  "vni", "default_deny", "labels", "status", "created_at", "updated_at"]  # fmt: skip
        read_only_fields = ["is_default", "subnet4", "subnet6", "vni", "status", "created_at", "updated_at"]
        validators = []  # a taken name is a 409 from the service, not a 400


class NetworkDetailSerializer(NetworkSerializer):
    node_ranges = NodeRangeSerializer(many=True, read_only=True, help_text="Each node's slice and gateway.")
    members = serializers.SerializerMethodField(help_text="Containers on the network and their addresses.")
    apps = serializers.SerializerMethodField(help_text="Apps that join the network.")

    class Meta(NetworkSerializer.Meta):
        fields = [*NetworkSerializer.Meta.fields, "node_ranges", "members", "apps"]

    def get_members(self, network) -> list[dict]:
        rows = network.addresses.select_related("container__app", "node").order_by("container__name")
        return [
            {
                "container": row.container.name,
                "app": row.container.app.name,
                "node": row.node.name if row.node else None,
                "ipv4": row.ipv4,
                "ipv6": row.ipv6,
            }
            for row in rows
        ]

    def get_apps(self, network) -> list[str]:
        from networking.services import apps_using

        return apps_using(network)


class NetworkUpdateSerializer(StrictFieldsMixin, serializers.Serializer):
    labels = serializers.JSONField(required=False)
    default_deny = serializers.BooleanField(required=False)


class IPPoolSerializer(StrictFieldsMixin, serializers.ModelSerializer):
    networks = serializers.SerializerMethodField(help_text="Networks holding a prefix of the pool.")

    class Meta:
        model = IPPool
        fields = ["id", "name", "family", "purpose", "cidr", "default_prefix", "is_default", "networks", "created_at"]
        read_only_fields = ["family", "purpose", "created_at"]
        validators = []
        extra_kwargs = {"default_prefix": {"required": False}}

    def get_networks(self, pool) -> int:
        return Network.objects.filter(**{f"pool{pool.family}": pool}).count()


class IPPoolUpdateSerializer(StrictFieldsMixin, serializers.Serializer):
    default_prefix = serializers.IntegerField(required=False)
    is_default = serializers.BooleanField(required=False)


class NetworkPolicySerializer(TenantOwnedSerializer):
    tenant = TenantField(required=False, help_text="Tenant slug (or send X-Hivemind-Tenant).")
    spec = serializers.JSONField(
        help_text='{"apps": [...], "ingress": [{"from": [{"app": ..}|{"network": ..}|{"cidr": ..}], '
        '"ports": [{"protocol": "tcp", "port": 80}]}], "egress": [{"to": [...], "ports": [...]}]}'
    )
    warnings = serializers.SerializerMethodField(help_text="What the policy names that does not exist.")

    class Meta:
        model = NetworkPolicy
        fields = ["id", "tenant", "name", "spec", "warnings", "created_at", "updated_at"]
        read_only_fields = ["created_at", "updated_at"]
        validators = []

    def get_warnings(self, policy) -> list[str]:
        from networking.policies import warnings_for

        return warnings_for(policy)


class NetworkPolicyUpdateSerializer(StrictFieldsMixin, serializers.Serializer):
    spec = serializers.JSONField()
