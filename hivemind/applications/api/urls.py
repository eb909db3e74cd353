from rest_framework.routers import SimpleRouter

from hivemind.applications.api import views

router = SimpleRouter()
router.register("apps", views.AppViewSet, basename="app")
router.register("containers", views.ContainerViewSet, basename="container")

urlpatterns = router.urls
