from django.apps import AppConfig


class StorageConfig(AppConfig):
    name = "storage"

    def ready(self) -> None:
        from observability import engine
        from storage import replication_steps, steps  # noqa: F401 - register the storage workflows and steps
        from storage.metrics import StorageCollector

        engine.register(StorageCollector())  # pools' capacity, volumes' size and use, snapshots, replication lag
