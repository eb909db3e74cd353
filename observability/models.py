"""Resource usage the platform keeps: what each managed container used, sampled by its node's
agent. The dashboard's charts read these through observability.selectors; rows older than
HIVEMIND_SAMPLE_RETENTION are pruned from beat."""

from __future__ import annotations

from django.db import models


class UsageSample(models.Model):
    """What one managed container used, as its node's agent saw it at `at`.

    Not TenantOwned: samples are history, deleted with their tenant and app (CASCADE) rather
    than blocking the deletion, and they are read only through selectors keyed by ids the
    caller has already restricted to the user's scope.
    """

    at = models.DateTimeField(db_index=True, help_text="when the agent took the sample")
    node = models.ForeignKey("nodes.Node", null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    tenant = models.ForeignKey("tenants.Tenant", on_delete=models.CASCADE, related_name="+")
    app = models.ForeignKey("applications.App", on_delete=models.CASCADE, related_name="+")
    container_name = models.CharField(max_length=200, help_text="the Docker container name")
    replica = models.PositiveIntegerField(null=True, blank=True, help_text="the replica index the container serves")
    cpu_millis = models.PositiveIntegerField(help_text="millicores used on average since the previous sample")
    memory_bytes = models.PositiveBigIntegerField(help_text="memory used, page cache excluded (as `docker stats`)")

    class Meta:
        ordering = ["-at"]
        indexes = [
            models.Index(fields=["app", "at"], name="usagesample_app_at"),
            models.Index(fields=["node", "at"], name="usagesample_node_at"),
        ]

    def __str__(self) -> str:
        return f"{self.container_name} at {self.at:%Y-%m-%d %H:%M:%S}"


class NodeUsageSample(models.Model):
    """What all managed containers of a node used together in one sampling pass: the node's
    chart reads one row per pass instead of adding up every container's samples."""

    at = models.DateTimeField(help_text="when the agent took the pass")
    node = models.ForeignKey("nodes.Node", on_delete=models.CASCADE, related_name="+")
    cpu_millis = models.PositiveBigIntegerField(help_text="millicores its containers used, summed")
    memory_bytes = models.PositiveBigIntegerField(help_text="memory its containers used, summed")
    containers = models.PositiveIntegerField(help_text="how many containers the pass sampled")

    class Meta:
        ordering = ["-at"]
        indexes = [models.Index(fields=["node", "at"], name="nodeusagesample_node_at")]

    def __str__(self) -> str:
        return f"node {self.node_id} at {self.at:%Y-%m-%d %H:%M:%S}"


class ContainerStat(models.Model):
    """The latest figures of one container, as its node's agent last sampled them: what /metrics
    serves (one row per container, replaced on every pass; UsageSample keeps the history).

    The network and block figures are Docker's cumulative counters since the container started."""

    # On PostgreSQL the foreign key also cascades in the database (migration 0005: a sampling
    # pass may store a row between Django's cascade and the container's DELETE). A migration
    # that alters this field recreates the constraint without it: redo 0005's statement then.
    container = models.OneToOneField(
        "applications.Container", primary_key=True, on_delete=models.CASCADE, related_name="+"
    )
    at = models.DateTimeField(help_text="when the agent took the sample")
    cpu_millis = models.PositiveIntegerField(help_text="millicores used on average since the previous sample")
    memory_bytes = models.PositiveBigIntegerField(help_text="memory used, page cache excluded")
    network_rx_bytes = models.PositiveBigIntegerField(default=0, help_text="bytes received on every interface")
    network_tx_bytes = models.PositiveBigIntegerField(default=0, help_text="bytes sent on every interface")
    block_read_bytes = models.PositiveBigIntegerField(default=0, help_text="bytes read from block devices")
    block_write_bytes = models.PositiveBigIntegerField(default=0, help_text="bytes written to block devices")

    def __str__(self) -> str:
        return f"container {self.container_id} at {self.at:%Y-%m-%d %H:%M:%S}"


class NodeStat(models.Model):
    """The latest figures of one node's machine, as its agent last read them from /proc and the
    file system of Docker's data (one row per node, replaced on every sampling pass)."""

    node = models.OneToOneField("nodes.Node", primary_key=True, on_delete=models.CASCADE, related_name="+")
    at = models.DateTimeField(help_text="when the agent read them")
    cpu_used_ratio = models.FloatField(help_text="share of all CPUs busy since the previous reading (0..1)")
    load1 = models.FloatField(default=0)
    load5 = models.FloatField(default=0)
    load15 = models.FloatField(default=0)
    memory_total_bytes = models.PositiveBigIntegerField(default=0)
    memory_available_bytes = models.PositiveBigIntegerField(default=0)
    disk_total_bytes = models.PositiveBigIntegerField(default=0, help_text="file system of Docker's data; 0: remote")
    disk_free_bytes = models.PositiveBigIntegerField(default=0)

    def __str__(self) -> str:
        return f"node {self.node_id} at {self.at:%Y-%m-%d %H:%M:%S}"


class UsageRollup(models.Model):
    """What one replica of an app used over a minute (resolution 60) or ten (600): the long
    history charts and anomaly baselines read, made from the raw samples by beat
    (observability/rollups.py) and kept HIVEMIND_ROLLUP_RETENTION_1M / _10M seconds.

    Keyed by app and replica index, not container: a replaced replica continues its series."""

    class Resolution(models.IntegerChoices):
        MINUTE = 60
        TEN_MINUTES = 600

    resolution = models.PositiveSmallIntegerField(choices=Resolution.choices)
    at = models.DateTimeField(help_text="the start of the period")
    tenant = models.ForeignKey("tenants.Tenant", on_delete=models.CASCADE, related_name="+")
    app = models.ForeignKey("applications.App", on_delete=models.CASCADE, related_name="+")
    replica = models.PositiveIntegerField()
    node = models.ForeignKey("nodes.Node", null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    samples = models.PositiveIntegerField(help_text="raw samples in the period")
    cpu_millis_avg = models.FloatField()
    cpu_millis_max = models.PositiveIntegerField()
    memory_bytes_avg = models.FloatField()
    memory_bytes_max = models.PositiveBigIntegerField()

    class Meta:
        ordering = ["app", "replica", "resolution", "at"]
        constraints = [
            models.UniqueConstraint(fields=["resolution", "app", "replica", "at"], name="usagerollup_unique_period")
        ]
        indexes = [models.Index(fields=["resolution", "at"], name="usagerollup_resolution_at")]

    def __str__(self) -> str:
        return f"app {self.app_id}/{self.replica} {self.resolution}s at {self.at:%Y-%m-%d %H:%M}"
