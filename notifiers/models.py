"""Notifiers: where a tenant's alerts are delivered (webhook, email, Slack-compatible webhook,
Prometheus Alertmanager). Their secrets are sealed with the tenant's keys (tenants/keys.py)
and never returned."""

from __future__ import annotations

from django.db import models

from hivemind.core.models import TenantOwned


class Notifier(TenantOwned):
    class Kind(models.TextChoices):
        WEBHOOK = "webhook"
        EMAIL = "email"
        SLACK = "slack"
        ALERTMANAGER = "alertmanager"

    deleted_with_tenant = True

    name = models.CharField(max_length=63, help_text="a DNS label, unique in the tenant")
    kind = models.CharField(max_length=16, choices=Kind.choices)
    config = models.JSONField(default=dict, blank=True, help_text="settings that are not secret (URL, SMTP host...)")
    sealed_secrets = models.BinaryField(default=b"", blank=True, editable=False, help_text="secrets, sealed")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["tenant", "name"]
        constraints = [models.UniqueConstraint(fields=["tenant", "name"], name="notifier_name_unique_in_tenant")]

    def __str__(self) -> str:
        return f"{self.tenant.slug}/{self.name}"
