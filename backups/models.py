"""Backup locations: where a tenant's backup repositories live (a directory, an S3 bucket, an
Azure Blob container, a GCS bucket). Their credentials are sealed with the tenant's keys (a
platform location's: with a key derived from the master key; backups/sealing.py) and never
returned; `config` holds only what may be shown."""

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

    # Null: a platform location (platform staff's): every tenant may back up into it by name,
    # each into a repository of its own under tenants/<slug>/ (backups/services.py store_for).
    tenant = models.ForeignKey("tenants.Tenant", null=True, blank=True, on_delete=models.PROTECT, related_name="+")
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
        constraints = [
            models.UniqueConstraint(fields=["tenant", "name"], name="backup_location_name_unique_in_tenant"),
            models.UniqueConstraint(fields=["name"], condition=models.Q(tenant__isnull=True),
                                    name="backup_location_name_unique_in_platform"),
        ]  # fmt: skip

    def __str__(self) -> str:
        return f"{self.tenant.slug if self.tenant_id else 'platform'}/{self.name}"

    @property
    def is_platform(self) -> bool:
        return self.tenant_id is None


class BackupPolicy(TenantOwned):
    """What to back up, where, when, and how many backups to keep. Its schedules are
    django-celery-beat periodic tasks named after it (`backup-policy-<id>`, `backup-verify-<id>`),
    kept in step by backups/policies.py, so beat and the admin show them."""

    class Scope(models.TextChoices):
        TENANT = "tenant"  # the tenant's whole configuration and every volume
        APPS = "apps"  # the named apps (their configuration) and the volumes they mount
        VOLUMES = "volumes"  # the named volumes (their definitions and data)

    deleted_with_tenant = False

    name = models.CharField(max_length=63, help_text="a DNS label, unique in the tenant")
    location = models.ForeignKey(BackupLocation, on_delete=models.PROTECT, related_name="policies")
    scope = models.CharField(max_length=8, choices=Scope.choices, default=Scope.TENANT)
    names = models.JSONField(default=list, blank=True, help_text="the apps or volumes of the scope, by name")
    schedule = models.CharField(max_length=100, blank=True, help_text="when, as cron (UTC); blank: on demand only")
    keep_last = models.PositiveIntegerField(default=0)
    keep_hourly = models.PositiveIntegerField(default=0)
    keep_daily = models.PositiveIntegerField(default=0)
    keep_weekly = models.PositiveIntegerField(default=0)
    keep_monthly = models.PositiveIntegerField(default=0)
    verify_schedule = models.CharField(max_length=100, blank=True, help_text="when to verify, as cron (UTC)")
    verify_read_percent = models.PositiveSmallIntegerField(
        default=0, help_text="share of the data a scheduled verify downloads and checks (0: structure only)"
    )
    enabled = models.BooleanField(default=True)
    last_success_at = models.DateTimeField(null=True, blank=True)
    last_failure_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["tenant", "name"]
        verbose_name_plural = "backup policies"
        constraints = [models.UniqueConstraint(fields=["tenant", "name"], name="backup_policy_name_unique_in_tenant")]

    def __str__(self) -> str:
        return f"{self.tenant.slug}/{self.name}"


class Backup(TenantOwned):
    """One backup run and what it stored: the tenant's configuration document and each
    volume's data, as snapshots in the location's repository (backups/repository/)."""

    class Status(models.TextChoices):
        PENDING = "pending"
        RUNNING = "running"
        SUCCEEDED = "succeeded"
        FAILED = "failed"  # error says why; nothing of it is visible in the repository
        DELETING = "deleting"  # being forgotten in the repository

    class Verified(models.TextChoices):
        UNVERIFIED = "unverified"
        OK = "ok"
        DAMAGED = "damaged"  # verify_report names the objects, volumes and files

    # Records of what a location holds: they go with the tenant, and with their location (the
    # data stays where it is; a location's repository can be listed again from its store).
    deleted_with_tenant = True

    location = models.ForeignKey(BackupLocation, on_delete=models.CASCADE, related_name="backups")
    policy = models.ForeignKey(BackupPolicy, on_delete=models.SET_NULL, null=True, blank=True, related_name="backups")
    scope = models.CharField(max_length=8, choices=BackupPolicy.Scope.choices, default=BackupPolicy.Scope.TENANT)
    names = models.JSONField(default=list, blank=True)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.PENDING)
    workflow = models.ForeignKey("workflows.Workflow", on_delete=models.SET_NULL, null=True, blank=True,
                                 related_name="+")  # fmt: skip
    repository_id = models.CharField(max_length=64, blank=True)
    state_snapshot = models.CharField(max_length=64, blank=True, help_text="the configuration document's snapshot")
    volumes = models.JSONField(
        default=list, blank=True,
        help_text="per volume: name, snapshot (in the repository), size, files, bytes_read, bytes_new",
    )  # fmt: skip
    files = models.BigIntegerField(default=0)
    bytes_read = models.BigIntegerField(default=0)
    bytes_new = models.BigIntegerField(default=0, help_text="bytes the repository did not hold yet (stored)")
    error = models.TextField(blank=True, default="")
    verified = models.CharField(max_length=10, choices=Verified.choices, default=Verified.UNVERIFIED)
    verified_at = models.DateTimeField(null=True, blank=True)
    verify_report = models.JSONField(default=dict, blank=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at", "-pk"]
        indexes = [models.Index(fields=["tenant", "status", "created_at"], name="backup_by_status")]

    def __str__(self) -> str:
        return f"backup {self.pk} of {self.tenant.slug} ({self.status})"


class Restore(TenantOwned):
    """Putting (part of) a backup back, into its own tenant or another (`tenant` is the one
    restored into). A dry run plans only: `plan` lists what would be created, replaced or left."""

    class Status(models.TextChoices):
        PENDING = "pending"
        RUNNING = "running"
        SUCCEEDED = "succeeded"
        FAILED = "failed"

    class Conflicts(models.TextChoices):
        SKIP = "skip"  # what exists stays as it is
        REPLACE = "replace"  # what exists is replaced by the backup's
        RENAME = "rename"  # the backup's comes back under a new name

    deleted_with_tenant = True  # history

    backup = models.ForeignKey(Backup, on_delete=models.SET_NULL, null=True, blank=True, related_name="restores")
    selection = models.JSONField(
        default=dict, blank=True,
        help_text="what to restore: {state, apps, volumes, files: {volume, paths, into_volume, into_path}}",
    )  # fmt: skip
    rename = models.JSONField(default=dict, blank=True, help_text="new names by kind: {apps: {old: new}, ...}")
    conflicts = models.CharField(max_length=8, choices=Conflicts.choices, default=Conflicts.SKIP)
    dry_run = models.BooleanField(default=False)
    at = models.DateTimeField(null=True, blank=True, help_text="point in time asked for (null: the backup's own)")
    plan = models.JSONField(default=list, blank=True, help_text="what was (or would be) created, replaced, left")
    result = models.JSONField(default=dict, blank=True)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.PENDING)
    workflow = models.ForeignKey("workflows.Workflow", on_delete=models.SET_NULL, null=True, blank=True,
                                 related_name="+")  # fmt: skip
    error = models.TextField(blank=True, default="")
    created_at = models.DateTimeField(auto_now_add=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-pk"]

    def __str__(self) -> str:
        return f"restore {self.pk} into {self.tenant.slug} ({self.status})"


class JournalEntry(models.Model):
    """One change to a tenant's restorable state, before and after, when and by whom: with the
    newest state backup before an instant T, the entries up to T give the state at T
    (backups/journal.py). Written from the audit log as changes are recorded."""

    class Action(models.TextChoices):
        PUT = "put"  # made or changed: `after` holds it
        DELETE = "delete"  # removed: `after` is null

    tenant = models.ForeignKey("tenants.Tenant", on_delete=models.CASCADE, related_name="+")
    at = models.DateTimeField(db_index=True)
    actor_name = models.CharField(max_length=150, blank=True)
    kind = models.CharField(max_length=16, help_text="what changed: app, or a section of the state document")
    name = models.CharField(max_length=63)
    action = models.CharField(max_length=8, choices=Action.choices)
    before = models.JSONField(null=True, blank=True)
    after = models.JSONField(null=True, blank=True)

    class Meta:
        ordering = ["at", "pk"]
        verbose_name_plural = "journal entries"
        indexes = [models.Index(fields=["tenant", "at"], name="journal_by_tenant_time")]

    def __str__(self) -> str:
        return f"{self.kind} {self.name} {self.action} at {self.at:%Y-%m-%d %H:%M:%S}"
