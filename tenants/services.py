"""Writes for tenancy. Keyword-only, typed, one transaction each; every change is audited."""

from __future__ import annotations

import secrets
from datetime import datetime, timedelta

from django.apps import apps
from django.contrib.auth import get_user_model
from django.contrib.auth.hashers import make_password
from django.contrib.auth.password_validation import validate_password
from django.core.exceptions import ValidationError
from django.db import models, transaction
from django.utils import timezone
from guardian.shortcuts import assign_perm, remove_perm
from rest_framework.exceptions import AuthenticationFailed, PermissionDenied

from hivemind.core.errors import Conflict, QuotaExceeded, TenantNotActive
from hivemind.core.models import TenantOwned
from tenants.models import (
    ROLE_PERMISSIONS,
    TENANT_PERMISSION_CODENAMES,
    ApiToken,
    AuditEvent,
    Membership,
    QuotaReservation,
    Role,
    ServiceAccount,
    Tenant,
    TenantQuota,
    TenantUsage,
)
from tenants.quotas import RESOURCES, WARNING_PERCENT, usage_percent

User = get_user_model()
TOKEN_PREFIX = "hm_"  # noqa: S105 - a marker for secret scanners, not a secret


# --- audit ---------------------------------------------------------------------------------


def audit_record(
    *,
    actor,
    tenant: Tenant | None,
    action: str,
    obj: models.Model | None = None,
    changes: dict | None = None,
    actor_name: str | None = None,
) -> AuditEvent:
    """One audit row. `actor_name` names an actor that is no user (a failed login's typed name)."""
    known = actor is not None and actor.pk
    event = AuditEvent(
        tenant=tenant,
        tenant_slug=tenant.slug if tenant else "",
        actor=actor if known else None,
        actor_name=(actor.get_username() if known else actor_name or "system")[:150],
        action=action,
        object_type=obj._meta.label_lower if obj is not None else "",
        object_id=str(obj.pk) if obj is not None and obj.pk is not None else "",
        object_repr=str(obj)[:200] if obj is not None else "",
        changes=changes or {},
    )
    # The object itself, for the receivers of post_save (the backups journal reads an app's
    # values from it rather than the database); never stored.
    event.subject = obj
    event.save(force_insert=True)
    return event


# --- tenants -------------------------------------------------------------------------------


@transaction.atomic
def tenant_create(
    *,
    name: str,
    slug: str,
    created_by,
    description: str = "",
    isolation_level: str = Tenant.Isolation.SOFT,
    labels: dict | None = None,
) -> Tenant:
    tenant = Tenant(name=name, slug=slug, description=description, isolation_level=isolation_level, labels=labels or {})
    tenant.full_clean()
    tenant.save()
    TenantQuota.objects.create(tenant=tenant, **{r.field: r.default_limit for r in RESOURCES.values()})
    TenantUsage.objects.create(tenant=tenant, **{r.field: 0 for r in RESOURCES.values()})
    audit_record(
        actor=created_by,
        tenant=tenant,
        action="tenant.create",
        obj=tenant,
        changes={"name": name, "isolation_level": isolation_level},
    )
    return tenant


@transaction.atomic
def tenant_update(*, tenant: Tenant, actor, **fields) -> Tenant:
    allowed = {"name", "description", "isolation_level", "labels"}
    unknown = set(fields) - allowed
    if unknown:
        raise ValueError(f"cannot change {', '.join(sorted(unknown))}")
    changes = {k: v for k, v in fields.items() if getattr(tenant, k) != v}
    for key, value in changes.items():
        setattr(tenant, key, value)
    tenant.full_clean()
    tenant.save()
    if changes:
        audit_record(actor=actor, tenant=tenant, action="tenant.update", obj=tenant, changes=changes)
    return tenant


def _set_status(tenant: Tenant, status: str, actor, action: str) -> Tenant:
    locked = Tenant.objects.select_for_update().get(pk=tenant.pk)
    if locked.status == Tenant.Status.TERMINATING:
        raise Conflict(f"tenant {locked.slug} is being deleted", code="tenant_terminating")
    if locked.status != status:
        locked.status = status
        locked.save(update_fields=["status", "updated_at"])
        audit_record(actor=actor, tenant=locked, action=action, obj=locked)
    return locked


@transaction.atomic
def tenant_suspend(*, tenant: Tenant, actor) -> Tenant:
    """New work is refused while suspended; nothing stored is touched."""
    return _set_status(tenant, Tenant.Status.SUSPENDED, actor, "tenant.suspend")


@transaction.atomic
def tenant_resume(*, tenant: Tenant, actor) -> Tenant:
    return _set_status(tenant, Tenant.Status.ACTIVE, actor, "tenant.resume")


def tenant_require_active(tenant: Tenant) -> None:
    """Called by every service that starts new work for a tenant."""
    if tenant.status != Tenant.Status.ACTIVE:
        raise TenantNotActive(f"tenant {tenant.slug} is {tenant.status}: new work is refused")


def tenant_owned_resources(tenant: Tenant) -> dict[str, int]:
    """What the tenant still owns that must go before it can be deleted, by kind."""
    owned: dict[str, int] = {}
    for model in apps.get_models():
        if not issubclass(model, TenantOwned) or model.deleted_with_tenant:
            continue
        count = model.objects.filter(tenant=tenant, **model.blocks_tenant_deletion).count()
        if count:
            owned[str(model._meta.verbose_name_plural)] = count
    return owned


@transaction.atomic
def tenant_delete(*, tenant: Tenant, confirm: str, actor) -> None:
    if confirm != tenant.slug:
        raise ValidationError({"confirm": f"type the tenant's slug ({tenant.slug}) to confirm its deletion"})
    locked = Tenant.objects.select_for_update().get(pk=tenant.pk)
    owned = tenant_owned_resources(locked)
    if owned:
        listing = ", ".join(f"{count} {kind}" for kind, count in sorted(owned.items()))
        raise Conflict(f"tenant {locked.slug} still owns: {listing}; delete them first", code="tenant_not_empty")
    audit_record(actor=actor, tenant=locked, action="tenant.delete", obj=locked)
    for model in apps.get_models():  # what is left does not block (released reservations, the default network)
        if issubclass(model, TenantOwned) and not model.deleted_with_tenant:
            model.objects.filter(tenant=locked).delete()
    for membership in Membership.objects.filter(tenant=locked).select_related("user", "tenant"):
        membership.delete()  # one by one, so each signal takes the role's permissions away
    locked.delete()


# --- memberships and roles -----------------------------------------------------------------


def role_permissions_sync(*, membership: Membership, removed: bool = False) -> None:
    """Make the user's guardian permissions on the tenant exactly those of their role.

    Called from Membership's save and delete signals, so the admin, the shell and the
    services all keep roles and permissions in step.
    """
    user, tenant = membership.user, membership.tenant
    granted = set() if removed else set(ROLE_PERMISSIONS[membership.role])
    for codename in TENANT_PERMISSION_CODENAMES:
        if codename in granted:
            assign_perm(f"tenants.{codename}", user, tenant)
        else:
            remove_perm(f"tenants.{codename}", user, tenant)


def _is_owner(actor, tenant: Tenant) -> bool:
    from hivemind.core.scoping import is_platform_staff

    return is_platform_staff(actor) or Membership.objects.filter(tenant=tenant, user=actor, role=Role.OWNER).exists()


def _check_owner_rules(*, tenant: Tenant, actor, roles: tuple[str | None, ...]) -> None:
    if Role.OWNER in roles and actor is not None and not _is_owner(actor, tenant):
        # A refusal of the caller's role, not of the tenant's state: 403, as docs/roles.md says.
        raise PermissionDenied(
            "only an owner of the tenant may grant or take away the owner role", code="owner_required"
        )


def _check_not_last_owner(membership: Membership) -> None:
    if membership.role == Role.OWNER:
        owners = Membership.objects.select_for_update().filter(tenant=membership.tenant, role=Role.OWNER)
        if owners.count() <= 1:
            raise Conflict(
                f"{membership.user} is the last owner of {membership.tenant}; name another owner first",
                code="last_owner",
            )


@transaction.atomic
def membership_add(*, tenant: Tenant, user, role: str, actor) -> Membership:
    if role not in Role.values:
        raise ValidationError({"role": f"unknown role {role!r}; expected one of {', '.join(Role.values)}"})
    _check_owner_rules(tenant=tenant, actor=actor, roles=(role,))
    if Membership.objects.filter(tenant=tenant, user=user).exists():
        raise ValidationError({"user": f"{user} is already a member of {tenant}"})
    membership = Membership.objects.create(tenant=tenant, user=user, role=role)
    audit_record(
        actor=actor,
        tenant=tenant,
        action="membership.add",
        obj=membership,
        changes={"user": user.get_username(), "role": role},
    )
    return membership


@transaction.atomic
def membership_change_role(*, membership: Membership, role: str, actor) -> Membership:
    if role not in Role.values:
        raise ValidationError({"role": f"unknown role {role!r}; expected one of {', '.join(Role.values)}"})
    if role == membership.role:
        return membership
    _check_owner_rules(tenant=membership.tenant, actor=actor, roles=(role, membership.role))
    _check_not_last_owner(membership)
    old = membership.role
    membership.role = role
    membership.save(update_fields=["role"])
    audit_record(
        actor=actor, tenant=membership.tenant, action="membership.change", obj=membership, changes={"role": [old, role]}
    )
    return membership


@transaction.atomic
def membership_remove(*, membership: Membership, actor) -> None:
    _check_owner_rules(tenant=membership.tenant, actor=actor, roles=(membership.role,))
    _check_not_last_owner(membership)
    audit_record(
        actor=actor,
        tenant=membership.tenant,
        action="membership.remove",
        obj=membership,
        changes={"user": membership.user.get_username(), "role": membership.role},
    )
    membership.delete()


# --- service accounts and tokens -----------------------------------------------------------


@transaction.atomic
def service_account_create(*, tenant: Tenant, name: str, role: str, actor, description: str = "") -> ServiceAccount:
    tenant_require_active(tenant)
    if role not in Role.values or role == Role.OWNER:
        raise ValidationError({"role": f"expected one of admin, operator, viewer, got {role!r}"})
    account = ServiceAccount(tenant=tenant, name=name, description=description, created_by=actor)
    account.full_clean(exclude=["user"])
    username = f"sa.{tenant.slug}.{name}"
    if User.objects.filter(username=username).exists():
        raise ValidationError({"name": f"a service account named {name} already exists in {tenant}"})
    user = User.objects.create(username=username, is_active=True)
    user.set_unusable_password()
    user.save(update_fields=["password"])
    account.user = user
    account.save()
    Membership.objects.create(tenant=tenant, user=user, role=role)
    audit_record(actor=actor, tenant=tenant, action="service_account.create", obj=account, changes={"role": role})
    return account


@transaction.atomic
def service_account_delete(*, account: ServiceAccount, actor) -> None:
    audit_record(actor=actor, tenant=account.tenant, action="service_account.delete", obj=account)
    account.user.delete()  # cascades to the account, its membership and its tokens


@transaction.atomic
def api_token_create(*, user, name: str, expires_at: datetime | None = None, actor=None) -> tuple[ApiToken, str]:
    """Make a token for `user`; return the row and the token, which is never stored or shown again."""
    if expires_at is not None and expires_at <= timezone.now():
        raise ValidationError({"expires_at": "must be in the future"})
    plain = TOKEN_PREFIX + secrets.token_urlsafe(32)
    token = ApiToken.objects.create(
        user=user, name=name, prefix=plain[:10], digest=ApiToken.digest_of(plain), expires_at=expires_at
    )
    account = getattr(user, "service_account", None)
    audit_record(actor=actor or user, tenant=account.tenant if account else None, action="token.create", obj=token)
    return token, plain


@transaction.atomic
def api_token_revoke(*, token: ApiToken, actor) -> ApiToken:
    if token.revoked_at is None:
        token.revoked_at = timezone.now()
        token.save(update_fields=["revoked_at"])
        account = getattr(token.user, "service_account", None)
        audit_record(actor=actor, tenant=account.tenant if account else None, action="token.revoke", obj=token)
    return token


# --- users and password logins ------------------------------------------------------------

SERVICE_ACCOUNT_PREFIX = "sa."  # service accounts' user names: sa.<tenant>.<name>
LOGIN_TOKEN_DAYS = 30  # what a password login's token lives by default
LOGIN_TOKEN_MAX_DAYS = 365
USER_FIELDS = ("email", "first_name", "last_name", "is_staff")


class LoginFailed(AuthenticationFailed):
    """One answer for every failed login: it never says which part was wrong."""

    default_detail = "wrong user name or password"


def generate_password() -> str:
    """20 URL-safe characters (120 bits): what a user gets when nobody chose a password."""
    return secrets.token_urlsafe(15)


def _check_username(username: str) -> None:
    if not username:
        raise ValidationError({"username": "required"})
    try:
        User._meta.get_field(User.USERNAME_FIELD).run_validators(username)
    except ValidationError as exc:
        raise ValidationError({"username": exc.messages}) from None
    if username.startswith(SERVICE_ACCOUNT_PREFIX):
        raise ValidationError({"username": f"names starting with {SERVICE_ACCOUNT_PREFIX} belong to service accounts"})
    if User.objects.filter(**{f"{User.USERNAME_FIELD}__iexact": username}).exists():
        raise ValidationError({"username": f"a user named {username} already exists"})


def _check_password(password: str, user) -> None:
    """AUTH_PASSWORD_VALIDATORS, their messages under `password`."""
    try:
        validate_password(password, user)
    except ValidationError as exc:
        raise ValidationError({"password": exc.messages}) from None


@transaction.atomic
def user_create(
    *,
    username: str,
    actor,
    password: str | None = None,
    email: str = "",
    first_name: str = "",
    last_name: str = "",
    is_staff: bool = False,
) -> tuple[models.Model, str | None]:
    """Make a person's account. Without `password` one is generated: returned here, never again."""
    _check_username(username)
    generated = None if password else generate_password()
    user = User(username=username, email=email, first_name=first_name, last_name=last_name, is_staff=is_staff)
    user.full_clean(exclude=["password", "username"])
    if password:
        _check_password(password, user)
    user.set_password(password or generated)
    user.save()
    audit_record(
        actor=actor, tenant=None, action="user.create", obj=user, changes={"username": username, "is_staff": is_staff}
    )
    return user, generated


@transaction.atomic
def user_update(*, user, actor, **fields) -> models.Model:
    unknown = set(fields) - set(USER_FIELDS)
    if unknown:
        raise ValueError(f"cannot change {', '.join(sorted(unknown))}")
    if fields.get("is_staff") is False and user.pk == getattr(actor, "pk", None):
        raise Conflict("you cannot take away your own staff status", code="self_demotion")
    changes = {k: v for k, v in fields.items() if getattr(user, k) != v}
    for key, value in changes.items():
        setattr(user, key, value)
    user.full_clean(exclude=["password"])
    user.save()
    if changes:
        audit_record(actor=actor, tenant=None, action="user.update", obj=user, changes=changes)
    return user


@transaction.atomic
def user_set_password(*, user, actor, password: str | None = None) -> str | None:
    """Set (or generate, when none is given) a user's password; the generated one is returned once.

    The user's API tokens keep working: revoke them, or deactivate the user, to shut them out."""
    generated = None if password else generate_password()
    if password:
        _check_password(password, user)
    user.set_password(password or generated)
    user.save(update_fields=["password"])
    audit_record(actor=actor, tenant=None, action="user.password_set", obj=user)
    return generated


@transaction.atomic
def user_deactivate(*, user, actor) -> models.Model:
    """The user can no longer log in, and their tokens and sessions stop working at once
    (BearerTokenAuthentication and Django's session backend both refuse inactive users)."""
    if user.pk == getattr(actor, "pk", None):
        raise Conflict("you cannot deactivate yourself", code="self_deactivation")
    if user.is_active:
        user.is_active = False
        user.save(update_fields=["is_active"])
        audit_record(actor=actor, tenant=None, action="user.deactivate", obj=user)
    return user


@transaction.atomic
def user_activate(*, user, actor) -> models.Model:
    if not user.is_active:
        user.is_active = True
        user.save(update_fields=["is_active"])
        audit_record(actor=actor, tenant=None, action="user.activate", obj=user)
    return user


def login_token_create(
    *, username: str, password: str, token_name: str, address: str, expires_in_days: int = LOGIN_TOKEN_DAYS
) -> tuple[ApiToken, str]:
    """Check a user name and password and make an API token for the caller (the CLI's login).

    Every failure (no such user, wrong password, inactive user, a service account, which has no
    password) raises the same LoginFailed after hashing the password once, so neither the
    answer nor its time tells which it was. Success and failure are both audited; a failure's
    row carries the typed name and the reason, for staff's eyes only.
    """
    if not 1 <= expires_in_days <= LOGIN_TOKEN_MAX_DAYS:
        raise ValidationError({"expires_in_days": f"expected 1 to {LOGIN_TOKEN_MAX_DAYS} days, got {expires_in_days}"})
    user = User._default_manager.filter(**{User.USERNAME_FIELD: username}).first()
    if user is None or not user.password or not user.has_usable_password():
        make_password(password)  # the time a check would have taken
        reason = "unknown user" if user is None else "no password (a service account, or never set)"
    elif not user.check_password(password):
        reason = "wrong password"
    elif not user.is_active:
        reason = "inactive user"
    else:
        reason = ""
    if reason:
        audit_record(
            actor=None,
            actor_name=username,
            tenant=None,
            action="auth.login_failed",
            changes={"address": address, "reason": reason},
        )
        raise LoginFailed()
    with transaction.atomic():
        user.last_login = timezone.now()
        user.save(update_fields=["last_login"])
        token, plain = api_token_create(
            user=user, name=token_name, expires_at=timezone.now() + timedelta(days=expires_in_days), actor=user
        )
        audit_record(
            actor=user, tenant=None, action="auth.login", obj=token, changes={"address": address, "token": token_name}
        )
    return token, plain


# --- quotas --------------------------------------------------------------------------------


@transaction.atomic
def quota_reserve(
    *, tenant: Tenant, amounts: dict[str, int], actor, reason: str = ""
) -> tuple[QuotaReservation, list[str]]:
    """Check and hold `amounts` against the quota, atomically with the caller's transaction.

    The tenant's usage row is updated last (`_hold`): concurrent reservations queue up on its
    lock from that statement to their commit only, and can never overshoot a limit together.
    Callers do the rest of their work before this, for the same reason. Returns the
    reservation and warnings for every resource at or above 80 % afterwards.
    """
    tenant_require_active(tenant)
    reservation = QuotaReservation.objects.create(tenant=tenant, amounts=amounts, reason=reason, created_by=actor)
    audit_record(actor=actor, tenant=tenant, action="quota.reserve", obj=reservation, changes=amounts)
    warnings = _hold(tenant, amounts)
    return reservation, warnings


def _hold(tenant: Tenant, amounts: dict[str, int]) -> list[str]:
    """Add `amounts` to the tenant's usage unless a limit would be exceeded.

    The addition comes first and the check after, on the figures it returned: a refusal
    raises with the usage row already updated, so this runs only inside an atomic block,
    whose rollback undoes it. (Reading the row FOR UPDATE, then saving it, held the lock a
    round trip longer, and every deploy of a tenant queues on that lock.)
    """
    if not transaction.get_connection().in_atomic_block:
        raise RuntimeError("a quota hold must run inside a transaction (its refusal is undone by the rollback)")
    quota = TenantQuota.objects.get(tenant=tenant)  # read before the lock; quota_set does not wait on it
    after = _add_usage(tenant.pk, amounts)
    warnings = []
    for name, amount in amounts.items():
        resource = RESOURCES[name]
        total, limit = after[resource.field], getattr(quota, resource.field)
        if limit is not None and amount > 0 and total > limit:
            raise QuotaExceeded(
                tenant=tenant.slug,
                resource=name,
                limit=limit,
                used=total - amount,
                requested=amount,
                unit=resource.unit,
            )
        percent = usage_percent(total, limit)
        if percent is not None and percent >= WARNING_PERCENT and amount > 0:
            warnings.append(f"{name} at {percent:g} % of the quota ({total} of {limit} {resource.unit})")
    return warnings


def _add_usage(tenant_id: int, amounts: dict[str, int]) -> dict[str, int]:
    """One UPDATE ... RETURNING: each amount added to the tenant's usage (never below 0); the
    new figures by field. It takes the row's lock, held until the transaction ends."""
    connection = transaction.get_connection()
    quote = connection.ops.quote_name
    fields = [RESOURCES[name].field for name in amounts]
    if not fields:
        return {}
    greatest = "GREATEST" if connection.vendor == "postgresql" else "MAX"  # SQLite's MAX(a, b) is scalar
    sets = ", ".join(f"{quote(field)} = {greatest}(0, COALESCE({quote(field)}, 0) + %s)" for field in fields)
    # The names are the model's own (RESOURCES' fields), quoted; the amounts are parameters.
    table, returning = quote(TenantUsage._meta.db_table), ", ".join(quote(field) for field in fields)
    sql = f"UPDATE {table} SET {sets} WHERE {quote('tenant_id')} = %s RETURNING {returning}"  # noqa: S608
    with connection.cursor() as cursor:
        cursor.execute(sql, [int(amount) for amount in amounts.values()] + [tenant_id])
        row = cursor.fetchone()
    if row is None:
        raise TenantUsage.DoesNotExist(f"tenant {tenant_id} has no usage row")
    return dict(zip(fields, row, strict=True))


@transaction.atomic
def quota_adjust(*, reservation: QuotaReservation, amounts: dict[str, int], actor) -> list[str]:
    """Grow (positive amounts, checked against the quota like a reservation) or shrink
    (negative) a held reservation in place: a volume that is expanded holds more storage."""
    locked = QuotaReservation.objects.select_for_update().get(pk=reservation.pk)
    if locked.state != QuotaReservation.State.HELD:
        raise ValueError(f"reservation {locked.pk} is released: nothing to adjust")
    for name, amount in amounts.items():
        locked.amounts[name] = max(0, locked.amounts.get(name, 0) + amount)
    locked.save(update_fields=["amounts"])
    audit_record(actor=actor, tenant=locked.tenant, action="quota.adjust", obj=locked, changes=amounts)
    return _hold(locked.tenant, amounts)  # last: see _hold


@transaction.atomic
def quota_release(*, reservation: QuotaReservation, actor) -> QuotaReservation:
    locked = QuotaReservation.objects.select_for_update().get(pk=reservation.pk)
    if locked.state == QuotaReservation.State.RELEASED:
        return locked
    locked.state, locked.released_at = QuotaReservation.State.RELEASED, timezone.now()
    locked.save(update_fields=["state", "released_at"])
    audit_record(actor=actor, tenant=locked.tenant, action="quota.release", obj=locked, changes=locked.amounts)
    _add_usage(locked.tenant_id, {name: -amount for name, amount in locked.amounts.items()})  # last: see _hold
    return locked


@transaction.atomic
def quota_set(*, tenant: Tenant, limits: dict[str, int | None], actor) -> TenantQuota:
    quota = TenantQuota.objects.select_for_update().get(tenant=tenant)
    for name, limit in limits.items():
        setattr(quota, RESOURCES[name].field, limit)
    quota.save()
    audit_record(actor=actor, tenant=tenant, action="quota.set", obj=quota, changes=limits)
    return quota
