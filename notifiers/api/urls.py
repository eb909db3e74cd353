from rest_framework.routers import SimpleRouter

from notifiers.api import views

router = SimpleRouter()
router.register("notifiers", views.NotifierViewSet, basename="notifier")

urlpatterns = router.urls
