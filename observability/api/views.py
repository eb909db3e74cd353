"""/api/v1/metrics/: a tenant's own series in Prometheus's text format, for the tenant's own
Prometheus (a service account's token as its bearer token). Only series labelled with the
tenant's slug: another tenant's figures and the platform's (nodes, processes) never appear."""

from __future__ import annotations

from django.http import Http404, HttpResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from prometheus_client import CONTENT_TYPE_LATEST
from rest_framework.exceptions import ValidationError
from rest_framework.permissions import IsAuthenticated
from rest_framework.request import Request
from rest_framework.views import APIView

from hivemind.core.scoping import tenants_for
from observability import registry


class TenantMetricsView(APIView):
    permission_classes = [IsAuthenticated]

    @extend_schema(
        parameters=[
            OpenApiParameter(
                "tenant", str, description="the tenant's slug; needed when the caller sees more than one tenant"
            )
        ],
        responses={
            (200, "text/plain"): OpenApiResponse(OpenApiTypes.STR, description="Prometheus text exposition format"),
            400: OpenApiResponse(description="several tenants visible and none named"),
            404: OpenApiResponse(description="no such tenant among the caller's"),
        },
    )
    def get(self, request: Request) -> HttpResponse:
        """A tenant's series of every collector (apps, containers, networks, volumes, workflows)
        in Prometheus's text format: what `hivemind observability prometheus-config --tenant`
        points a tenant's own Prometheus at."""
        visible = tenants_for(request.user, "tenants.view_resources")
        slug = request.query_params.get("tenant")
        if slug is None:
            slugs = list(visible.values_list("slug", flat=True)[:2])
            if len(slugs) != 1:
                raise ValidationError(
                    {"tenant": "name the tenant (?tenant=SLUG): the caller sees "
                     + ("no tenant" if not slugs else "more than one")}
                )  # fmt: skip
            slug = slugs[0]
        elif not visible.filter(slug=slug).exists():
            raise Http404("no such tenant")
        return HttpResponse(registry.render(registry.families(tenant=slug)), content_type=CONTENT_TYPE_LATEST)
