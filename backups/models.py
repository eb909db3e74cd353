"""Backup locations: where a tenant's backup repositories live (a directory, an S3 bucket, an
Azure Blob container, a GCS bucket). Their credentials are sealed with the tenant's keys
(backups/sealing.py) and never returned; `config` holds only what may be shown."""

from __future__ import annotations

from django.db import models

from hivemind.core.models import TenantOwned


class BackupLocation(TenantOwned):
    class Kind(models.TextChoices):
        LOCAL = "local"
        S3 = "s3"
        AZURE = "azure"
        GCS = "gcs"

    class Check(models.TextChoices):
        UNKNOWN = "unknown"  # never checked
        OK = "ok"
        FAILED = "failed"  # check_error says what the server answered

    # Deleted before the tenant, like its notifiers (listed by tenant_delete's 409): the data key
    # sealing the credentials belongs to the tenant key, which is PROTECTed.
    deleted_with_tenant = False

    name = models.CharField(max_length=63, help_text="a DNS label, unique in the tenant")
    kind = models.CharField(max_length=8, choices=Kind.choices)
    config = models.JSONField(default=dict, blank=True, help_text="where it is: path, bucket, endpoint, prefix...")
    sealed_secrets = models.BinaryField(default=b"", blank=True, editable=False, help_text="credentials, sealed")
    secret_names = models.JSONField(
        default=list, blank=True, editable=False, help_text="which credentials are set (names, never values)"
    )
    check_state = models.CharField(max_length=8, choices=Check.choices, default=Check.UNKNOWN)
    check_error = models.TextField(blank=True, default="", help_text="what the server answered at the last check")
    checked_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["tenant", "name"]
        constraints = [models.UniqueConstraint(fields=["tenant", "name"], name="backup_location_name_unique_in_tenant")]

    def __str__(self) -> str:
        return f"{self.tenant.slug}/{self.name}"
