from rest_framework.routers import SimpleRouter

from backups.api import views

router = SimpleRouter()
router.register("backup-locations", views.BackupLocationViewSet, basename="backup-location")

urlpatterns = router.urls
