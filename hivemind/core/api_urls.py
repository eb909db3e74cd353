"""Routes under /api/v1/. Each package adds its own api/urls.py here."""

from django.urls import include, path

from hivemind.core.views import HealthView

urlpatterns = [
    path("health/", HealthView.as_view(), name="health"),
    path("", include("tenants.api.urls")),
    path("", include("hivemind.workflows.api.urls")),
    path("", include("hivemind.nodes.api.urls")),
    path("", include("hivemind.applications.api.urls")),
    path("", include("networking.api.urls")),
    path("", include("storage.api.urls")),
    path("", include("notifiers.api.urls")),
    path("", include("backups.api.urls")),
    path("", include("observability.api.urls")),
    path("", include("alerting.api.urls")),
]
