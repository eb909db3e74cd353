from __future__ import annotations

from django.db.models import Count, OuterRef, Subquery
from django.db.models.functions import Coalesce
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import exceptions, status
from rest_framework.decorators import action
from rest_framework.response import Response

from hivemind.applications import services
from hivemind.applications.api import serializers as s
from hivemind.applications.filtersets import AppFilterSet, ContainerFilterSet
from hivemind.applications.logs import app_logs, app_stats
from hivemind.applications.models import App, Container
from hivemind.core.api import TenantScopedViewSet


def _started(workflow, extra: dict | None = None) -> Response:
    body = {"workflow": workflow.pk, "url": f"/api/v1/workflows/{workflow.pk}/", **(extra or {})}
    return Response(body, status=status.HTTP_202_ACCEPTED)


class AppViewSet(TenantScopedViewSet):
    """Containerised applications. Every change answers 202 with the workflow that makes it
    so (follow it at /api/v1/workflows/{id}/, or `hivemind workflow watch`)."""

    queryset = App.objects.all()
    serializer_class = s.AppSerializer
    filterset_class = AppFilterSet
    http_method_names = ["get", "post", "patch", "delete", "head", "options"]

    def get_queryset(self):
        # `running` is a subquery per row, not a JOIN + GROUP BY: grouped, PostgreSQL had to
        # aggregate every visible app before LIMIT could take a page (50 ms for a page of
        # 10,000 apps, bench/api.py), and count() joined the containers too. Now the page
        # walks the (tenant, name) index and count() reads the apps alone.
        running = Container.objects.filter(app=OuterRef("pk"), state=Container.State.RUNNING).order_by()
        queryset = (
            super()
            .get_queryset()
            .annotate(
                running=Coalesce(Subquery(running.values("app").annotate(n=Count("id")).values("n")[:1]), 0),
                **s.AppSerializer.annotations(),
            )
            .order_by("tenant_id", "name")
        )
        if self.action == "list":
            # A row of the list reads three values of its tenant and revision: the columns, not a
            # Tenant and an AppRevision (with its whole spec decoded) per app. Half the page's CPU.
            return queryset
        return queryset.select_related("tenant", "revision")

    def get_serializer_class(self):
        if self.action in ("retrieve", "partial_update"):
            return s.AppDetailSerializer
        return s.AppSerializer

    def create(self, request, *args, **kwargs):
        """Deploy a new app: validates the spec, holds its quota and starts the deploy workflow (202)."""
        serializer = self.get_serializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        self._check_add(data["tenant"])
        app = services.app_deploy(
            tenant=data["tenant"],
            name=data["name"],
            spec=data["spec"],
            replicas=data.get("replicas", 1),
            service_name=data.get("service_name", ""),
            actor=request.user,
        )
        app.running = 0
        s.AppSerializer.annotate(app)
        return Response(s.AppSerializer(app, context=self.get_serializer_context()).data, status=202)

    @extend_schema(request=s.UpdateSerializer, responses={202: s.WorkflowStartedSerializer})
    def partial_update(self, request, *args, **kwargs):
        """A new revision of the spec, rolled out without dropping below replicas - max_unavailable."""
        app = self.get_object()
        serializer = s.UpdateSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        workflow = services.app_update(
            app=app, spec=serializer.validated_data["spec"], change=serializer.validated_data.get("change", ""),
            actor=request.user,
        )  # fmt: skip
        return _started(workflow)

    def update(self, request, *args, **kwargs):
        raise exceptions.MethodNotAllowed("PUT", detail="use PATCH with {spec} to roll out a new revision")

    @extend_schema(request=None, responses={202: s.WorkflowStartedSerializer})
    def destroy(self, request, *args, **kwargs):
        """Delete the app: its containers stop, then it goes and its quota is released (202)."""
        return _started(services.app_delete(app=self.get_object(), actor=request.user))

    @extend_schema(request=s.ScaleSerializer, responses={202: s.WorkflowStartedSerializer})
    @action(detail=True, methods=["post"], permission_action="change")
    def scale(self, request, pk=None):
        app = self.get_object()  # 404 before any 400: another tenant's app does not exist for the caller
        serializer = s.ScaleSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        return _started(services.app_scale(app=app, replicas=serializer.validated_data["replicas"], actor=request.user))

    @extend_schema(request=None, responses={202: s.WorkflowStartedSerializer})
    @action(detail=True, methods=["post"], permission_action="change")
    def restart(self, request, pk=None):
        return _started(services.app_restart(app=self.get_object(), actor=request.user))

    @extend_schema(request=s.RollbackSerializer, responses={202: s.WorkflowStartedSerializer})
    @action(detail=True, methods=["post"], permission_action="change")
    def rollback(self, request, pk=None):
        app = self.get_object()
        serializer = s.RollbackSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        workflow = services.app_rollback(
            app=app, actor=request.user, revision=serializer.validated_data.get("revision")
        )
        return _started(workflow)

    @extend_schema(responses=s.AppRevisionSerializer(many=True))
    # Every revision, unpaginated and unfiltered: the app list's limit/offset/filters are not
    # parameters here (documented, they would be silently ignored).
    @action(detail=True, methods=["get"], permission_action="view", filter_backends=[], pagination_class=None)
    def revisions(self, request, pk=None):
        app = self.get_object()
        return Response(s.AppRevisionSerializer(app.revisions.order_by("-number"), many=True).data)

    @extend_schema(
        parameters=[s.LogsQuerySerializer],
        responses={200: s.AppLogsSerializer, 503: OpenApiResponse(description="the broker does not answer")},
    )
    @action(detail=True, methods=["get"], permission_action="view")
    def logs(self, request, pk=None):
        """The last `tail` lines of every replica, merged in time order and prefixed `[<app>-<replica>]`.

        Each node's agent reads its own Docker; one that does not answer within 10 s gets an
        entry in `containers` with the reason instead of lines."""
        app = self.get_object()
        query = s.LogsQuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        return Response(app_logs(app=app, **query.validated_data))

    @extend_schema(
        responses={200: s.AppStatsSerializer, 503: OpenApiResponse(description="the broker does not answer")}
    )
    @action(detail=True, methods=["get"], permission_action="view")
    def stats(self, request, pk=None):
        """CPU, memory and network figures of every replica (Docker's one-shot stats, read by its node)."""
        return Response(app_stats(app=self.get_object()))


class ContainerViewSet(TenantScopedViewSet):
    """Replicas as their nodes report them (read-only)."""

    queryset = Container.objects.select_related("tenant", "app", "revision", "node")
    serializer_class = s.ContainerSerializer
    filterset_class = ContainerFilterSet
    http_method_names = ["get", "head", "options"]
