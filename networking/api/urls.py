from rest_framework.routers import SimpleRouter

from networking.api import views

router = SimpleRouter()
router.register("networks", views.NetworkViewSet, basename="network")
router.register("network-policies", views.NetworkPolicyViewSet, basename="network-policy")
router.register("ip-pools", views.IPPoolViewSet, basename="ip-pool")

urlpatterns = router.urls
