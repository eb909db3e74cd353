from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from hivemind.core.metrics import metrics_view

urlpatterns = [
    path("", include("hivemind.dashboard.urls")),
    path("login/", auth_views.LoginView.as_view(template_name="dashboard/login.html"), name="login"),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("admin/", admin.site.urls),
    path("api/v1/", include(("hivemind.core.api_urls", "api"), namespace="api")),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="schema"), name="api-docs"),
    path("metrics", metrics_view, name="metrics"),
]

handler400 = "hivemind.core.views.bad_request"
handler403 = "hivemind.core.views.forbidden"
handler404 = "hivemind.core.views.not_found"
handler500 = "hivemind.core.views.server_error"
