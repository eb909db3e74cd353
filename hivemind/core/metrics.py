"""Prometheus metrics: HTTP requests of the web process, workflow metrics of the workers, process metrics.

The route label is the URL pattern written as a template (``/api/v1/workflows/{id}/``, as
in the OpenAPI schema), never the raw path, so the number of series stays bounded whatever
clients request.
"""

from __future__ import annotations

import functools
import os
import re
import time

from django.contrib.admindocs.views import simplify_regex
from django.http import HttpRequest, HttpResponse
from drf_spectacular.utils import extend_schema
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    GCCollector,
    Histogram,
    ProcessCollector,
    generate_latest,
    multiprocess,
)
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.views import APIView

from hivemind.core.processes import ProcessStateCollector
from hivemind.core.scoping import is_platform_staff
from observability import registry as metrics_registry

HTTP_REQUESTS = Counter(
    "hivemind_http_requests_total",
    "HTTP requests answered, by method, route and status code.",
    ["method", "route", "status"],
)
HTTP_LATENCY = Histogram(
    "hivemind_http_request_duration_seconds",
    "Time to answer an HTTP request, by method and route.",
    ["method", "route"],
)
_METHODS = {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"}


_PARAMETER = re.compile(r"<(?:\w+:)?(\w+)>")


@functools.lru_cache(maxsize=1024)  # one entry per URL pattern: bounded by the URLconf
def route_template(route: str) -> str:
    """`api/v1/workflows/(?P<pk>[^/.]+)/$` or `api/v1/tenants/<slug:slug>/` as a template:
    `/api/v1/workflows/{id}/`, `/api/v1/tenants/{slug}/` (`pk` is `id`, as in the schema)."""
    simple = simplify_regex(route).replace("\\.", ".")  # groups -> <name>, anchors dropped

    def parameter(match: re.Match) -> str:
        name = match.group(1)
        return "{id}" if name == "pk" else "{" + name + "}"

    return _PARAMETER.sub(parameter, simple)


def _route(request: HttpRequest) -> str:
    match = getattr(request, "resolver_match", None)
    if match is None:
        return "<unmatched>"
    if match.route:
        return route_template(match.route)
    return match.view_name or "<unnamed>"


class PrometheusMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        start = time.perf_counter()
        response = self.get_response(request)
        method = request.method if request.method in _METHODS else "OTHER"
        route = _route(request)
        HTTP_LATENCY.labels(method, route).observe(time.perf_counter() - start)
        HTTP_REQUESTS.labels(method, route, str(response.status_code)).inc()
        return response


def _registry():
    """This process's metrics, or, under `manage.py up` (PROMETHEUS_MULTIPROC_DIR set), every
    platform process's: web, controller and agent workers write their samples to files there."""
    if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        return REGISTRY
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry)
    ProcessCollector(registry=registry)  # the web process's own CPU and memory
    GCCollector(registry=registry)  # and its garbage collector
    registry.register(ProcessStateCollector())  # restarts of the processes `manage.py up` supervises
    return registry


class MetricsView(APIView):
    """/metrics. Anyone reaching it reads the processes' own metrics (HTTP routes as templates,
    workflow kinds and steps, process CPU and memory, the supervisor's restarts: nothing of a
    tenant's); platform staff (a staff user's token, or a staff session) also read the metrics
    engine's collectors (observability/registry.py: nodes, containers, apps' health, networks,
    storage, as the agents reported them), which name tenants, apps and volumes. A tenant reads
    its own series at /api/v1/metrics/. A bad token is a 401, never a silent anonymous answer."""

    permission_classes = [AllowAny]

    @extend_schema(exclude=True)  # Prometheus's format, not the API's
    def get(self, request: Request) -> HttpResponse:
        body = generate_latest(_registry())
        if is_platform_staff(request.user):
            body += metrics_registry.render(metrics_registry.families())
        return HttpResponse(body, content_type=CONTENT_TYPE_LATEST)


metrics_view = MetricsView.as_view()
