from __future__ import annotations

from datetime import timedelta

from django.db.models import Q
from django.utils import timezone
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import exceptions, mixins, status, viewsets
from rest_framework.decorators import action
from rest_framework.permissions import AllowAny, IsAuthenticated
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from hivemind.core.api import StaffOnlyMixin, TenantScopedViewSet
from hivemind.core.scoping import is_platform_staff, tenants_for
from tenants import selectors, services
from tenants.api import serializers as s
from tenants.api.throttles import LoginAddressThrottle, LoginUsernameThrottle
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


class LoginView(APIView):
    """Trade a user name and password for a new API token (what `hivemind login` does).

    Needs no token. Every failure answers the same 401, whichever part was wrong. Limited per
    client address and per user name (429 with Retry-After); every attempt is audited."""

    authentication_classes: list = []
    permission_classes = [AllowAny]
    throttle_classes = [LoginAddressThrottle, LoginUsernameThrottle]

    def get_authenticate_header(self, request: Request) -> str:
        return 'Bearer realm="hivemind"'

    @extend_schema(
        request=s.LoginSerializer,
        responses={
            201: s.LoginResultSerializer,
            400: OpenApiResponse(description="A field is missing, malformed or unknown; the answer names it."),
            401: OpenApiResponse(s.AuthErrorSerializer, description="`wrong user name or password`, whatever it was."),
            429: OpenApiResponse(s.AuthErrorSerializer, description="Too many attempts; see `Retry-After`."),
            503: OpenApiResponse(s.AuthErrorSerializer, description="The rate limiter's store (Redis) is down."),
        },
    )
    def post(self, request: Request) -> Response:
        serializer = s.LoginSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        token, plain = services.login_token_create(
            username=data["username"],
            password=data["password"],
            token_name=data["name"],
            expires_in_days=data["expires_in_days"],
            address=request.META.get("REMOTE_ADDR", ""),
        )
        body = {
            "token": plain,
            "id": token.pk,
            "name": token.name,
            "expires_at": token.expires_at,
            "username": token.user.get_username(),
            "is_staff": is_platform_staff(token.user),
        }
        return Response(s.LoginResultSerializer(body).data, status=status.HTTP_201_CREATED)


class UserViewSet(
    StaffOnlyMixin,
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    mixins.CreateModelMixin,
    mixins.UpdateModelMixin,
    viewsets.GenericViewSet,
):
    """People's accounts (service accounts are under /service-accounts/). Platform staff only:
    others get 403 on the list and on create, and 404 for any one user, so a name is never
    confirmed to exist. Users are deactivated, never deleted: their audit trail keeps its actor."""

    serializer_class = s.UserSerializer
    queryset = selectors.people()
    lookup_field = "username"
    lookup_value_regex = r"[\w.@+-]+"
    http_method_names = ["get", "post", "patch", "head", "options"]

    def get_queryset(self):
        active = self.request.query_params.get("is_active")
        flag = {"true": True, "false": False}.get((active or "").lower())
        if active is not None and flag is None:
            raise exceptions.ValidationError({"is_active": "expected true or false"})
        return selectors.people(search=self.request.query_params.get("search", ""), active=flag).prefetch_related(
            "memberships__tenant"
        )

    def get_serializer_class(self):
        if self.action == "create":
            return s.UserCreateSerializer
        return super().get_serializer_class()

    staff_only_noun = "users"

    @extend_schema(
        parameters=[
            OpenApiParameter("search", str, description="Part of the user name or e-mail address."),
            OpenApiParameter("is_active", bool, description="Only active (true) or deactivated (false) users."),
        ]
    )
    def list(self, request, *args, **kwargs):
        return super().list(request, *args, **kwargs)

    def perform_create(self, serializer):
        data = serializer.validated_data
        user, generated = services.user_create(
            username=data["username"],
            password=data.get("password"),
            email=data.get("email", ""),
            first_name=data.get("first_name", ""),
            last_name=data.get("last_name", ""),
            is_staff=data.get("is_staff", False),
            actor=self.request.user,
        )
        user.generated_password = generated
        serializer.instance = user

    def perform_update(self, serializer):
        serializer.instance = services.user_update(
            user=serializer.instance, actor=self.request.user, **serializer.validated_data
        )

    @extend_schema(
        request=None,
        responses={200: s.UserSerializer, 409: OpenApiResponse(s.AuthErrorSerializer, description="Yourself.")},
    )
    @action(detail=True, methods=["post"])
    def deactivate(self, request: Request, username: str) -> Response:
        """Refuse the user's logins; their tokens and sessions stop working at once."""
        user = services.user_deactivate(user=self.get_object(), actor=request.user)
        return Response(s.UserSerializer(user, context=self.get_serializer_context()).data)

    @extend_schema(request=None, responses=s.UserSerializer)
    @action(detail=True, methods=["post"])
    def activate(self, request: Request, username: str) -> Response:
        """Let a deactivated user in again (their unexpired, unrevoked tokens work again)."""
        user = services.user_activate(user=self.get_object(), actor=request.user)
        return Response(s.UserSerializer(user, context=self.get_serializer_context()).data)

    @extend_schema(request=s.UserPasswordSerializer, responses=s.UserPasswordResultSerializer)
    @action(detail=True, methods=["post"], url_path="password", url_name="password")
    def password(self, request: Request, username: str) -> Response:
        """Set a new password, or leave `password` out to have one generated (shown once)."""
        user = self.get_object()
        serializer = s.UserPasswordSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        generated = services.user_set_password(
            user=user, password=serializer.validated_data.get("password"), actor=request.user
        )
        return Response({"username": user.get_username(), "generated_password": generated})
