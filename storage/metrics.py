"""Storage figures on /metrics, read from the database at each scrape (what the agents last
reported: pools' capacity and free space on every beat, volumes' usage). Labels are names
Hivemind chose or validated as DNS labels (tenant slugs, volume, pool and node names): the
series are bounded by the objects that exist.

- hivemind_storage_pool_capacity_bytes / hivemind_storage_pool_free_bytes {pool, provider, node}
- hivemind_storage_pool_ready {pool, node}: 1 when its agent could prepare and read it
- hivemind_volume_size_bytes / hivemind_volume_used_bytes {tenant, volume, pool, node}
- hivemind_volume_snapshots {tenant, volume}: snapshots of a volume
- hivemind_volume_replication_lag_seconds {tenant, volume, target_pool}: since the last
  successful transfer to its replica (when replication exists; -1 before the first)
- operation durations: the workflow engine's hivemind_workflow_step_duration_seconds
  {kind="volume.create", step="storage.create"} and its siblings cover every storage step.
"""

from __future__ import annotations

from collections.abc import Iterable

from django.utils import timezone
from prometheus_client.core import GaugeMetricFamily


class StorageCollector:
    def describe(self) -> Iterable:
        return []

    def collect(self) -> Iterable:
        from django.db.models import Count

        from storage.models import StoragePool, Volume

        capacity = GaugeMetricFamily(
            "hivemind_storage_pool_capacity_bytes", "A storage pool's size.", labels=["pool", "provider", "node"]
        )
        free = GaugeMetricFamily(
            "hivemind_storage_pool_free_bytes", "A storage pool's free space.", labels=["pool", "provider", "node"]
        )
        ready = GaugeMetricFamily(
            "hivemind_storage_pool_ready", "1 when the pool's agent could prepare and read it.", labels=["pool", "node"]
        )
        size = GaugeMetricFamily(
            "hivemind_volume_size_bytes", "A volume's size.", labels=["tenant", "volume", "pool", "node"]
        )
        used = GaugeMetricFamily(
            "hivemind_volume_used_bytes", "What a volume's files use.", labels=["tenant", "volume", "pool", "node"]
        )
        snapshots = GaugeMetricFamily(
            "hivemind_volume_snapshots", "Snapshots of a volume.", labels=["tenant", "volume"]
        )
        for pool in StoragePool.objects.select_related("node"):
            capacity.add_metric([pool.name, pool.provider, pool.node.name], pool.capacity_bytes)
            free.add_metric([pool.name, pool.provider, pool.node.name], pool.free_bytes)
            ready.add_metric([pool.name, pool.node.name], 1 if pool.status == StoragePool.Status.READY else 0)
        volumes = Volume.objects.values_list(
            "tenant__slug", "name", "pool__name", "pool__node__name", "size_bytes", "used_bytes"
        ).annotate(count=Count("snapshots"))
        for tenant, name, pool, node, size_bytes, used_bytes, count in volumes:
            size.add_metric([tenant, name, pool, node], size_bytes)
            used.add_metric([tenant, name, pool, node], used_bytes)
            snapshots.add_metric([tenant, name], count)
        families = [capacity, free, ready, size, used, snapshots]
        return [*families, self._replication_lag()]

    def _replication_lag(self):
        from storage.models import VolumeReplica

        lag = GaugeMetricFamily(
            "hivemind_volume_replication_lag_seconds",
            "Seconds since a volume's last successful transfer to its replica (-1: none yet).",
            labels=["tenant", "volume", "target_pool"],
        )
        now = timezone.now()
        rows = VolumeReplica.objects.values_list(
            "volume__tenant__slug", "volume__name", "pool__name", "last_success_at"
        )
        for tenant, volume, pool, last in rows:
            lag.add_metric([tenant, volume, pool], (now - last).total_seconds() if last else -1)
        return lag
