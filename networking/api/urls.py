from rest_framework.routers import SimpleRouter

from networking.api import views

router = SimpleRouter()
router.register("networks", views.NetworkViewSet, basename="network")
router.register("ip-pools", views.IPPoolViewSet, basename="ip-pool")

urlpatterns = router.urls
