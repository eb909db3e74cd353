from __future__ import annotations

from datetime import timedelta

from django.db.models import Q
from django.utils import timezone
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import exceptions, mixins, viewsets
from rest_framework.decorators import action
from rest_framework.permissions import IsAuthenticated
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from hivemind.core.api import TenantScopedViewSet
from hivemind.core.scoping import is_platform_staff, tenants_for
from tenants import selectors, services
from tenants.api import serializers as s
from tenants.filtersets import (
    AuditEventFilterSet,
    MembershipFilterSet,
    QuotaReservationFilterSet,
    ServiceAccountFilterSet,
    TenantFilterSet,
)
from tenants.models import ApiToken, AuditEvent, Membership, QuotaReservation, ServiceAccount, Tenant


class TenantViewSet(viewsets.ModelViewSet):
    """Tenants you belong to (all of them for platform staff). Creating, suspending and
    resuming tenants and setting quotas are platform staff's; owners delete, admins edit."""

    serializer_class = s.TenantSerializer
    filterset_class = TenantFilterSet
    lookup_field = "slug"
    lookup_value_regex = "[a-z0-9-]+"
    queryset = Tenant.objects.all()
    staff_actions = {"create", "suspend", "resume"}
    tenant_actions = {"update": "change", "partial_update": "change", "destroy": "delete"}

    def get_queryset(self):
        return Tenant.objects.restrict(self.request.user, "view")

    def initial(self, request, *args, **kwargs):
        super().initial(request, *args, **kwargs)
        if self.action == "create" and not is_platform_staff(request.user):
            raise exceptions.PermissionDenied("only platform staff may create tenants")

    def get_object(self):
        tenant = super().get_object()  # 404 unless the caller is a member (or staff)
        user = self.request.user
        if self.action in self.staff_actions and not is_platform_staff(user):
            raise exceptions.PermissionDenied(f"only platform staff may {self.action} a tenant")
        needed = self.tenant_actions.get(self.action)
        if self.action == "quota" and self.request.method != "GET":
            if not is_platform_staff(user):
                raise exceptions.PermissionDenied("only platform staff may change quotas")
        elif needed and not Tenant.objects.restrict(user, needed).filter(pk=tenant.pk).exists():
            raise exceptions.PermissionDenied(f"your role in {tenant.slug} may not {needed} it")
        return tenant

    def perform_create(self, serializer):
        data = serializer.validated_data
        serializer.instance = services.tenant_create(
            name=data["name"],
            slug=data["slug"],
            description=data.get("description", ""),
            isolation_level=data.get("isolation_level", Tenant.Isolation.SOFT),
            labels=data.get("labels"),
            created_by=self.request.user,
        )

    def perform_update(self, serializer):
        fields = {k: v for k, v in serializer.validated_data.items() if k != "slug"}
        serializer.instance = services.tenant_update(tenant=serializer.instance, actor=self.request.user, **fields)

    @extend_schema(
        parameters=[
            OpenApiParameter("confirm", str, required=True, description="The tenant's slug again, to confirm.")
        ],
        responses={204: None},
    )
    def destroy(self, request: Request, *args, **kwargs) -> Response:
        tenant = self.get_object()
        confirm = request.query_params.get("confirm") or (request.data or {}).get("confirm", "")
        services.tenant_delete(tenant=tenant, confirm=confirm, actor=request.user)
        return Response(status=204)

    @extend_schema(request=None, responses=s.TenantSerializer)
    @action(detail=True, methods=["post"])
    def suspend(self, request: Request, slug: str) -> Response:
        """Refuse new work in the tenant; everything it stores is kept."""
        tenant = services.tenant_suspend(tenant=self.get_object(), actor=request.user)
        return Response(self.get_serializer(tenant).data)

    @extend_schema(request=None, responses=s.TenantSerializer)
    @action(detail=True, methods=["post"])
    def resume(self, request: Request, slug: str) -> Response:
        tenant = services.tenant_resume(tenant=self.get_object(), actor=request.user)
        return Response(self.get_serializer(tenant).data)

    @extend_schema(responses=s.UsageSerializer)
    @action(detail=True, methods=["get"])
    def usage(self, request: Request, slug: str) -> Response:
        """What the tenant uses against each quota limit; warning at 80 %."""
        return Response(selectors.tenant_usage(tenant=self.get_object()))

    @extend_schema(methods=["GET"], responses=s.UsageSerializer)
    @extend_schema(methods=["PUT"], request=s.QuotaSerializer, responses=s.UsageSerializer)
    @action(detail=True, methods=["get", "put"], serializer_class=s.QuotaSerializer)
    def quota(self, request: Request, slug: str) -> Response:
        """Read the quota with its usage; platform staff set limits (null removes one)."""
        tenant = self.get_object()
        if request.method == "PUT":
            serializer = s.QuotaSerializer(data=request.data)
            serializer.is_valid(raise_exception=True)
            services.quota_set(tenant=tenant, limits=serializer.validated_data, actor=request.user)
        return Response(selectors.tenant_usage(tenant=tenant))


class MembershipViewSet(TenantScopedViewSet):
    """Who belongs to which tenant with which role. Members see the list; admins and owners manage it."""

    queryset = Membership.objects.select_related("tenant", "user")
    serializer_class = s.MembershipSerializer
    filterset_class = MembershipFilterSet
    http_method_names = ["get", "post", "patch", "delete", "head", "options"]

    def create_object(self, serializer):
        data = serializer.validated_data
        return services.membership_add(
            tenant=data["tenant"], user=data["user"], role=data["role"], actor=self.request.user
        )

    def update_object(self, serializer):
        role = serializer.validated_data.get("role", serializer.instance.role)
        return services.membership_change_role(membership=serializer.instance, role=role, actor=self.request.user)

    def delete_object(self, instance) -> None:
        services.membership_remove(membership=instance, actor=self.request.user)


class ServiceAccountViewSet(TenantScopedViewSet):
    """Non-human members of a tenant for automation; they authenticate with tokens."""

    queryset = ServiceAccount.objects.select_related("tenant", "user")
    serializer_class = s.ServiceAccountSerializer
    filterset_class = ServiceAccountFilterSet
    http_method_names = ["get", "post", "delete", "head", "options"]

    def create_object(self, serializer):
        data = serializer.validated_data
        return services.service_account_create(
            tenant=data["tenant"],
            name=data["name"],
            role=data["role"],
            description=data.get("description", ""),
            actor=self.request.user,
        )

    def delete_object(self, instance) -> None:
        services.service_account_delete(account=instance, actor=self.request.user)


class ApiTokenViewSet(
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    mixins.CreateModelMixin,
    mixins.DestroyModelMixin,
    viewsets.GenericViewSet,
):
    """Your API tokens, and those of the service accounts of tenants you manage. DELETE revokes."""

    serializer_class = s.ApiTokenSerializer
    queryset = ApiToken.objects.all()

    def get_queryset(self):
        user = self.request.user
        managed = tenants_for(user, "tenants.manage_members")
        accounts = ServiceAccount.objects.filter(tenant__in=managed).values("user")
        return ApiToken.objects.select_related("user").filter(Q(user=user) | Q(user__in=accounts))

    def perform_create(self, serializer):
        data = serializer.validated_data
        owner = self.request.user
        account = data.get("service_account")
        if account is not None:  # the field only accepts accounts of tenants the caller manages
            owner = account.user
        expires_at = data.get("expires_at")
        if data.get("expires_in_days"):
            expires_at = timezone.now() + timedelta(days=data["expires_in_days"])
        token, plain = services.api_token_create(
            user=owner, name=data["name"], expires_at=expires_at, actor=self.request.user
        )
        token.token = plain
        serializer.instance = token

    def perform_destroy(self, instance):
        services.api_token_revoke(token=instance, actor=self.request.user)


class QuotaReservationViewSet(TenantScopedViewSet):
    """Capacity held against a tenant's quota. Creating one checks and reserves atomically;
    deleting it releases the capacity."""

    queryset = QuotaReservation.objects.select_related("tenant")
    serializer_class = s.QuotaReservationSerializer
    filterset_class = QuotaReservationFilterSet
    http_method_names = ["get", "post", "delete", "head", "options"]

    def create_object(self, serializer):
        data = serializer.validated_data
        reservation, warnings = services.quota_reserve(
            tenant=data["tenant"], amounts=data["amounts"], reason=data.get("reason", ""), actor=self.request.user
        )
        reservation.warnings = warnings
        return reservation

    def delete_object(self, instance) -> None:
        services.quota_release(reservation=instance, actor=self.request.user)


class AuditEventViewSet(TenantScopedViewSet):
    """Who did what to which object, per tenant; readable by the tenant's admins and owners."""

    queryset = AuditEvent.objects.all()
    serializer_class = s.AuditEventSerializer
    filterset_class = AuditEventFilterSet
    http_method_names = ["get", "head", "options"]


class MeView(APIView):
    permission_classes = [IsAuthenticated]

    @extend_schema(responses=s.MeSerializer)
    def get(self, request: Request) -> Response:
        """Who the token or session belongs to, and their tenants and roles."""
        user = request.user
        memberships = Membership.objects.filter(user=user).select_related("tenant").order_by("tenant__slug")
        return Response(
            {
                "username": user.get_username(),
                "is_staff": is_platform_staff(user),
                "memberships": [{"tenant": m.tenant.slug, "role": m.role} for m in memberships],
            }
        )
