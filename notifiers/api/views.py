from __future__ import annotations

from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import exceptions, status
from rest_framework.decorators import action
from rest_framework.response import Response

from hivemind.core.api import TenantScopedViewSet
from notifiers import registry, selectors, services
from notifiers.api import serializers as s
from notifiers.filtersets import DeliveryFilterSet, NotifierFilterSet
from notifiers.models import Delivery, Notifier
from notifiers.registry import DeliveryError


class PeerError(exceptions.APIException):
    """The notifier's peer answered the test with an error of its own (its answer is the detail)."""

    status_code = status.HTTP_502_BAD_GATEWAY
    default_code = "notifier_error"


class NotifierViewSet(TenantScopedViewSet):
    """Where a tenant's alerts are delivered: a webhook (signed JSON), email (SMTP), a
    Slack-compatible webhook or a Prometheus Alertmanager. Secrets are write-only: answers say
    which are set (`secrets_set`), never their values."""

    queryset = Notifier.objects.select_related("tenant")
    serializer_class = s.NotifierSerializer
    filterset_class = NotifierFilterSet
    http_method_names = ["get", "post", "patch", "delete", "head", "options"]

    def create_object(self, serializer):
        data = serializer.validated_data
        return services.notifier_create(
            tenant=data["tenant"], name=data["name"], kind=data["kind"], config=data.get("config") or {},
            secrets=data.get("secrets") or {}, actor=self.request.user,
        )  # fmt: skip

    def update_object(self, serializer):
        data = serializer.validated_data
        return services.notifier_update(
            notifier=serializer.instance, actor=self.request.user, name=data.get("name"),
            config=data.get("config"), secrets=data.get("secrets"),
        )  # fmt: skip

    def delete_object(self, instance) -> None:
        services.notifier_delete(notifier=instance, actor=self.request.user)

    @extend_schema(request=None, responses={200: s.TestResultSerializer})
    @action(detail=True, methods=["post"], permission_action="change")
    def test(self, request, pk=None):
        """Send a test notification now (within HIVEMIND_NOTIFIER_TIMEOUT): 200 with the peer's answer;
        400 naming the setting when it cannot be reached or refuses the credentials; 502 with the
        peer's own error answer."""
        notifier = self.get_object()
        try:
            answer = services.notifier_test(notifier=notifier, actor=request.user)
        except DeliveryError as exc:
            if exc.setting is None:
                raise PeerError(exc.message) from None
            setting = registry.get(notifier.kind).setting(exc.setting)
            where = "secrets" if setting is not None and setting.secret else "config"
            raise exceptions.ValidationError({where: {exc.setting: [exc.message]}}) from None
        return Response({"ok": True, "answer": answer})

    @extend_schema(
        request=None, responses={200: s.DeliverySerializer(many=True)},
        parameters=[
            OpenApiParameter("state", enum=Delivery.State.values, description="Only deliveries in this state."),
            OpenApiParameter("status", enum=Delivery.Status.values, description="Only firing or resolved ones."),
        ],
    )  # fmt: skip
    @action(detail=True, methods=["get"], permission_action="view")
    def deliveries(self, request, pk=None):
        """The notifier's deliveries, newest first: state, attempts, the last error (the peer's answer)."""
        notifier = self.get_object()
        queryset = DeliveryFilterSet(request.query_params, queryset=selectors.deliveries(notifier), request=request)
        if not queryset.is_valid():
            raise exceptions.ValidationError(queryset.errors)
        page = self.paginate_queryset(queryset.qs)
        return self.get_paginated_response(s.DeliverySerializer(page, many=True).data)
