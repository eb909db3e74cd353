"""API bases every resource uses: token authentication, tenant context, the scoped viewset.

No view checks permissions by hand. `TenantScopedViewSet` narrows its queryset with
`.restrict(user, "view")` before anything else runs, so an object outside the caller's
scope is a 404 for reads and actions alike. Writes need the action's permission (403
when the caller can see the object but not change it) and are re-checked inside the
transaction: the object is saved, read back through the restricted queryset, and the
transaction rolls back if the caller could not see what they just wrote.
"""

from __future__ import annotations

from collections.abc import Mapping

from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.core.exceptions import ValidationError as DjangoValidationError
from django.db import DataError, transaction
from django.http import Http404
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema_field
from rest_framework import exceptions, serializers, viewsets
from rest_framework.views import exception_handler as drf_exception_handler

from hivemind.core import limits
from hivemind.core.logs import note_tenant
from hivemind.core.scoping import (
    DEFAULT_TENANT_PERMISSIONS,
    is_platform_staff,
    may_in_tenant,
    tenant_permission_for,
    tenants_for,
)

TENANT_HEADER = "X-Hivemind-Tenant"


def exception_handler(exc, context):
    """DRF's handler, plus: Django ValidationErrors from services become 400s naming the field,
    and every `detail` answer carries its machine-readable `code` (404s of object lookups too)."""
    if isinstance(exc, DataError | OverflowError):
        # Input the database cannot store (a NUL character, a value out of its range) that
        # slipped past validation: the transaction has rolled back; a 400, never a 500.
        exc = exceptions.ValidationError({"detail": "a value is out of range or has characters that cannot be stored"})
    if isinstance(exc, DjangoValidationError):
        detail = exc.message_dict if hasattr(exc, "error_dict") else {"detail": exc.messages}
        exc = exceptions.ValidationError(detail)
    if isinstance(exc, Http404):  # get_object_or_404 and friends: DRF would answer without a code
        exc = exceptions.NotFound()
    if isinstance(exc, DjangoPermissionDenied):
        exc = exceptions.PermissionDenied(str(exc) or None)
    response = drf_exception_handler(exc, context)
    if response is not None and isinstance(response.data, dict) and "detail" in response.data:
        code = error_code(exc) if isinstance(exc, exceptions.APIException) else None
        if code:
            response.data["code"] = code
    return response


def error_code(exc: exceptions.APIException) -> str | None:
    """The one code of an error answered as `{"detail": ...}`: a plain code, or the first of `detail`'s."""
    codes = exc.get_codes()
    if isinstance(codes, dict):
        codes = codes.get("detail")
    if isinstance(codes, list):
        codes = codes[0] if codes else None
    return codes if isinstance(codes, str) else None


def request_tenant(request):
    """The tenant the request acts in (X-Hivemind-Tenant), or None. Unknown or unseen -> 404."""
    from tenants.models import Tenant

    slug = request.headers.get(TENANT_HEADER)
    if not slug:
        return None
    tenant = Tenant.objects.restrict(request.user, "view").filter(slug=slug).first()
    if tenant is None:
        raise exceptions.NotFound(f"tenant {slug!r} not found")
    note_tenant(tenant)  # on the request's log lines and span
    return tenant


class StaffOnlyMixin:
    """For platform resources only staff may touch (users, IP pools, storage pools): anyone else
    gets 403 on the list and on create, and for any one object the 404 a name that does not
    exist gets (nothing confirms it exists). Set `staff_only_noun` ("storage pools")."""

    staff_only_noun: str = "these"

    def initial(self, request, *args, **kwargs):
        super().initial(request, *args, **kwargs)  # 401 without a valid token or session
        if not is_platform_staff(request.user):
            if self.action in ("list", "create"):
                raise exceptions.PermissionDenied(f"only platform staff may list or create {self.staff_only_noun}")
            raise exceptions.NotFound()


class StrictFieldsMixin:
    """A field the serializer does not take is a 400 naming it, instead of being dropped unseen;
    and every text field is bounded and free of control characters (core/limits.py): its own
    max_length or MAX_FREE_TEXT (MAX_PASSWORD for passwords), tab and newlines only where the
    text may span lines (a description, a password)."""

    def to_internal_value(self, data):
        if isinstance(data, Mapping):
            writable = sorted(name for name, field in self.fields.items() if not field.read_only)
            unknown = sorted(set(data) - set(writable))
            if unknown:
                expected = ", ".join(writable)
                raise serializers.ValidationError({name: [f"unknown field; expected {expected}"] for name in unknown})
            errors = {}
            for name, value in data.items():
                field = self.fields[name]
                if isinstance(field, serializers.CharField) and isinstance(value, str):
                    try:
                        check_text_field(name, field, value)
                    except DjangoValidationError as exc:
                        errors.update(exc.message_dict)
            if errors:
                raise serializers.ValidationError(errors)
        return super().to_internal_value(data)


def check_text_field(name: str, field: serializers.CharField, value: str) -> None:
    """Control characters and, for a field without a max_length of its own, the shared length
    limit (a field with one keeps DRF's own message for it)."""
    if field.max_length is not None and len(value) > field.max_length:
        return
    password = field.style.get("input_type") == "password"
    multiline = password or field.style.get("base_template") == "textarea.html"
    maximum = field.max_length or (limits.MAX_PASSWORD if password else limits.MAX_FREE_TEXT)
    limits.check_text(name, value, maximum, multiline=multiline)


@extend_schema_field(OpenApiTypes.STR)
class TenantField(serializers.SlugRelatedField):
    """A tenant by slug, chosen among the tenants the caller can see (others look absent)."""

    default_error_messages = {
        "does_not_exist": "no tenant {slug_name}={value} (or you may not see it)",
        "invalid": "expected a tenant slug",
    }

    def __init__(self, **kwargs):
        kwargs.setdefault("slug_field", "slug")
        super().__init__(**kwargs)

    def get_queryset(self):
        from tenants.models import Tenant

        request = self.context.get("request")
        return Tenant.objects.restrict(request.user if request else None, "view")

    def get_attribute(self, instance):
        # A list's queryset may annotate the slug (`tenant_slug`): no Tenant row per object.
        slug = getattr(instance, "tenant_slug", None)
        return slug if slug is not None else super().get_attribute(instance)

    def to_representation(self, value):
        return value if isinstance(value, str) else super().to_representation(value)


class TenantOwnedSerializer(StrictFieldsMixin, serializers.ModelSerializer):
    """Takes the tenant from the `tenant` field or, when absent, from the request's tenant context."""

    tenant = TenantField(required=False)

    def validate(self, attrs):
        attrs = super().validate(attrs)
        if self.instance is None and "tenant" not in attrs:
            tenant = request_tenant(self.context["request"])
            if tenant is None:
                raise serializers.ValidationError(
                    {"tenant": f"required: name the tenant, or send the {TENANT_HEADER} header"}
                )
            attrs["tenant"] = tenant
        elif self.instance is not None and "tenant" in attrs and attrs["tenant"] != self.instance.tenant:
            raise serializers.ValidationError({"tenant": "an object cannot move to another tenant"})
        return attrs


class TenantScopedViewSet(viewsets.ModelViewSet):
    """The one base for every tenant-owned resource. Subclasses write through services:
    override `create_object`, `update_object` and `delete_object`."""

    # DRF action -> permission action; custom @action methods declare theirs with
    # `@action(..., permission_action="view")` (default: change).
    permission_actions = {
        "list": "view",
        "retrieve": "view",
        "create": "add",
        "update": "change",
        "partial_update": "change",
        "destroy": "delete",
    }

    # Set per custom action through its initkwargs: @action(..., permission_action="view").
    permission_action: str | None = None

    def required_action(self) -> str:
        return self.permission_actions.get(self.action) or self.permission_action or "change"

    def get_queryset(self):
        queryset = super().get_queryset().restrict(self.request.user, "view")
        tenant = request_tenant(self.request)
        if tenant is not None:
            queryset = queryset.filter(tenant=tenant)
        return queryset

    def list(self, request, *args, **kwargs):
        self._check_list()
        return super().list(request, *args, **kwargs)

    def _check_list(self) -> None:
        """A kind of resource that needs more than membership to see (the audit log: admins)
        answers 403 to a member whose role may not see it, rather than an empty page that
        looks as if there were nothing; a tenant they cannot see at all stays a 404."""
        model = self.queryset.model
        permission = tenant_permission_for(model, "view")
        user = self.request.user
        if permission == DEFAULT_TENANT_PERMISSIONS["view"] or is_platform_staff(user):
            return
        tenant = request_tenant(self.request)
        allowed = tenants_for(user, permission)
        if tenant is not None:
            allowed = allowed.filter(pk=tenant.pk)
        if allowed.exists() or self.get_queryset().exists():  # a role, or grants on single objects
            return
        where = f" in tenant {tenant.slug}" if tenant is not None else ""
        raise exceptions.PermissionDenied(f"your role may not see {model._meta.verbose_name_plural}{where}")

    def get_object(self):
        obj = super().get_object()  # 404 unless the caller may see it
        action = self.required_action()
        if action != "view" and not self._permitted(obj, action):
            raise exceptions.PermissionDenied(f"you may not {action} this {obj._meta.verbose_name}")
        return obj

    def _permitted(self, obj, action: str) -> bool:
        return self.queryset.model.objects.restrict(self.request.user, action).filter(pk=obj.pk).exists()

    def _check_add(self, tenant) -> None:
        permission = tenant_permission_for(self.queryset.model, "add")
        if not may_in_tenant(self.request.user, permission, tenant):
            raise exceptions.PermissionDenied(
                f"you may not add a {self.queryset.model._meta.verbose_name} in tenant {tenant.slug}"
            )

    def _recheck(self, obj) -> None:
        if not self.queryset.model.objects.restrict(self.request.user, "view").filter(pk=obj.pk).exists():
            raise exceptions.PermissionDenied("the result would be outside what you may see")

    def perform_create(self, serializer) -> None:
        self._check_add(serializer.validated_data["tenant"])
        with transaction.atomic():
            serializer.instance = self.create_object(serializer)
            self._recheck(serializer.instance)

    def perform_update(self, serializer) -> None:
        with transaction.atomic():
            serializer.instance = self.update_object(serializer)
            self._recheck(serializer.instance)

    def perform_destroy(self, instance) -> None:
        with transaction.atomic():
            self.delete_object(instance)

    def create_object(self, serializer):
        return serializer.save()

    def update_object(self, serializer):
        return serializer.save()

    def delete_object(self, instance) -> None:
        instance.delete()
