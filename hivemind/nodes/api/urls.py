from rest_framework.routers import SimpleRouter

from hivemind.nodes.api import views

router = SimpleRouter()
router.register("nodes", views.NodeViewSet, basename="node")

urlpatterns = router.urls
