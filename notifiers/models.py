"""Notifiers: where a tenant's alerts are delivered (webhook, email, Slack-compatible webhook,
Prometheus Alertmanager). Their secrets are sealed with the tenant's keys (tenants/keys.py)
and never returned."""

from __future__ import annotations

from django.core.serializers.json import DjangoJSONEncoder
from django.db import models

from hivemind.core.models import TenantOwned


class Notifier(TenantOwned):
    class Kind(models.TextChoices):
        WEBHOOK = "webhook"
        EMAIL = "email"
        SLACK = "slack"
        ALERTMANAGER = "alertmanager"

    # A tenant's notifiers are deleted before the tenant, like its apps and volumes (listed by
    # tenant_delete's 409): nothing else would delete them, and the tenant key is PROTECTed.
    deleted_with_tenant = False

    name = models.CharField(max_length=63, help_text="a DNS label, unique in the tenant")
    kind = models.CharField(max_length=16, choices=Kind.choices)
    config = models.JSONField(default=dict, blank=True, help_text="settings that are not secret (URL, SMTP host...)")
    sealed_secrets = models.BinaryField(default=b"", blank=True, editable=False, help_text="secrets, sealed")
    secret_names = models.JSONField(
        default=list, blank=True, editable=False, help_text="which secrets are set (their names, never values)"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["tenant", "name"]
        constraints = [models.UniqueConstraint(fields=["tenant", "name"], name="notifier_name_unique_in_tenant")]

    def __str__(self) -> str:
        return f"{self.tenant.slug}/{self.name}"


class Delivery(models.Model):
    """One notification to one notifier, and how sending it went. Made by `services.notify`
    (which returns at once); a Celery task on the control queue sends it, retrying with
    exponential backoff (HIVEMIND_NOTIFIER_ATTEMPTS, HIVEMIND_NOTIFIER_BACKOFF)."""

    class State(models.TextChoices):
        PENDING = "pending"  # waiting for its next attempt (next_attempt_at)
        SENDING = "sending"  # an attempt is running
        DELIVERED = "delivered"
        FAILED = "failed"  # every attempt failed: last_error says what the peer answered

    class Status(models.TextChoices):
        FIRING = "firing"
        RESOLVED = "resolved"

    notifier = models.ForeignKey(Notifier, on_delete=models.CASCADE, related_name="deliveries")
    group_key = models.CharField(max_length=255)
    status = models.CharField(max_length=8, choices=Status.choices)
    # Times given as datetimes are stored as ISO 8601 text, as the notification's contract says.
    payload = models.JSONField(encoder=DjangoJSONEncoder, help_text="the notification as it is sent")
    state = models.CharField(max_length=10, choices=State.choices, default=State.PENDING)
    attempts = models.PositiveIntegerField(default=0)
    max_attempts = models.PositiveIntegerField(default=1)
    last_error = models.TextField(
        blank=True, default="", help_text="what the peer answered (or why it was not reached)"
    )
    answer = models.TextField(blank=True, default="", help_text="what the peer answered when it took it")
    history = models.JSONField(default=list, blank=True, help_text="one entry per attempt: at, ok, error, seconds")
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    delivered_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-created_at", "-pk"]
        verbose_name_plural = "deliveries"
        indexes = [models.Index(fields=["state", "next_attempt_at"], name="delivery_due")]

    def __str__(self) -> str:
        return f"{self.notifier} {self.status} {self.group_key} ({self.state})"
