"""Storage pools (platform), tenant volumes and their snapshots.

A pool is one provider instance on one node (storage/providers/): a directory there that the
provider owns. A volume lives in one pool; its bytes never leave the pool's node except as a
snapshot stream. The provider knows volumes and snapshots by their handles (`v<pk>`,
`s<pk>`), never by user-given names, and host paths never appear in the tenant API.
"""

from __future__ import annotations

from django.conf import settings
from django.db import models

from hivemind.core.models import TenantOwned


class StoragePool(models.Model):
    """Where volumes live: a provider on a node, with what its agent last reported."""

    class Status(models.TextChoices):
        READY = "ready"
        UNAVAILABLE = "unavailable"  # the agent could not prepare or read it: `message` says why

    name = models.CharField(max_length=63, unique=True, help_text="a DNS label")
    provider = models.CharField(max_length=32, help_text="local, btrfs, rbd or nfs")
    node = models.ForeignKey(
        "nodes.Node", on_delete=models.PROTECT, related_name="storage_pools",
        help_text="the node whose agent runs the pool's operations (for a shared pool, any node reaching it)",
    )  # fmt: skip
    path = models.CharField(max_length=512, help_text="the pool's directory on the node (staff only)")
    options = models.JSONField(default=dict, blank=True)
    sealed_secrets = models.BinaryField(default=b"", blank=True, editable=False, help_text="e.g. a cephx key, sealed")
    secret_names = models.JSONField(
        default=list, blank=True, editable=False, help_text="which secrets are set (names, never values)"
    )
    is_default = models.BooleanField(default=False, help_text="volumes that name no pool go to a default pool")
    capacity_bytes = models.PositiveBigIntegerField(default=0)
    free_bytes = models.PositiveBigIntegerField(default=0)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.READY)
    message = models.CharField(max_length=2000, blank=True)
    reported_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]
        constraints = [
            models.UniqueConstraint(fields=["node", "path"], name="storage_pool_one_per_directory"),
        ]

    def __str__(self) -> str:
        return f"{self.name} ({self.provider} on {self.node.name})"

    # A platform object for tenants/sealing.py: its secrets are sealed with a key derived from
    # the master key.
    tenant = None
    tenant_id = None

    @property
    def capabilities(self):
        from storage.providers import registry

        return registry.get(self.provider).pool_capabilities(self.options)


class Volume(TenantOwned):
    """A tenant's volume: a size in a pool, mounted by its apps' replicas on the pool's node."""

    class Status(models.TextChoices):
        CREATING = "creating"
        READY = "ready"
        BUSY = "busy"  # a workflow works on it (expand, revert)
        DELETING = "deleting"
        FAILED = "failed"

    class AccessMode(models.TextChoices):
        RWO = "ReadWriteOnce"
        ROX = "ReadOnlyMany"
        RWX = "ReadWriteMany"

    deleted_with_tenant = False

    name = models.CharField(max_length=63, help_text="a DNS label, unique in the tenant")
    pool = models.ForeignKey(StoragePool, on_delete=models.PROTECT, related_name="volumes")
    size_bytes = models.PositiveBigIntegerField()
    access_mode = models.CharField(max_length=16, choices=AccessMode.choices, default=AccessMode.RWO)
    encrypted = models.BooleanField(default=False)
    labels = models.JSONField(default=dict, blank=True)
    source = models.ForeignKey(
        "Snapshot", null=True, blank=True, on_delete=models.SET_NULL, related_name="clones",
        help_text="the snapshot this volume was cloned from",
    )  # fmt: skip
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.CREATING)
    message = models.CharField(max_length=2000, blank=True)
    used_bytes = models.PositiveBigIntegerField(default=0)
    reservation = models.ForeignKey(
        "tenants.QuotaReservation", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    csi_name = models.CharField(
        max_length=128, blank=True, default="", help_text="the name a CSI CreateVolume gave it (storage/csi/)"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["tenant", "name"]
        constraints = [models.UniqueConstraint(fields=["tenant", "name"], name="volume_name_unique_in_tenant")]

    def __str__(self) -> str:
        return f"{self.tenant.slug}/{self.name}"

    @property
    def handle(self) -> str:
        """The provider's name for it."""
        return f"v{self.pk}"


class Snapshot(TenantOwned):
    """A read-only, point-in-time copy of a volume, in the volume's pool."""

    class Status(models.TextChoices):
        CREATING = "creating"
        READY = "ready"
        DELETING = "deleting"
        FAILED = "failed"

    deleted_with_tenant = False

    name = models.CharField(max_length=63, help_text="a DNS label, unique per volume")
    volume = models.ForeignKey(Volume, on_delete=models.PROTECT, related_name="snapshots")
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.CREATING)
    message = models.CharField(max_length=2000, blank=True)
    size_bytes = models.PositiveBigIntegerField(default=0, help_text="the volume's size when it was taken")
    csi_name = models.CharField(
        max_length=128, blank=True, default="", help_text="the name a CSI CreateSnapshot gave it (storage/csi/)"
    )
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["volume", "-created_at"]
        constraints = [models.UniqueConstraint(fields=["volume", "name"], name="snapshot_name_unique_per_volume")]

    def __str__(self) -> str:
        return f"{self.volume}@{self.name}"

    @property
    def handle(self) -> str:
        return f"s{self.pk}"


class VolumeReplica(models.Model):
    """A copy of a volume kept in a pool on another node: snapshots of the volume shipped there
    (incrementally from the last one both pools hold), on a schedule or when asked.

    The copy is as of `last_success_at`; `promote` makes it the volume (storage/replication.py).
    The snapshots it ships are internal (storage/replication.py `replication_name`): no
    Snapshot row, never in the tenant's list."""

    class State(models.TextChoices):
        PENDING = "pending"  # no transfer yet
        REPLICATING = "replicating"
        READY = "ready"  # the last transfer succeeded
        FAILED = "failed"  # the last transfer failed: `last_error` says why; the next one is tried on schedule
        PROMOTING = "promoting"
        REMOVING = "removing"

    volume = models.OneToOneField(Volume, on_delete=models.CASCADE, related_name="replica")
    pool = models.ForeignKey(StoragePool, on_delete=models.PROTECT, related_name="replicas",
                             help_text="where the copy is: a pool on another node than the volume's")  # fmt: skip
    interval_seconds = models.PositiveIntegerField(
        null=True, blank=True, help_text="ship a snapshot this often; null: only when asked"
    )
    state = models.CharField(max_length=16, choices=State.choices, default=State.PENDING)
    last_snapshot = models.CharField(max_length=32, blank=True, help_text="the snapshot both pools hold (the parent)")
    last_attempt_at = models.DateTimeField(null=True, blank=True)
    last_success_at = models.DateTimeField(null=True, blank=True, help_text="the copy holds the volume as of then")
    last_error = models.CharField(max_length=2000, blank=True)
    bytes_last_transfer = models.PositiveBigIntegerField(default=0, help_text="stream bytes the target received")
    seconds_last_transfer = models.FloatField(default=0)
    full_last_transfer = models.BooleanField(default=False, help_text="the last transfer was a full stream")
    transfers = models.PositiveIntegerField(default=0)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["volume"]

    def __str__(self) -> str:
        return f"{self.volume} -> {self.pool.name}"


class CsiPublication(models.Model):
    """A volume published to a node through CSI's ControllerPublishVolume (storage/csi/): the
    controller's record that a CO may stage it there. A single-node volume is published to one
    node at a time; a published volume is not deleted."""

    volume = models.ForeignKey(Volume, on_delete=models.CASCADE, related_name="csi_publications")
    node = models.ForeignKey("nodes.Node", on_delete=models.CASCADE, related_name="csi_publications")
    readonly = models.BooleanField(default=False)
    access_mode = models.CharField(max_length=32, help_text="the CSI access mode it was published with")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["volume", "node"]
        constraints = [models.UniqueConstraint(fields=["volume", "node"], name="csi_publication_once_per_node")]

    def __str__(self) -> str:
        return f"{self.volume} on {self.node.name}"


class DataEndpoint(models.Model):
    """Where a node's agent takes replication streams (storage/channel.py): registered by the
    agent when its data server listens."""

    node = models.OneToOneField("nodes.Node", on_delete=models.CASCADE, related_name="data_endpoint")
    url = models.CharField(max_length=255, help_text="http://<address>:<port>")
    updated_at = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return f"{self.node.name}: {self.url}"
