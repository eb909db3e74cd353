from django.apps import AppConfig


class StorageConfig(AppConfig):
    name = "storage"

    def ready(self) -> None:
        from observability import registry as metrics_registry
        from storage import replication_steps, steps  # noqa: F401 - register the storage workflows and steps
        from storage.metrics import StorageCollector

        metrics_registry.register(StorageCollector())  # pools, volumes, snapshots, replication lag
