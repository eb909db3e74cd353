from django.apps import AppConfig


class StorageConfig(AppConfig):
    name = "storage"

    def ready(self) -> None:
        from storage import replication_steps, steps  # noqa: F401 - register the storage workflows and steps
