from rest_framework.routers import SimpleRouter

from alerting.api import views

router = SimpleRouter()
router.register("alert-rules", views.AlertRuleViewSet, basename="alert-rule")
router.register("silences", views.SilenceViewSet, basename="silence")
router.register("alerts", views.AlertViewSet, basename="alert")

urlpatterns = router.urls
