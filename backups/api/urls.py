from rest_framework.routers import SimpleRouter

from backups.api import policies, restores, runs, views

router = SimpleRouter()
router.register("backup-locations", views.BackupLocationViewSet, basename="backup-location")
router.register("platform-backup-locations", views.PlatformBackupLocationViewSet, basename="platform-backup-location")
router.register("backup-policies", policies.BackupPolicyViewSet, basename="backup-policy")
router.register("backups", runs.BackupViewSet, basename="backup")
router.register("restores", restores.RestoreViewSet, basename="restore")

urlpatterns = router.urls
