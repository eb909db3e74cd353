"""The dashboard's tenant context and its scoping: the same rules as the API, applied per page.

The API acts in the tenant named by a header; a browser has no header, so the dashboard keeps
the current tenant in the session (the tenant switcher changes it). Every page reads through
`scoped()`: `.restrict(user, "view")` narrowed to the current tenant, so another tenant's
object is a 404 exactly as in the API, and a write needs the action's permission (403 when the
user sees the object but may not change it). Nothing here decides who may do what: that stays
in hivemind.core.scoping.
"""

from __future__ import annotations

from django.core.exceptions import PermissionDenied
from django.db.models import Model, QuerySet
from django.http import Http404, HttpRequest

from hivemind.core.scoping import is_platform_staff, may_in_tenant, tenant_permission_for
from tenants.models import Membership, Tenant

SESSION_KEY = "hivemind.tenant"
_CACHE = "_hivemind_tenant"


def tenant_choices(user) -> QuerySet[Tenant]:
    """The tenants the switcher offers: those the user's roles show (platform staff: all)."""
    return Tenant.objects.restrict(user, "view").order_by("slug")


def current_tenant(request: HttpRequest) -> Tenant | None:
    """The tenant the session acts in. A slug the user may no longer see (membership removed,
    tenant deleted) falls back to their first tenant, as does a fresh session."""
    if hasattr(request, _CACHE):
        return getattr(request, _CACHE)
    tenant = None
    if request.user.is_authenticated:
        choices = tenant_choices(request.user)
        slug = request.session.get(SESSION_KEY)
        if slug:
            tenant = choices.filter(slug=slug).first()
        if tenant is None:
            member_of = Membership.objects.filter(user=request.user).values("tenant_id")
            tenant = choices.filter(pk__in=member_of).first() or choices.first()
            if tenant is not None:
                request.session[SESSION_KEY] = tenant.slug
    setattr(request, _CACHE, tenant)
    return tenant


def tenant_switch(request: HttpRequest, slug: str) -> Tenant:
    """Make `slug` the session's tenant; one the user may not see does not exist for them (404)."""
    tenant = tenant_choices(request.user).filter(slug=slug).first()
    if tenant is None:
        raise Http404(f"no tenant {slug!r} (or you may not see it)")
    request.session[SESSION_KEY] = tenant.slug
    setattr(request, _CACHE, tenant)
    return tenant


def scoped(request: HttpRequest, queryset: QuerySet) -> QuerySet:
    """`queryset` as the user may see it, in the current tenant only (nothing without one)."""
    tenant = current_tenant(request)
    visible = queryset.restrict(request.user, "view")
    return visible.filter(tenant=tenant) if tenant is not None else visible.none()


def get_scoped(request: HttpRequest, queryset: QuerySet, **lookup) -> Model:
    """One object the user may see in the current tenant, else 404 (never a 403 that confirms it exists)."""
    obj = scoped(request, queryset).filter(**lookup).first()
    if obj is None:
        raise Http404(f"no {queryset.model._meta.verbose_name} here (or you may not see it)")
    return obj


def may(user, obj: Model, action: str) -> bool:
    """Whether `user` may do `action` (change, delete) to `obj`: the API's rule for writes."""
    return type(obj).objects.restrict(user, action).filter(pk=obj.pk).exists()


def require(request: HttpRequest, obj: Model, action: str) -> None:
    if not may(request.user, obj, action):
        raise PermissionDenied(f"you may not {action} this {obj._meta.verbose_name}")


def may_add(user, model: type[Model], tenant: Tenant | None) -> bool:
    if tenant is None:
        return False
    return may_in_tenant(user, tenant_permission_for(model, "add"), tenant)


def require_add(request: HttpRequest, model: type[Model]) -> Tenant:
    tenant = current_tenant(request)
    if not may_add(request.user, model, tenant):
        where = f" in tenant {tenant.slug}" if tenant else ""
        raise PermissionDenied(f"you may not add a {model._meta.verbose_name}{where}")
    return tenant


def require_staff(request: HttpRequest) -> None:
    if not is_platform_staff(request.user):
        raise PermissionDenied("only platform staff may change nodes")
