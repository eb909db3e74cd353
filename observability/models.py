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
