"""Tenants, memberships and roles, quotas and usage, service accounts, tokens, audit."""

from __future__ import annotations

import hashlib

from django.conf import settings
from django.core.validators import RegexValidator
from django.db import models
from django.utils import timezone

from hivemind.core.models import TenantOwned
from hivemind.core.scoping import RestrictedQuerySet, tenants_for

slug_validator = RegexValidator(
    r"^[a-z0-9]([a-z0-9-]{0,48}[a-z0-9])?$",
    "use 1-50 lower-case letters, digits and '-', starting and ending with a letter or digit",
)


class Role(models.TextChoices):
    OWNER = "owner", "Owner"
    ADMIN = "admin", "Admin"
    OPERATOR = "operator", "Operator"
    VIEWER = "viewer", "Viewer"


# What each role may do in its tenant, as guardian permissions on the Tenant object.
# docs/roles.md shows this table to users; the shared API suite (tests/api_suite.py) checks it.
ROLE_PERMISSIONS: dict[str, tuple[str, ...]] = {
    Role.VIEWER: ("view_tenant", "view_resources"),
    Role.OPERATOR: ("view_tenant", "view_resources", "operate_resources"),
    Role.ADMIN: ("view_tenant", "view_resources", "operate_resources", "manage_members", "view_audit", "change_tenant"),
    Role.OWNER: (
        "view_tenant",
        "view_resources",
        "operate_resources",
        "manage_members",
        "view_audit",
        "change_tenant",
        "delete_tenant",
    ),
}
TENANT_PERMISSION_CODENAMES = sorted({perm for perms in ROLE_PERMISSIONS.values() for perm in perms})


# Members and service accounts: every member sees them, those who manage members change them.
MEMBER_MANAGED = {
    "view": "tenants.view_tenant",
    "add": "tenants.manage_members",
    "change": "tenants.manage_members",
    "delete": "tenants.manage_members",
}


class TenantQuerySet(RestrictedQuerySet):
    def restrict(self, user, action: str = "view") -> TenantQuerySet:
        return self.filter(pk__in=tenants_for(user, f"tenants.{action}_tenant").values("pk"))


class Tenant(models.Model):
    class Isolation(models.TextChoices):
        HARD = "hard", "Hard: own nodes, own networks"
        SOFT = "soft", "Soft: shared nodes, own networks"
        NETWORK_ONLY = "network-only", "Network only: own networks"

    class Status(models.TextChoices):
        ACTIVE = "active", "Active"
        SUSPENDED = "suspended", "Suspended"
        TERMINATING = "terminating", "Terminating"

    name = models.CharField(max_length=100)
    slug = models.CharField(max_length=50, unique=True, validators=[slug_validator])
    description = models.TextField(blank=True)
    isolation_level = models.CharField(max_length=16, choices=Isolation.choices, default=Isolation.SOFT)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.ACTIVE)
    labels = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    objects = TenantQuerySet.as_manager()

    class Meta:
        ordering = ["slug"]
        permissions = [
            ("view_resources", "View the tenant's resources"),
            ("operate_resources", "Create, change and delete the tenant's resources"),
            ("manage_members", "Manage the tenant's members and service accounts"),
            ("view_audit", "Read the tenant's audit log"),
        ]

    def __str__(self) -> str:
        return self.slug

    @property
    def is_active(self) -> bool:
        return self.status == self.Status.ACTIVE


class Membership(TenantOwned):
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="memberships")
    role = models.CharField(max_length=16, choices=Role.choices)
    created_at = models.DateTimeField(auto_now_add=True)

    tenant_permissions = MEMBER_MANAGED
    deleted_with_tenant = True

    class Meta:
        ordering = ["tenant__slug", "user__username"]
        constraints = [models.UniqueConstraint(fields=["tenant", "user"], name="one_membership_per_user")]

    def __str__(self) -> str:
        return f"{self.user} is {self.role} of {self.tenant}"


class ServiceAccount(TenantOwned):
    """A non-human member of one tenant, for automation; it authenticates with API tokens only."""

    name = models.CharField(max_length=50, validators=[slug_validator])
    description = models.TextField(blank=True)
    user = models.OneToOneField(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="service_account")
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)

    tenant_permissions = MEMBER_MANAGED

    class Meta:
        ordering = ["tenant__slug", "name"]
        constraints = [models.UniqueConstraint(fields=["tenant", "name"], name="unique_service_account_name")]

    def __str__(self) -> str:
        return f"{self.tenant}/{self.name}"

    @property
    def role(self) -> str | None:
        membership = Membership.objects.filter(tenant=self.tenant, user=self.user).first()
        return membership.role if membership else None


class ApiToken(models.Model):
    """A bearer token. Only its SHA-256 is stored; the token itself is shown once, at creation."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="api_tokens")
    name = models.CharField(max_length=100)
    prefix = models.CharField(max_length=12, help_text="The token's first characters, to recognise it.")
    digest = models.CharField(max_length=64, unique=True)
    created_at = models.DateTimeField(auto_now_add=True)
    expires_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)
    last_used_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.name} ({self.prefix}…) of {self.user}"

    @staticmethod
    def digest_of(token: str) -> str:
        return hashlib.sha256(token.encode()).hexdigest()

    @property
    def state(self) -> str:
        if self.revoked_at:
            return "revoked"
        if self.expires_at and self.expires_at <= timezone.now():
            return "expired"
        return "active"


# Quotas: one field per resource; the API names and units are in tenants.quotas.RESOURCES.
class _ResourceAmounts(models.Model):
    cpu_millis = models.PositiveBigIntegerField(null=True, blank=True)
    memory_bytes = models.PositiveBigIntegerField(null=True, blank=True)
    containers = models.PositiveIntegerField(null=True, blank=True)
    apps = models.PositiveIntegerField(null=True, blank=True)
    volumes = models.PositiveIntegerField(null=True, blank=True)
    storage_bytes = models.PositiveBigIntegerField(null=True, blank=True)
    networks = models.PositiveIntegerField(null=True, blank=True)
    backups = models.PositiveIntegerField(null=True, blank=True)

    class Meta:
        abstract = True


class TenantQuota(_ResourceAmounts):
    """Limits; an empty field means no limit."""

    tenant = models.OneToOneField(Tenant, on_delete=models.CASCADE, related_name="quota")

    def __str__(self) -> str:
        return f"quota of {self.tenant}"


class TenantUsage(_ResourceAmounts):
    """What the tenant holds now. Locked with SELECT ... FOR UPDATE by every reservation."""

    tenant = models.OneToOneField(Tenant, on_delete=models.CASCADE, related_name="usage")

    def __str__(self) -> str:
        return f"usage of {self.tenant}"


class QuotaReservation(TenantOwned):
    """Capacity held against the tenant's quota: by a workflow while it creates work, or by hand."""

    class State(models.TextChoices):
        HELD = "held", "Held"
        RELEASED = "released", "Released"

    amounts = models.JSONField(help_text="Resource name -> amount in its base unit.")
    reason = models.CharField(max_length=200, blank=True)
    state = models.CharField(max_length=16, choices=State.choices, default=State.HELD)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)
    released_at = models.DateTimeField(null=True, blank=True)

    blocks_tenant_deletion = {"state": State.HELD}

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"reservation {self.pk} of {self.tenant}"


class AuditEvent(models.Model):
    """Who did what to which object in which tenant. Kept when the tenant is deleted."""

    tenant = models.ForeignKey(Tenant, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    tenant_slug = models.CharField(max_length=50, blank=True)
    actor = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+")
    actor_name = models.CharField(max_length=150)
    action = models.CharField(max_length=50)
    object_type = models.CharField(max_length=100)
    object_id = models.CharField(max_length=64, blank=True)
    object_repr = models.CharField(max_length=200, blank=True)
    changes = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    objects = RestrictedQuerySet.as_manager()
    tenant_permissions = {"view": "tenants.view_audit"}

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return f"{self.actor_name} {self.action} {self.object_type} {self.object_repr}"


# Keys (tenants/keys.py owns them): never shown by the API or the admin, never logged.
class TenantKey(models.Model):
    """A tenant's key-encryption key, wrapped by the platform's master key. Rotation adds a
    version and retires the previous one (its wrapped bytes erased once nothing uses it)."""

    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="+")
    version = models.PositiveIntegerField()
    nonce = models.BinaryField(max_length=12)
    wrapped = models.BinaryField(max_length=64, help_text="AES-256-GCM of the key under the master key")
    active = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)
    retired_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["tenant", "version"]
        constraints = [
            models.UniqueConstraint(fields=["tenant", "version"], name="tenant_key_version_unique"),
            models.UniqueConstraint(fields=["tenant"], condition=models.Q(active=True), name="tenant_key_one_active"),
        ]

    def __str__(self) -> str:
        return f"key v{self.version} of tenant {self.tenant_id}"


class WrappedKey(models.Model):
    """One object's data key (a volume's, a backup repository's...), wrapped by its tenant's
    key; the associated data binds it to the tenant, the purpose and the object."""

    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="+")
    purpose = models.CharField(max_length=32, help_text="what the key encrypts, e.g. volume")
    object_id = models.CharField(max_length=64)
    key_version = models.PositiveIntegerField(help_text="the tenant key version that wraps it")
    nonce = models.BinaryField(max_length=12)
    wrapped = models.BinaryField(max_length=64)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["tenant", "purpose", "object_id"]
        constraints = [
            models.UniqueConstraint(fields=["tenant", "purpose", "object_id"], name="wrapped_key_one_per_object")
        ]

    def __str__(self) -> str:
        return f"{self.purpose} key of {self.object_id} (tenant {self.tenant_id})"
