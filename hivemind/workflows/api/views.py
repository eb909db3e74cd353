from __future__ import annotations

from django.core.exceptions import ValidationError as DjangoValidationError
from drf_spectacular.utils import extend_schema
from rest_framework import exceptions, status
from rest_framework.decorators import action
from rest_framework.response import Response

from hivemind.core.api import TENANT_HEADER, TenantScopedViewSet, request_tenant
from hivemind.core.scoping import is_platform_staff
from hivemind.workflows import engine, registry, selectors
from hivemind.workflows.api import serializers as s
from hivemind.workflows.filtersets import WorkflowFilterSet
from hivemind.workflows.models import Workflow


class WorkflowViewSet(TenantScopedViewSet):
    """Long operations and their steps. Workflows are started by the resources they work on
    (deploys, snapshots, backups); platform staff may also start `noop` workflows here.
    Operators and above cancel and retry."""

    queryset = Workflow.objects.all()
    serializer_class = s.WorkflowSerializer
    filterset_class = WorkflowFilterSet
    http_method_names = ["get", "post", "head", "options"]

    def get_queryset(self):
        return selectors.workflows_with_progress(super().get_queryset())

    def get_serializer_class(self):
        if self.action == "list":
            return s.WorkflowSerializer
        if self.action == "create":
            return s.WorkflowCreateSerializer
        return s.WorkflowDetailSerializer

    def _detail(self, workflow: Workflow, code: int = status.HTTP_200_OK) -> Response:
        fresh = self.get_queryset().get(pk=workflow.pk)
        return Response(s.WorkflowDetailSerializer(fresh, context=self.get_serializer_context()).data, status=code)

    @extend_schema(request=s.WorkflowCreateSerializer, responses={201: s.WorkflowDetailSerializer})
    def create(self, request, *args, **kwargs):
        """Start a workflow of a kind that may be started directly (noop: platform staff only)."""
        serializer = s.WorkflowCreateSerializer(data=request.data, context=self.get_serializer_context())
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        try:
            kind = registry.get_kind(data["kind"])
        except DjangoValidationError as exc:
            raise exceptions.ValidationError(exc.message_dict) from None
        if not kind.staff_only:
            raise exceptions.ValidationError(
                {"kind": f"{kind.name} workflows are started by the resource they work on, not here"}
            )
        if not is_platform_staff(request.user):
            raise exceptions.PermissionDenied(f"only platform staff may start {kind.name} workflows")
        tenant = data.get("tenant") or request_tenant(request)
        if tenant is None:
            raise exceptions.ValidationError(
                {"tenant": f"required: name the tenant, or send the {TENANT_HEADER} header"}
            )
        workflow = engine.workflow_create(kind=kind.name, tenant=tenant, params=data["params"], actor=request.user)
        return self._detail(workflow, status.HTTP_201_CREATED)

    @extend_schema(request=None, responses={202: s.WorkflowDetailSerializer})
    @action(detail=True, methods=["post"], permission_action="change")
    def cancel(self, request, pk=None):
        """Cancel: a pending workflow at once; a running one after its current step, then it compensates."""
        workflow = engine.workflow_cancel(workflow=self.get_object(), actor=request.user)
        return self._detail(workflow, status.HTTP_202_ACCEPTED)

    @extend_schema(request=None, responses={202: s.WorkflowDetailSerializer})
    @action(detail=True, methods=["post"], permission_action="change")
    def retry(self, request, pk=None):
        """Run a failed workflow again from its failed step."""
        workflow = engine.workflow_retry(workflow=self.get_object(), actor=request.user)
        return self._detail(workflow, status.HTTP_202_ACCEPTED)
