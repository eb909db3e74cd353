from django.apps import AppConfig


class StorageConfig(AppConfig):
    name = "storage"

    def ready(self) -> None:
        from storage import steps  # noqa: F401 - registers the storage workflows and steps
