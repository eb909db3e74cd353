"""The one scoped queryset: `.restrict(user, action)` narrows any tenant-owned query.

A user sees an object when (a) they are platform staff, (b) their role in the object's
tenant grants the tenant-level permission for the action (roles are stored as
django-guardian object permissions on the Tenant), or (c) they hold a guardian
permission on that single object (e.g. view on one app only).

`.restrict()` and `tenants_for()` read the user's grants when they are called (one small
query on guardian's tables) and filter by those keys, so the database can use the tenant
and primary-key indexes: a member's page costs what their tenant holds, not the platform.
"""

from __future__ import annotations

from django.contrib.auth import get_user_model
from django.contrib.auth.models import AnonymousUser, Permission
from django.contrib.contenttypes.models import ContentType
from django.db import DEFAULT_DB_ALIAS, connections, models
from guardian.utils import get_group_obj_perms_model, get_user_obj_perms_model

ACTIONS = ("view", "add", "change", "delete")
DEFAULT_TENANT_PERMISSIONS = {"view": "tenants.view_resources"}
WRITE_TENANT_PERMISSION = "tenants.operate_resources"


def tenant_permission_for(model: type[models.Model], action: str) -> str:
    perms = getattr(model, "tenant_permissions", {}) or {}
    return perms.get(action) or DEFAULT_TENANT_PERMISSIONS.get(action) or WRITE_TENANT_PERMISSION


def is_platform_staff(user) -> bool:
    return bool(user and user.is_authenticated and user.is_active and (user.is_staff or user.is_superuser))


def tenants_for(user, permission: str) -> models.QuerySet:
    """The tenants in which `user`'s role grants `permission` (a tenants.* codename)."""
    from tenants.models import Tenant

    if is_platform_staff(user):
        return Tenant.objects.all()
    if user is None or not user.is_authenticated or not user.is_active:
        return Tenant.objects.none()
    codename = permission.split(".", 1)[1]
    tenants, _ = _granted_keys(user, Tenant, codename, codename, using=DEFAULT_DB_ALIAS)
    return Tenant.objects.filter(pk__in=tenants)


def may_in_tenant(user, permission: str, tenant) -> bool:
    """Whether `user`'s role in `tenant` (a Tenant row the caller holds) grants `permission`: the
    same answer as `tenants_for(...).filter(pk=tenant.pk).exists()`, in one query, not two."""
    if is_platform_staff(user):
        return True
    if user is None or not user.is_authenticated or not user.is_active:
        return False
    from tenants.models import Tenant

    codename = permission.split(".", 1)[1]
    tenants, _ = _granted_keys(user, Tenant, codename, codename, using=DEFAULT_DB_ALIAS)
    return tenant.pk in tenants


def _grants_sql(connection) -> str:
    """SQL for the keys of the objects a user holds permissions on, directly or through a group.

    Written out rather than built by the ORM: this runs for every scoped request, and building
    the same query with two joins twice over cost 1.3-2 ms of the web process's CPU per request
    (the raw query 0.1 ms), a tenth of a scoped page (bench/api.py)."""
    q = connection.ops.quote_name
    by_user, by_group = get_user_obj_perms_model()._meta, get_group_obj_perms_model()._meta
    groups = get_user_model()._meta.get_field("groups")
    column = {
        "user": q(by_user.get_field("user").column),
        "group": q(by_group.get_field("group").column),
        "member": q(groups.m2m_column_name()),
        "member_group": q(groups.m2m_reverse_name()),
        "user_permission": q(by_user.get_field("permission").column),
        "group_permission": q(by_group.get_field("permission").column),
        "user_key": q(by_user.get_field("object_pk").column),
        "group_key": q(by_group.get_field("object_pk").column),
    }
    wanted = "p.content_type_id IN (%s, %s) AND p.codename IN (%s, %s)"
    # Only quoted table and column names from the models are formatted in; values are parameters.
    return (
        f"SELECT p.content_type_id, p.codename, o.{column['user_key']} FROM {q(by_user.db_table)} o"  # noqa: S608
        f" JOIN {q(Permission._meta.db_table)} p ON p.id = o.{column['user_permission']}"
        f" WHERE o.{column['user']} = %s AND {wanted}"
        f" UNION ALL SELECT p.content_type_id, p.codename, o.{column['group_key']} FROM {q(by_group.db_table)} o"
        f" JOIN {q(Permission._meta.db_table)} p ON p.id = o.{column['group_permission']}"
        f" JOIN {q(groups.remote_field.through._meta.db_table)} m ON m.{column['member_group']} = o.{column['group']}"
        f" WHERE m.{column['member']} = %s AND {wanted}"
    )


def _granted_keys(user, model: type[models.Model], tenant_codename: str, codename: str, using: str):
    """The tenants where `user` (or one of their groups) holds `tenant_codename`, and the objects
    of `model` on which they hold `codename`: guardian's object permissions, read in one query.

    restrict() filters with these keys as literal lists rather than guardian's subqueries:
    PostgreSQL cannot turn `IN (subquery) OR IN (subquery)` into index scans, so it read every
    row of the table (a member's page of apps cost as much as the whole platform's), and it
    cannot estimate a subquery's size, so it walked the list's index from the first tenant.
    With the keys it knows and uses the tenant and primary-key indexes (bench/api.py)."""
    from tenants.models import Tenant

    tenant_type = ContentType.objects.db_manager(using).get_for_model(Tenant).pk
    model_type = ContentType.objects.db_manager(using).get_for_model(model).pk
    params = [tenant_type, model_type, tenant_codename, codename]
    connection = connections[using]
    with connection.cursor() as cursor:
        cursor.execute(_grants_sql(connection), [user.pk, *params, user.pk, *params])
        rows = cursor.fetchall()
    tenants = [Tenant._meta.pk.to_python(key) for t, held, key in rows if (t, held) == (tenant_type, tenant_codename)]
    objects = [model._meta.pk.to_python(key) for t, held, key in rows if (t, held) == (model_type, codename)]
    return tenants, objects


class RestrictedQuerySet(models.QuerySet):
    def restrict(self, user: AnonymousUser | models.Model | None, action: str = "view") -> RestrictedQuerySet:
        if action not in ACTIONS:
            raise ValueError(f"unknown action {action!r}; expected one of {', '.join(ACTIONS)}")
        if is_platform_staff(user):
            return self
        if user is None or not user.is_authenticated or not user.is_active:
            return self.none()
        model = self.model
        tenant_codename = tenant_permission_for(model, action).split(".", 1)[1]
        codename = f"{action}_{model._meta.model_name}"
        tenants, objects = _granted_keys(user, model, tenant_codename, codename, using=self.db)
        return self.filter(models.Q(tenant__in=tenants) | models.Q(pk__in=objects))
