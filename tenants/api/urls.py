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
router.register("users", views.UserViewSet, basename="user")

urlpatterns = [
    path("me/", views.MeView.as_view(), name="me"),
    path("auth/login/", views.LoginView.as_view(), name="auth-login"),
    *router.urls,
]
