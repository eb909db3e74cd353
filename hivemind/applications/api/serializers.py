from __future__ import annotations

from django.db.models import F, Manager, Prefetch, prefetch_related_objects
from django.db.models.fields.json import KeyTextTransform
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from hivemind.applications.logs import DEFAULT_TAIL, GREP_SCAN, MAX_GREP, MAX_TAIL, SINCE_HELP, parse_grep, parse_since
from hivemind.applications.models import App, AppRevision, Container
from hivemind.core.api import StrictFieldsMixin, TenantField, TenantOwnedSerializer
from networking.models import Address


class AppRevisionSerializer(serializers.ModelSerializer):
    created_by = serializers.CharField(source="created_by.username", read_only=True, allow_null=True)

    class Meta:
        model = AppRevision
        fields = ["number", "spec", "change", "created_by", "created_at"]
        read_only_fields = fields


class AppSerializer(TenantOwnedSerializer):
    tenant = TenantField(required=False, help_text="Tenant slug (or send X-Hivemind-Tenant).")
    revision = serializers.IntegerField(source="revision_number", read_only=True, allow_null=True)
    image = serializers.CharField(read_only=True, allow_null=True)
    running = serializers.IntegerField(read_only=True, help_text="Replicas running now.")
    spec = serializers.JSONField(write_only=True, help_text="image, command, args, env, ports, resources, health…")
    workflow = serializers.SerializerMethodField(help_text="The workflow this request started, if any.")

    class Meta:
        model = App
        fields = ["id", "tenant", "name", "service_name", "replicas", "running", "revision", "image", "status",
                  "message", "spec", "workflow", "created_at", "updated_at"]  # fmt: skip
        read_only_fields = ["status", "message", "created_at", "updated_at"]
        validators = []  # a taken name is a 409 from the service, not a 400

    @staticmethod
    def annotations() -> dict:
        """What the app's queryset adds for the fields read from other rows (see `annotate`)."""
        return {
            "tenant_slug": F("tenant__slug"),
            "revision_number": F("revision__number"),
            "image": KeyTextTransform("image", "revision__spec"),
        }

    @staticmethod
    def annotate(app: App) -> App:
        """The same values on an app read without `annotations()` (one just deployed)."""
        app.tenant_slug = app.tenant.slug
        app.revision_number = app.revision.number if app.revision else None
        app.image = app.revision.spec.get("image") if app.revision else None
        return app

    def get_workflow(self, app) -> int | None:
        workflow = getattr(app, "workflow", None)
        return workflow.pk if workflow is not None else None


class ServiceSerializer(serializers.Serializer):
    vip4 = serializers.IPAddressField(allow_null=True, help_text="The app's virtual IPv4 address (apps with ports).")
    vip6 = serializers.IPAddressField(allow_null=True, help_text="The app's virtual IPv6 address (apps with ports).")
    names = serializers.ListField(child=serializers.CharField(), help_text="DNS names its replicas resolve.")
    networks = serializers.ListField(child=serializers.CharField(), help_text="The networks its replicas join.")


class AppDetailSerializer(AppSerializer):
    current_spec = serializers.SerializerMethodField(
        help_text="The current revision's spec, in a form that can be sent back as it is (cpu as '250m')."
    )
    service = serializers.SerializerMethodField(help_text="How other replicas reach the app: addresses and names.")

    class Meta(AppSerializer.Meta):
        fields = [*AppSerializer.Meta.fields, "current_spec", "service"]

    @extend_schema_field(ServiceSerializer)
    def get_service(self, app) -> dict:
        from networking.discovery import DOMAIN
        from networking.models import ServiceAddress

        vip = ServiceAddress.objects.filter(app=app).first()
        spec = app.revision.spec if app.revision else {}
        name = app.service_name or app.name
        base = f"{name}.{app.tenant.slug}.{DOMAIN}"
        names = [base, name] + [
            f"_{p['name']}._{p['protocol']}.{base}" for p in spec.get("ports") or [] if p.get("name")
        ]
        return {
            "vip4": vip.ipv4 if vip else None,
            "vip6": vip.ipv6 if vip else None,
            "names": names,
            "networks": spec.get("networks") or ["default"],
        }

    @extend_schema_field(serializers.JSONField(allow_null=True))
    def get_current_spec(self, app) -> dict | None:
        return editable_spec(app.revision.spec) if app.revision else None


def editable_spec(spec: dict) -> dict:
    """The stored spec keeps cpu as whole millicores; a bare number is read as cores on the way
    in, so send cpu back with its unit."""
    resources = {
        key: (f"{value}m" if key in ("cpu", "cpu_limit") and value is not None else value)
        for key, value in spec["resources"].items()
    }
    return {**spec, "resources": resources}


class ScaleSerializer(StrictFieldsMixin, serializers.Serializer):
    replicas = serializers.IntegerField(min_value=0, max_value=1000)


class RollbackSerializer(StrictFieldsMixin, serializers.Serializer):
    revision = serializers.IntegerField(min_value=1, required=False, help_text="Default: the one before the current.")


class UpdateSerializer(StrictFieldsMixin, serializers.Serializer):
    spec = serializers.JSONField()
    change = serializers.CharField(max_length=200, required=False, allow_blank=True)


class WorkflowStartedSerializer(serializers.Serializer):
    workflow = serializers.IntegerField()
    url = serializers.CharField()


class ContainerAddressSerializer(serializers.ModelSerializer):
    network = serializers.CharField(source="network.name", read_only=True)

    class Meta:
        model = Address
        fields = ["network", "ipv4", "ipv6"]
        read_only_fields = fields


class ContainerListSerializer(serializers.ListSerializer):
    """Every container's addresses (and their networks) in one query, whatever the page's length."""

    def to_representation(self, data):
        containers = list(data.all() if isinstance(data, Manager) else data)
        addresses = Address.objects.select_related("network").order_by("network__name")
        prefetch_related_objects(containers, Prefetch("addresses", queryset=addresses))
        return super().to_representation(containers)


class ContainerSerializer(serializers.ModelSerializer):
    tenant = serializers.CharField(source="tenant.slug", read_only=True)
    app = serializers.CharField(source="app.name", read_only=True)
    revision = serializers.IntegerField(source="revision.number", read_only=True)
    node = serializers.CharField(source="node.name", read_only=True, allow_null=True)
    addresses = ContainerAddressSerializer(
        many=True, read_only=True, help_text="The replica's addresses on each network it joins."
    )

    class Meta:
        model = Container
        fields = ["id", "tenant", "app", "revision", "replica", "node", "name", "docker_id", "state", "health",
                  "exit_code", "restarts", "cpu_millis", "memory_bytes", "message", "addresses", "created_at",
                  "started_at", "last_seen_at"]  # fmt: skip
        read_only_fields = fields
        list_serializer_class = ContainerListSerializer


class LogsQuerySerializer(serializers.Serializer):
    tail = serializers.IntegerField(
        min_value=1, max_value=MAX_TAIL, default=DEFAULT_TAIL, help_text="Lines per replica, from the end."
    )
    since = serializers.CharField(required=False, help_text=f"Only lines since: {SINCE_HELP}.")
    replica = serializers.IntegerField(min_value=0, required=False, help_text="Only this replica (0-based).")
    grep = serializers.CharField(
        required=False,
        trim_whitespace=False,
        max_length=MAX_GREP,
        help_text=f"Only lines that match this Python regular expression (a plain word is one; `(?i)` ignores case), "
        f"searched in each replica's last {GREP_SCAN} lines (since `since`); `tail` then counts matches.",
    )

    def validate_grep(self, value: str):
        try:
            return parse_grep(value)
        except ValueError as exc:
            raise serializers.ValidationError(str(exc)) from None

    def validate_since(self, value: str):
        try:
            return parse_since(value)
        except ValueError as exc:
            raise serializers.ValidationError(str(exc)) from None


class ReplicaSerializer(serializers.Serializer):
    replica = serializers.IntegerField()
    name = serializers.CharField(help_text="The Docker container name.")
    node = serializers.CharField(allow_null=True)
    revision = serializers.IntegerField()
    state = serializers.ChoiceField(choices=Container.State.choices)
    error = serializers.CharField(allow_null=True, help_text="Why this replica has no answer (e.g. a silent node).")


class ReplicaLogsSerializer(ReplicaSerializer):
    lines = serializers.IntegerField(help_text="Lines this replica gave.")
    scanned = serializers.IntegerField(
        help_text=f"Lines read from Docker to find them (with grep at most {GREP_SCAN}: older ones were not searched)."
    )


class AppLogsSerializer(serializers.Serializer):
    app = serializers.CharField()
    tail = serializers.IntegerField()
    since = serializers.DateTimeField(allow_null=True)
    grep = serializers.CharField(allow_null=True, help_text="The pattern lines were chosen by, if any.")
    lines = serializers.ListField(
        child=serializers.CharField(), help_text="`[<app>-<replica>] <time> <text>`, oldest first."
    )
    containers = ReplicaLogsSerializer(many=True)


class ReplicaStatsSerializer(ReplicaSerializer):
    cpu_percent = serializers.FloatField(allow_null=True, help_text="100 = one core busy.")
    memory_usage_bytes = serializers.IntegerField(allow_null=True, help_text="Without reclaimable page cache.")
    memory_limit_bytes = serializers.IntegerField(allow_null=True, help_text="The node's memory when unlimited.")
    memory_percent = serializers.FloatField(allow_null=True)
    network_rx_bytes = serializers.IntegerField(allow_null=True)
    network_tx_bytes = serializers.IntegerField(allow_null=True)
    pids = serializers.IntegerField(allow_null=True)


class AppStatsSerializer(serializers.Serializer):
    app = serializers.CharField()
    containers = ReplicaStatsSerializer(many=True)
