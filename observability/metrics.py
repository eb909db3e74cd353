"""Node, container and health figures on /metrics, read from the database at each scrape: what the
agents last reported (Node rows and their heartbeats, NodeStat and ContainerStat from the
sampling pass, Container rows from the reports) and what the control plane knows (apps'
desired replicas, failed workflows). Every web process serves the same figures: nothing here
is a per-process counter.

Labels are bounded by the objects that exist: `node` (node names), `tenant` (slugs), `app`
(names validated as DNS labels), `replica` (the replica index, 0-based, below the app's
replica count: a replaced container keeps its replica's series), `state` and `kind` (fixed
vocabularies: container states, workflow kinds registered in code).

- hivemind_node_ready {node}: 1 when the node is ready (heartbeats arriving, Docker answering)
- hivemind_node_schedulable {node}: 1 when ready, not cordoned and not draining
- hivemind_node_heartbeat_age_seconds {node}
- hivemind_node_cpu_capacity_millicores / hivemind_node_memory_capacity_bytes {node}
- hivemind_node_cpu_used_ratio, hivemind_node_load1/5/15, hivemind_node_memory_total_bytes,
  hivemind_node_memory_available_bytes, hivemind_node_disk_total_bytes,
  hivemind_node_disk_free_bytes {node}: the machine as its agent last read it
- hivemind_node_containers {node, state}: managed containers per state
- hivemind_container_cpu_millicores, hivemind_container_memory_bytes {tenant, app, replica, node}
- hivemind_container_network_receive_bytes_total, hivemind_container_network_transmit_bytes_total,
  hivemind_container_block_read_bytes_total, hivemind_container_block_write_bytes_total
  {tenant, app, replica, node}: Docker's counters (reset when the container is replaced)
- hivemind_container_restarts_total {tenant, app, replica, node}: Docker's restarts of it
- hivemind_container_running / hivemind_container_healthy {tenant, app, replica, node}: 1 or 0
  (healthy: its health check passes, or it runs and has none)
- hivemind_app_replicas_desired / _running / _healthy {tenant, app}
- hivemind_workflows_failed_total {tenant, kind}: workflows that ended failed
"""

from __future__ import annotations

from collections.abc import Iterable

from django.utils import timezone
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.samples import Sample

CONTAINER_LABELS = ["tenant", "app", "replica", "node"]
# ContainerStat's columns in the order of ContainerCollector's families.
STAT_COLUMNS = [
    "cpu_millis", "memory_bytes", "network_rx_bytes", "network_tx_bytes", "block_read_bytes", "block_write_bytes"
]  # fmt: skip


def _gauge(name: str, documentation: str, labels: list[str]) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, documentation, labels=labels)


class NodeCollector:
    def describe(self) -> Iterable:
        return []

    def collect(self) -> Iterable:
        from django.db.models import Count

        from hivemind.applications.models import Container
        from hivemind.nodes.models import Node
        from observability.models import NodeStat

        node = ["node"]
        ready = _gauge("hivemind_node_ready", "1 when the node is ready: heartbeats arrive, Docker answers.", node)
        schedulable = _gauge(
            "hivemind_node_schedulable", "1 when the node is ready, not cordoned and not draining.", node
        )
        heartbeat = _gauge("hivemind_node_heartbeat_age_seconds", "Seconds since the node's last heartbeat.", node)
        cpu_capacity = _gauge("hivemind_node_cpu_capacity_millicores", "CPU capacity Docker reports.", node)
        memory_capacity = _gauge("hivemind_node_memory_capacity_bytes", "Memory Docker reports.", node)
        now = timezone.now()
        names = {}
        for row in Node.objects.all():
            names[row.pk] = row.name
            is_ready = row.status == Node.Status.READY
            ready.add_metric([row.name], 1 if is_ready else 0)
            schedulable.add_metric([row.name], 1 if is_ready and not row.cordoned and not row.draining else 0)
            if row.last_heartbeat is not None:
                heartbeat.add_metric([row.name], max(0.0, (now - row.last_heartbeat).total_seconds()))
            cpu_capacity.add_metric([row.name], row.cpu_millis)
            memory_capacity.add_metric([row.name], row.memory_bytes)
        machine = {
            "cpu_used_ratio": _gauge(
                "hivemind_node_cpu_used_ratio", "Share of the machine's CPUs busy (0..1) between two samples.", node
            ),
            "load1": _gauge("hivemind_node_load1", "Load average over 1 minute.", node),
            "load5": _gauge("hivemind_node_load5", "Load average over 5 minutes.", node),
            "load15": _gauge("hivemind_node_load15", "Load average over 15 minutes.", node),
            "memory_total_bytes": _gauge("hivemind_node_memory_total_bytes", "The machine's memory.", node),
            "memory_available_bytes": _gauge(
                "hivemind_node_memory_available_bytes", "Memory available for new work (MemAvailable).", node
            ),
            "disk_total_bytes": _gauge(
                "hivemind_node_disk_total_bytes", "Size of the file system holding Docker's data.", node
            ),
            "disk_free_bytes": _gauge(
                "hivemind_node_disk_free_bytes", "Free space on the file system holding Docker's data.", node
            ),
        }
        for stat in NodeStat.objects.filter(node_id__in=names):
            for field, family in machine.items():
                if field.startswith("disk_") and not stat.disk_total_bytes:
                    continue  # Docker runs elsewhere: no disk figures rather than zeros
                family.add_metric([names[stat.node_id]], getattr(stat, field))
        containers = _gauge("hivemind_node_containers", "Managed containers on the node, per state.", ["node", "state"])
        rows = (
            Container.objects.filter(node__isnull=False)
            .exclude(state=Container.State.REMOVED)
            .values_list("node_id", "state")
            .annotate(count=Count("pk"))
            .order_by()
        )
        for node_id, state, count in rows:
            if node_id in names:
                containers.add_metric([names[node_id], state], count)
        return [ready, schedulable, heartbeat, cpu_capacity, memory_capacity, *machine.values(), containers]


class ContainerCollector:
    """One series per replica (the newest live container of each replica index of an app)."""

    by_tenant = True

    def describe(self) -> Iterable:
        return []

    def collect(self, tenant: str | None = None) -> Iterable:
        from hivemind.applications.models import Container
        from networking.discovery import serving
        from observability.models import ContainerStat

        cpu = _gauge("hivemind_container_cpu_millicores", "CPU a replica's container used.", CONTAINER_LABELS)
        memory = _gauge(
            "hivemind_container_memory_bytes", "Memory a replica's container uses, page cache excluded.",
            CONTAINER_LABELS,
        )  # fmt: skip
        counters = {
            "network_rx_bytes": CounterMetricFamily(
                "hivemind_container_network_receive_bytes", "Bytes a replica's container received.",
                labels=CONTAINER_LABELS,
            ),
            "network_tx_bytes": CounterMetricFamily(
                "hivemind_container_network_transmit_bytes", "Bytes a replica's container sent.",
                labels=CONTAINER_LABELS,
            ),
            "block_read_bytes": CounterMetricFamily(
                "hivemind_container_block_read_bytes", "Bytes a replica's container read from block devices.",
                labels=CONTAINER_LABELS,
            ),
            "block_write_bytes": CounterMetricFamily(
                "hivemind_container_block_write_bytes", "Bytes a replica's container wrote to block devices.",
                labels=CONTAINER_LABELS,
            ),
        }  # fmt: skip
        restarts = CounterMetricFamily(
            "hivemind_container_restarts", "Times Docker restarted a replica's container.", labels=CONTAINER_LABELS
        )
        running = _gauge("hivemind_container_running", "1 when a replica's container runs.", CONTAINER_LABELS)
        healthy = _gauge(
            "hivemind_container_healthy", "1 when a replica's container runs and passes its health check, if any.",
            CONTAINER_LABELS,
        )  # fmt: skip
        live = Container.objects.filter(node__isnull=False).exclude(
            state__in=[Container.State.REMOVED, Container.State.PENDING]
        )
        if tenant is not None:
            live = live.filter(tenant__slug=tenant)
        newest: dict[tuple[int, int], tuple] = {}
        rows = live.values_list(
            "pk", "app_id", "replica", "tenant__slug", "app__name", "node__name", "state", "health", "restarts"
        ).order_by("pk")
        for row in rows:
            newest[(row[1], row[2])] = row  # ordered by id: the last one of a replica is its newest
        # Samples made here rather than by add_metric(): one labels dict per replica, shared by its
        # nine series (the scrape renders it once), at 3,000 replicas a third of the scrape.
        running_labels = {}
        for pk, _app, replica, slug, app, node, state, health, count in newest.values():
            labels = {"tenant": slug, "app": app, "replica": str(replica), "node": node}
            is_running = state == Container.State.RUNNING
            restarts.samples.append(Sample("hivemind_container_restarts_total", labels, count))
            running.samples.append(Sample("hivemind_container_running", labels, 1 if is_running else 0))
            healthy.samples.append(
                Sample("hivemind_container_healthy", labels, 1 if is_running and serving(health) else 0)
            )
            if is_running:
                running_labels[pk] = labels  # a stopped one's last figures are history now
        stats = ContainerStat.objects.values_list("container_id", *STAT_COLUMNS)
        if tenant is not None:
            stats = stats.filter(container__tenant__slug=tenant)
        families = [cpu, memory, *counters.values()]
        targets = [(f.samples, f.name + ("_total" if f.type == "counter" else "")) for f in families]
        for container_id, *values in stats.iterator(chunk_size=5000):
            labels = running_labels.get(container_id)
            if labels is not None:
                for (samples, name), value in zip(targets, values, strict=True):
                    samples.append(Sample(name, labels, value))
        return [*families, restarts, running, healthy]


class HealthCollector:
    """Apps' replicas as desired, running and healthy; failed workflows."""

    by_tenant = True

    def describe(self) -> Iterable:
        return []

    def collect(self, tenant: str | None = None) -> Iterable:
        from django.db.models import Count, Q

        from hivemind.applications.models import App, Container
        from hivemind.workflows.models import Workflow, WorkflowState

        app_labels = ["tenant", "app"]
        desired = _gauge("hivemind_app_replicas_desired", "Replicas an app asks for.", app_labels)
        running = _gauge("hivemind_app_replicas_running", "An app's replicas whose container runs.", app_labels)
        healthy = _gauge(
            "hivemind_app_replicas_healthy", "An app's running replicas that pass their health check (or have none).",
            app_labels,
        )  # fmt: skip
        live = Q(containers__state=Container.State.RUNNING)
        scope = {} if tenant is None else {"tenant__slug": tenant}
        apps = (
            App.objects.filter(**scope)
            .values_list("tenant__slug", "name", "replicas")
            .annotate(
                running=Count("containers__replica", filter=live, distinct=True),
                healthy=Count(
                    "containers__replica",
                    filter=live & Q(containers__health__in=[Container.Health.HEALTHY, Container.Health.NONE]),
                    distinct=True,
                ),
            )
        )
        for tenant, name, replicas, running_count, healthy_count in apps:
            desired.add_metric([tenant, name], replicas)
            running.add_metric([tenant, name], running_count)
            healthy.add_metric([tenant, name], healthy_count)
        failed = CounterMetricFamily(
            "hivemind_workflows_failed", "Workflows that ended failed, per tenant and kind.", labels=["tenant", "kind"]
        )
        rows = (
            Workflow.objects.filter(state=WorkflowState.FAILED, **scope)
            .values_list("tenant__slug", "kind")
            .annotate(count=Count("pk"))
            .order_by()
        )
        for tenant, kind, count in rows:
            failed.add_metric([tenant, kind], count)
        return [desired, running, healthy, failed]
