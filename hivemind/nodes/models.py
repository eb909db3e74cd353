"""Nodes: the machines that run containers. Platform-level (no tenant), managed by staff."""

from __future__ import annotations

from django.db import models


class TaintEffect(models.TextChoices):
    NO_SCHEDULE = "NoSchedule"
    PREFER_NO_SCHEDULE = "PreferNoSchedule"
    NO_EXECUTE = "NoExecute"


class Node(models.Model):
    class Status(models.TextChoices):
        READY = "ready"
        NOT_READY = "not-ready"

    name = models.CharField(max_length=63, unique=True, help_text="a DNS label; its agent consumes node.<name>")
    address = models.CharField(max_length=255, blank=True, help_text="address other nodes and users reach it at")
    docker_version = models.CharField(max_length=64, blank=True)
    docker_host = models.CharField(max_length=255, blank=True, help_text="the agent's Docker endpoint")
    os = models.CharField(max_length=128, blank=True)
    arch = models.CharField(max_length=32, blank=True)
    cpu_millis = models.PositiveBigIntegerField(default=0, help_text="CPU capacity in millicores")
    memory_bytes = models.PositiveBigIntegerField(default=0)
    disk_bytes = models.PositiveBigIntegerField(default=0)
    labels = models.JSONField(default=dict, blank=True)
    # [{"key": "gpu", "value": "true", "effect": "NoSchedule"}]
    taints = models.JSONField(default=list, blank=True)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.NOT_READY)
    cordoned = models.BooleanField(default=False, help_text="no new replicas are placed here")
    draining = models.BooleanField(default=False, help_text="its replicas are being moved away")
    last_heartbeat = models.DateTimeField(null=True, blank=True)
    registered_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    @property
    def queue(self) -> str:
        return f"node.{self.name}"

    @property
    def state(self) -> str:
        """ready, not-ready, cordoned or draining: what `hivemind node ls` shows."""
        if self.status != self.Status.READY:
            return self.Status.NOT_READY
        if self.draining:
            return "draining"
        if self.cordoned:
            return "cordoned"
        return self.Status.READY

    @property
    def schedulable(self) -> bool:
        return self.status == self.Status.READY and not self.cordoned and not self.draining
