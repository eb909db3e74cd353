from rest_framework.routers import SimpleRouter

from storage.api import views

router = SimpleRouter()
router.register("volumes", views.VolumeViewSet, basename="volume")
router.register("snapshots", views.SnapshotViewSet, basename="snapshot")
router.register("storage-pools", views.StoragePoolViewSet, basename="storage-pool")

urlpatterns = router.urls
