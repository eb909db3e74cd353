from django.urls import path

from observability.api import views

urlpatterns = [path("metrics/", views.TenantMetricsView.as_view(), name="metrics")]
