"""Applications: the desired state (App, its immutable revisions) and the actual state
(Container rows, one per replica, kept in step with what the node agents report)."""

from __future__ import annotations

from django.conf import settings
from django.db import models

from hivemind.core.models import TenantOwned

# Labels on every container Hivemind makes; a retried step finds and adopts what an
# earlier attempt made by these, and the reconciler never touches a container without them.
LABEL_MANAGED = "io.hivemind.managed"
LABEL_TENANT = "io.hivemind.tenant"
LABEL_APP = "io.hivemind.app"
LABEL_REVISION = "io.hivemind.revision"
LABEL_REPLICA = "io.hivemind.replica"


class App(TenantOwned):
    class Status(models.TextChoices):
        DEPLOYING = "deploying"
        RUNNING = "running"
        DEGRADED = "degraded"
        FAILED = "failed"
        DELETING = "deleting"

    name = models.CharField(max_length=63, help_text="a DNS label, unique in the tenant")
    service_name = models.CharField(max_length=63, blank=True, help_text="DNS name of the service; default the name")
    replicas = models.PositiveIntegerField(default=1, help_text="desired number of replicas")
    revision = models.ForeignKey(
        "AppRevision", null=True, blank=True, on_delete=models.SET_NULL, related_name="+", help_text="current revision"
    )
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.DEPLOYING)
    reservation = models.ForeignKey(
        "tenants.QuotaReservation", null=True, blank=True, on_delete=models.SET_NULL, related_name="+",
        help_text="the quota the app holds: its desired replicas' cpu, memory and containers",
    )  # fmt: skip
    message = models.TextField(blank=True, help_text="why it is degraded or failed, e.g. a placement explanation")
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["tenant", "name"]
        constraints = [models.UniqueConstraint(fields=["tenant", "name"], name="app_name_unique_in_tenant")]

    def __str__(self) -> str:
        return self.name


class AppRevision(models.Model):
    """One immutable version of an app's spec; every change makes a new one."""

    app = models.ForeignKey(App, on_delete=models.CASCADE, related_name="revisions")
    number = models.PositiveIntegerField()
    spec = models.JSONField(help_text="image, command, env, ports, resources, health check, placement…")
    change = models.CharField(max_length=200, blank=True, help_text="what this revision changed")
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["app", "-number"]
        constraints = [models.UniqueConstraint(fields=["app", "number"], name="app_revision_unique_number")]

    def __str__(self) -> str:
        return f"{self.app.name} revision {self.number}"


class Container(TenantOwned):
    """One replica of an app: where it is placed and what its node reports about it."""

    class State(models.TextChoices):
        PENDING = "pending"  # placed, not created yet
        CREATED = "created"
        RUNNING = "running"
        EXITED = "exited"
        MISSING = "missing"  # the node no longer reports it
        REMOVED = "removed"

    class Health(models.TextChoices):
        NONE = "none"
        STARTING = "starting"
        HEALTHY = "healthy"
        UNHEALTHY = "unhealthy"

    app = models.ForeignKey(App, on_delete=models.CASCADE, related_name="containers")
    revision = models.ForeignKey(AppRevision, on_delete=models.PROTECT, related_name="containers")
    replica = models.PositiveIntegerField(help_text="replica slot, 0-based")
    node = models.ForeignKey("nodes.Node", null=True, blank=True, on_delete=models.SET_NULL, related_name="containers")
    name = models.CharField(max_length=200, help_text="the Docker container name")
    docker_id = models.CharField(max_length=64, blank=True)
    state = models.CharField(max_length=16, choices=State.choices, default=State.PENDING)
    health = models.CharField(max_length=16, choices=Health.choices, default=Health.NONE)
    exit_code = models.IntegerField(null=True, blank=True)
    restarts = models.PositiveIntegerField(default=0)
    cpu_millis = models.PositiveIntegerField(default=0, help_text="requested CPU, for the scheduler")
    memory_bytes = models.PositiveBigIntegerField(default=0, help_text="requested memory, for the scheduler")
    message = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    last_seen_at = models.DateTimeField(null=True, blank=True, help_text="when its node last reported it")

    class Meta:
        ordering = ["app", "replica", "-id"]
        constraints = [models.UniqueConstraint(fields=["name"], name="container_name_unique")]
        indexes = [models.Index(fields=["node", "state"])]

    def __str__(self) -> str:
        return self.name


def lock_containers(queryset) -> list[int]:
    """Lock these Container rows in primary-key order, inside the caller's transaction;
    returns their keys. Every writer of several containers' rows in one transaction does
    this first: two that lock the same rows in different orders deadlock (a node's report,
    row by row in Docker's order, against a rollout's start updating all of its replicas
    at once failed the start once per few deploys under bench/deploy.py)."""
    return list(queryset.select_for_update().order_by("pk").values_list("pk", flat=True))
