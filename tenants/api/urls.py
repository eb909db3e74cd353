from django.urls import path
from rest_framework.routers import SimpleRouter

from tenants.api import views

router = SimpleRouter()
router.register("tenants", views.TenantViewSet, basename="tenant")
router.register("memberships", views.MembershipViewSet, basename="membership")
router.register("service-accounts", views.ServiceAccountViewSet, basename="serviceaccount")
router.register("tokens", views.ApiTokenViewSet, basename="apitoken")
router.register("reservations", views.QuotaReservationViewSet, basename="quotareservation")
router.register("audit-log", views.AuditEventViewSet, basename="auditevent")

urlpatterns = [path("me/", views.MeView.as_view(), name="me"), *router.urls]
