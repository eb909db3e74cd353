from __future__ import annotations

from rest_framework import serializers

from hivemind.core.api import StrictFieldsMixin, TenantField, TenantOwnedSerializer
from storage.models import Snapshot, StoragePool, Volume, VolumeReplica


class VolumeSerializer(TenantOwnedSerializer):
    tenant = TenantField(required=False, help_text="Tenant slug (or send X-Hivemind-Tenant).")
    size = serializers.CharField(write_only=True, help_text='e.g. "10Gi", "512Mi" or a number of bytes.')
    pool = serializers.CharField(
        source="pool.name", required=False, help_text="A storage pool (default: a ready default pool with room)."
    )
    node = serializers.CharField(source="pool.node.name", read_only=True, help_text="Where the volume's data is.")
    provider = serializers.CharField(source="pool.provider", read_only=True)
    labels = serializers.JSONField(required=False, help_text='e.g. {"tier": "db"}')
    source = serializers.SerializerMethodField(help_text="The snapshot it was cloned from (volume@snapshot).")
    apps = serializers.SerializerMethodField(help_text="Apps whose spec mounts it.")
    snapshots = serializers.SerializerMethodField(help_text="How many snapshots it has.")
    snapshot_schedule = serializers.SerializerMethodField(
        help_text="Automatic snapshots: {every: seconds, keep: n, enabled, last_run_at}, or null."
    )

    class Meta:
        model = Volume
        fields = ["id", "tenant", "name", "size", "size_bytes", "used_bytes", "pool", "node", "provider",
                  "access_mode", "encrypted", "labels", "status", "message", "source", "apps", "snapshots",
                  "snapshot_schedule", "csi_name", "created_at", "updated_at"]  # fmt: skip
        read_only_fields = ["size_bytes", "used_bytes", "status", "message", "csi_name", "created_at", "updated_at"]
        validators = []  # a taken name is a 409 from the service, not a 400

    def get_source(self, volume) -> str | None:
        source = volume.source
        return f"{source.volume.name}@{source.name}" if source is not None else None

    def get_apps(self, volume) -> list[str]:
        from storage.services import volume_users

        return volume_users(volume)

    def get_snapshots(self, volume) -> int:
        return volume.snapshots.count()

    def get_snapshot_schedule(self, volume) -> dict | None:
        from storage.schedules import get

        return get(volume)


class ScheduleSerializer(StrictFieldsMixin, serializers.Serializer):
    every = serializers.CharField(help_text='How often, e.g. "1h" or "30m" (at least a minute); "off" removes it.')
    keep = serializers.IntegerField(required=False, default=24, help_text="How many automatic snapshots to keep.")


class ExpandSerializer(StrictFieldsMixin, serializers.Serializer):
    size = serializers.CharField(help_text='The new size, e.g. "20Gi" (volumes never shrink).')


class SnapshotRequestSerializer(StrictFieldsMixin, serializers.Serializer):
    name = serializers.CharField(help_text="A DNS label, unique per volume.")


class RevertSerializer(StrictFieldsMixin, serializers.Serializer):
    snapshot = serializers.CharField(help_text="The name of one of the volume's snapshots.")


class CloneSerializer(StrictFieldsMixin, serializers.Serializer):
    snapshot = serializers.CharField(help_text="The name of one of the volume's snapshots.")
    name = serializers.CharField(help_text="The new volume's name.")
    labels = serializers.JSONField(required=False)


class SnapshotSerializer(TenantOwnedSerializer):
    tenant = serializers.CharField(source="tenant.slug", read_only=True)
    volume = serializers.CharField(source="volume.name", read_only=True)

    class Meta:
        model = Snapshot
        fields = ["id", "tenant", "volume", "name", "size_bytes", "status", "message", "created_at"]
        read_only_fields = fields


class StoragePoolSerializer(StrictFieldsMixin, serializers.ModelSerializer):
    node = serializers.CharField(
        source="node.name",
        help_text="The node holding the pool's directory; for a shared pool (rbd, nfs), the node whose agent runs "
        "its operations (a managed nfs pool's: the node serving it).",
    )  # fmt: skip
    options = serializers.JSONField(
        required=False,
        help_text="The provider's options: none for local and btrfs; rbd {monitors, user (admin), pool (rbd), "
        "fs (xfs or ext4), prefix (hivemind-)}; nfs {mode (managed), address, port (2049), root_squash (true), "
        "version (4.1)} or {mode: external, server, export, port (2049), version (4.1)}.",
    )  # fmt: skip
    secrets = serializers.JSONField(
        required=False, write_only=True,
        help_text="Sealed at rest and never returned: rbd {key} (the cephx user's secret).",
    )  # fmt: skip
    secrets_set = serializers.ListField(
        source="secret_names", child=serializers.CharField(), read_only=True, help_text="Which secrets are set."
    )
    capabilities = serializers.SerializerMethodField(help_text="What the provider can do.")
    volumes = serializers.SerializerMethodField(help_text="Volumes in the pool.")

    class Meta:
        model = StoragePool
        fields = ["id", "name", "provider", "node", "path", "options", "secrets", "secrets_set", "is_default",
                  "capacity_bytes", "free_bytes", "status", "message", "reported_at", "capabilities", "volumes",
                  "created_at"]  # fmt: skip
        read_only_fields = ["capacity_bytes", "free_bytes", "status", "message", "reported_at", "created_at"]
        validators = []

    def get_capabilities(self, pool) -> dict:
        try:
            return pool.capabilities.as_dict()
        except LookupError:
            return {}

    def get_volumes(self, pool) -> int:
        return pool.volumes.count()


class StoragePoolUpdateSerializer(StrictFieldsMixin, serializers.Serializer):
    is_default = serializers.BooleanField(required=False)


class ReplicateSerializer(StrictFieldsMixin, serializers.Serializer):
    pool = serializers.CharField(max_length=63, help_text="A storage pool on another node than the volume's.")
    interval = serializers.IntegerField(
        required=False, allow_null=True, min_value=5, max_value=7 * 86400,
        help_text="Ship a snapshot every this many seconds; null (the default): only when asked.",
    )  # fmt: skip


class PromoteSerializer(StrictFieldsMixin, serializers.Serializer):
    force = serializers.BooleanField(
        required=False, default=False,
        help_text="Promote although the volume's node is ready (what was written there since the last transfer "
        "is lost).",
    )  # fmt: skip


class VolumeReplicaSerializer(serializers.ModelSerializer):
    pool = serializers.CharField(source="pool.name", read_only=True)
    node = serializers.CharField(source="pool.node.name", read_only=True)
    interval = serializers.IntegerField(source="interval_seconds", read_only=True, allow_null=True)
    lag_seconds = serializers.SerializerMethodField(help_text="Seconds since the data the copy holds (null: none).")

    class Meta:
        model = VolumeReplica
        fields = ["pool", "node", "interval", "state", "last_attempt_at", "last_success_at", "lag_seconds",
                  "last_error", "bytes_last_transfer", "seconds_last_transfer", "full_last_transfer", "transfers",
                  "created_at", "updated_at"]  # fmt: skip
        read_only_fields = fields

    def get_lag_seconds(self, replica) -> float | None:
        from storage.replication import lag_seconds

        return lag_seconds(replica)
