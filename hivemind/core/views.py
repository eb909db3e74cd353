from django.http import HttpRequest, JsonResponse
from drf_spectacular.utils import OpenApiResponse, extend_schema, inline_serializer
from rest_framework import serializers
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from hivemind.core.health import platform_health
from hivemind.dashboard import views as dashboard_views

_part = inline_serializer(
    "HealthPart",
    {
        "status": serializers.ChoiceField(choices=["up", "down"]),
        "error": serializers.CharField(required=False),
        "latency_ms": serializers.FloatField(),
    },
)
_health = inline_serializer(
    "Health",
    {
        "status": serializers.ChoiceField(choices=["up", "down"]),
        "down": serializers.ListField(child=serializers.CharField(), help_text="Parts that are down."),
        "database": _part,
        "broker": _part,
        "docker": serializers.DictField(child=_part, help_text="Docker reachability per node."),
        "processes": serializers.DictField(
            child=inline_serializer(
                "HealthProcess",
                {
                    "state": serializers.ChoiceField(choices=["running", "restarting", "crash-looping", "stopped"]),
                    "pid": serializers.IntegerField(allow_null=True),
                    "restarts": serializers.IntegerField(),
                    "last_exit_code": serializers.IntegerField(
                        allow_null=True, help_text="Negative: killed by that signal."
                    ),
                    "last_exit_at": serializers.DateTimeField(allow_null=True),
                    "since": serializers.DateTimeField(allow_null=True, help_text="When the current state began."),
                },
            ),
            required=False,
            help_text="Under `manage.py up`: the processes it supervises on the web's machine. "
            "A crash-looping one is down (`process:<name>`).",
        ),
    },
)


class HealthView(APIView):
    """Is the platform up? 200 when the database, the broker and every node's Docker answer, else 503."""

    permission_classes = [AllowAny]
    authentication_classes: list = []

    @extend_schema(
        operation_id="health",
        responses={200: _health, 503: OpenApiResponse(_health, description="At least one part is down.")},
    )
    def get(self, request: Request | HttpRequest) -> Response:
        body = platform_health()
        return Response(body, status=200 if body["status"] == "up" else 503)


# --- Errors Django answers itself (no view matched, or a view outside DRF failed) -----------
# Under /api/ they are JSON with a `code`, like every error of the API; elsewhere the
# dashboard's pages.

_API_ERRORS = {
    400: ("bad request", "parse_error"),
    403: ("you may not do this", "permission_denied"),
    404: ("not found", "not_found"),
    500: ("internal error; it was logged", "server_error"),
}


def _is_api(request: HttpRequest) -> bool:
    return request.path.startswith("/api/")


def _api_error(status: int) -> JsonResponse:
    detail, code = _API_ERRORS[status]
    return JsonResponse({"detail": detail, "code": code}, status=status)


def bad_request(request: HttpRequest, exception: Exception | None = None):
    return _api_error(400) if _is_api(request) else dashboard_views.bad_request(request, exception)


def forbidden(request: HttpRequest, exception: Exception | None = None):
    return _api_error(403) if _is_api(request) else dashboard_views.forbidden(request, exception)


def not_found(request: HttpRequest, exception: Exception | None = None):
    return _api_error(404) if _is_api(request) else dashboard_views.not_found(request, exception)


def server_error(request: HttpRequest):
    return _api_error(500) if _is_api(request) else dashboard_views.server_error(request)
