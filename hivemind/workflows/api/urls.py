from rest_framework.routers import SimpleRouter

from hivemind.workflows.api import views

router = SimpleRouter()
router.register("workflows", views.WorkflowViewSet, basename="workflow")

urlpatterns = router.urls
